"""Running a sweep: every executor calls :func:`run_one` on each run folder; :func:`sweep` ties spec, executor and
progress view together.

``run_one`` is safe to call on any run folder at any time, from any number of processes or machines: it trains only
while it holds the run's claim, skips runs already done, resumes interrupted ones from their checkpoint, and turns a
crash of training into a ``failed`` record with a one-line reason (the traceback goes to ``error.log``). Every start
of training appends one line to ``attempts.jsonl``, so "trained exactly once" can be checked after the fact. While it
trains, every write into the run folder is fenced by the claim (:mod:`robustscale.store.fence`): a worker paused past
the stale time, whose claim another worker took over, stops before its next write (outcome ``lost``). Run folders are
plain names under ``--out`` and never symbolic links, nor are the logs appended to there.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any, Sequence

from robustscale.errors import UserError
from robustscale.store.atomic import append_line
from robustscale.store.fence import WriteFenced, fence
from robustscale.store.record import RECORD, Status, failed_record, new_record, now, read_record, write_record
from robustscale.store.rundir import CLAIM, DEFAULT_STALE_S, LOCK, acquire_claim, claim_is_live, write_json_exclusive
from robustscale.store.safe_paths import check_run_folder, run_folder

__all__ = ["run_one", "RunJob", "sweep", "plan_runs", "SweepProgress", "ATTEMPTS", "ERROR_LOG"]

log = logging.getLogger(__name__)

ATTEMPTS = "attempts.jsonl"  # one line per start of training in this folder
ERROR_LOG = "error.log"  # tracebacks of failed attempts
# what is appended to or opened in place in a run folder (a link there would redirect the write); "eval" is a folder
RUN_FILES = (RECORD, ATTEMPTS, ERROR_LOG, "metrics.jsonl", CLAIM, LOCK, "eval")


# ---------------------------------------------------------------------------------------------- one run


def _outcome(run_dir: Path, action: str, record: dict[str, Any] | None) -> dict[str, Any]:
    record = record or {}
    return {"run_id": run_dir.name, "action": action, "status": record.get("status", Status.pending.value),
            "reason": record.get("reason")}


def _nothing_to_do(record: dict[str, Any] | None, retry_failed: bool) -> bool:
    status = (record or {}).get("status")
    return status == Status.done.value or (status == Status.failed.value and not retry_failed)


def _failure(run_dir: Path, config: dict[str, Any], err: BaseException) -> dict[str, Any]:
    message = str(err).strip().splitlines()[0] if str(err).strip() else ""
    reason = message if isinstance(err, UserError) else f"{type(err).__name__}: {message}".rstrip(": ")
    stamp = f"--- {now()} {socket.gethostname()} pid {os.getpid()}\n"
    append_line(run_dir / ERROR_LOG, stamp + "".join(traceback.format_exception(err)))
    record = failed_record(config, f"{reason} (traceback in {ERROR_LOG})", read_record(run_dir))
    write_record(run_dir, record)
    return record


def _train(run_dir: Path, config: dict[str, Any], token: str) -> dict[str, Any]:
    from robustscale.config import config_from_dict
    from robustscale.training import train
    from robustscale.training.checkpoint import CHECKPOINT

    resume = (run_dir / CHECKPOINT).is_file()
    append_line(run_dir / ATTEMPTS, json.dumps({"started": now(), "host": socket.gethostname(), "pid": os.getpid(),
                                                "resume": resume, "claim": token}))
    try:
        return train(config_from_dict(config), run_dir, resume=resume, progress=False)
    except WriteFenced:  # the claim is lost: another worker owns the folder now, write nothing more
        raise
    except Exception as err:  # a failed run is a result; the sweep goes on
        log.warning("run %s failed: %s", run_dir.name, err)
        return _failure(run_dir, config, err)


def run_one(run_dir: str | Path, config: dict[str, Any], retry_failed: bool = False, *,
            stale_s: float = DEFAULT_STALE_S) -> dict[str, Any]:
    """Bring one run to an end state unless it is already there or another worker is on it.

    Args:
        run_dir: the run's folder (``OUT/<run_id>``), created if needed.
        config: the resolved config as a plain dict (``config_to_dict``).
        retry_failed: train a run whose record says failed (resuming from its last checkpoint).
        stale_s: a claim whose heartbeat is older than this belongs to a dead worker and is taken over.

    Returns:
        ``{"run_id", "action": trained|skipped|busy|lost, "status", "reason"}`` (``lost``: paused past the stale
        time, this worker lost the claim to another and stopped before its next write).
    """
    run_dir = check_run_folder(run_dir, RUN_FILES)
    record = read_record(run_dir)
    if _nothing_to_do(record, retry_failed):
        return _outcome(run_dir, "skipped", record)
    run_dir.mkdir(parents=True, exist_ok=True)
    held = acquire_claim(run_dir, stale_s)
    if held is None:
        return _outcome(run_dir, "busy", read_record(run_dir))
    try:
        with fence(run_dir, held.holds, "claim"):
            record = read_record(run_dir)  # it may have finished while we were claiming it
            if _nothing_to_do(record, retry_failed):
                return _outcome(run_dir, "skipped", record)
            return _outcome(run_dir, "trained", _train(run_dir, config, held.token))
    except WriteFenced as err:
        log.warning("run %s: %s", run_dir.name, err)
        return {**_outcome(run_dir, "lost", read_record(run_dir)), "reason": str(err)}
    finally:  # also on SystemExit from a preemption signal: the requeued job reclaims at once
        held.release()


class RunJob:
    """``run_one`` as a submitit job that requeues itself when preempted or timed out.

    submitit calls ``checkpoint`` from its signal handler; the resubmitted call is the same ``run_one``, which resumes
    from the run's ``checkpoint.safetensors`` (training checkpoints every epoch, so nothing needs saving here).
    """

    def __init__(self, threads: int | None = None):
        self.threads = threads  # torch CPU threads (jobs sharing one machine, as with submitit's local executor)

    def __call__(self, run_dir: str, config: dict[str, Any], retry_failed: bool, stale_s: float) -> dict[str, Any]:
        if self.threads:
            import torch

            torch.set_num_threads(self.threads)
        return run_one(run_dir, config, retry_failed, stale_s=stale_s)

    def checkpoint(self, *args: Any, **kwargs: Any):
        from submitit.helpers import DelayedSubmission

        return DelayedSubmission(self, *args, **kwargs)


# ---------------------------------------------------------------------------------------------- the sweep


def plan_runs(spec_path: str | Path) -> dict[str, Any]:
    """The dry run: every run of the spec with its resolved config, the epochs it trains (cool-down included), its
    global batch and peak lr, and planned FLOPs (``planned_flops``: training and PGD validation, from the budget
    planner, over all ``epochs``)."""
    from robustscale.config import config_to_dict
    from robustscale.sweep.spec import expand_runs, load_spec

    try:
        from robustscale.accounting.budget import plan
    except ImportError as err:  # pragma: no cover - the planner ships with the package
        raise UserError(f"the budget planner is unavailable ({err}): reinstall robustscale") from None
    from robustscale.training.optim import effective_lr

    runs = []
    for run in expand_runs(load_spec(spec_path)):
        cfg, planned = run.config, plan(run.config)
        runs.append({"run_id": run.run_id, "config": config_to_dict(cfg),
                     "epochs": cfg.train.epochs, "cooldown_epochs": cfg.train.cooldown_epochs,
                     "batch_size": cfg.data.batch_size, "lr": effective_lr(cfg.train, cfg.data.batch_size),
                     "optimizer_steps": planned["optimizer_steps"], "planned_train_flops": float(planned["train_flops"]),
                     "planned_flops": float(planned["total_flops"])})
    return {"runs": runs, "total_planned_flops": sum(r["planned_flops"] for r in runs)}


def _prepare(spec, out: Path) -> list[tuple[Path, dict[str, Any]]]:
    """Expand the spec and give every run a folder with a pending record (never overwriting an existing one)."""
    from robustscale.config import config_to_dict
    from robustscale.sweep.spec import expand_runs

    runs = expand_runs(spec)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out '{out}' is a file: pass a folder for the run folders")
    prepared = []
    for run in runs:
        config = config_to_dict(run.config)
        config["output"]["dir"] = str(out)  # not part of the run id: where the runs of this sweep live
        run_dir = run_folder(out, run.run_id, RUN_FILES)
        run_dir.mkdir(parents=True, exist_ok=True)
        write_json_exclusive(run_dir / RECORD, new_record(config))
        prepared.append((run_dir, config))
    return prepared


def _select(prepared, retry_failed: bool, stale_s: float):
    """Split runs into those to hand to the executor and those to leave (done, failed, claimed elsewhere)."""
    todo, left = [], []
    for run_dir, config in prepared:
        record = read_record(run_dir)
        if _nothing_to_do(record, retry_failed):
            left.append(_outcome(run_dir, "skipped", record))
        elif claim_is_live(run_dir, stale_s):
            left.append(_outcome(run_dir, "busy", record))
        else:
            todo.append((run_dir, config))
    return todo, left


def _summary(out: Path, prepared, outcomes: Sequence[dict[str, Any]]) -> dict[str, Any]:
    records = {run_dir.name: read_record(run_dir) or {} for run_dir, _ in prepared}
    by_status = {s.value: [rid for rid, r in records.items() if r.get("status") == s.value] for s in Status}
    acted = {o["run_id"]: o["action"] for o in outcomes}
    return {
        "out": str(out), "runs": len(prepared), "done": by_status["done"], "failed": by_status["failed"],
        "running": by_status["running"], "pending": by_status["pending"],
        "trained": [rid for rid, a in acted.items() if a == "trained"],
        "skipped": [rid for rid, a in acted.items() if a in ("skipped", "busy", "lost")],
        "busy": [rid for rid, a in acted.items() if a == "busy"],
        "lost": [rid for rid, a in acted.items() if a == "lost"],
        "submitted": [rid for rid, a in acted.items() if a == "submitted"],
        "reasons": {rid: records[rid].get("reason") for rid in by_status["failed"]},
        "errors": {o["run_id"]: o["reason"] for o in outcomes if o["action"] == "crashed"},
    }


def sweep(spec_path: str | Path, out: str | Path | None = None, executor: str = "local", workers: int | None = None,
          retry_failed: bool = False, dry_run: bool = False, *, stale_s: float | None = None,
          slurm: dict[str, Any] | None = None, wait: bool = True, progress: bool = False) -> dict[str, Any]:
    """Run (or plan) every run of a sweep spec; safe to rerun and to run from several processes at once.

    Args:
        spec_path: the sweep spec (YAML).
        out: folder for the run folders (default: the spec's ``out``, else ``runs/<spec name>``).
        executor: ``local`` (in this process, or ``workers`` processes) or ``slurm`` (submitit).
        workers: parallel local workers (default: the spec's ``workers``, else 1).
        retry_failed: train runs whose record says failed again.
        dry_run: plan only; returns ``{"runs": [...], "total_planned_flops"}`` and touches nothing on disk.
        stale_s: heartbeat age after which a claim is taken over (default: the spec's, else 10 minutes).
        slurm: submitit options overriding the spec's ``slurm`` section (partition, account, gpus_per_node, ...).
        wait: for slurm, wait for the jobs (False: submit and return).
        progress: show the live progress view.

    Returns:
        Lists of run ids: ``done``, ``failed``, ``running``, ``pending`` (the state at the end), ``trained`` (by this
        call), ``skipped`` (done, failed without ``retry_failed``, or ``busy``: claimed by another worker).
    """
    if dry_run:
        return plan_runs(spec_path)
    from robustscale.sweep.executors import make_executor
    from robustscale.sweep.spec import load_spec

    spec = load_spec(spec_path)
    out = Path(out) if out is not None else spec.out or Path("runs") / spec.name
    runner = make_executor(executor, workers=workers if workers is not None else spec.workers or 1,
                           folder=out / ".submitit", slurm={**spec.slurm, **(slurm or {})}, wait=wait)
    prepared = _prepare(spec, out)
    stale_s = float(stale_s or spec.stale_after_s or DEFAULT_STALE_S)
    todo, left = _select(prepared, retry_failed, stale_s)
    with SweepProgress([run_dir for run_dir, _ in prepared], enabled=progress):
        outcomes = runner.run(todo, retry_failed=retry_failed, stale_s=stale_s) if todo else []
    summary = _summary(out, prepared, [*left, *outcomes])
    summary["executor"] = runner.describe()
    return summary


# ---------------------------------------------------------------------------------------------- progress


def _last_train_flops(run_dir: Path) -> float:
    """FLOPs so far of a running run: the last line of its metrics.jsonl (records are written at the end)."""
    try:
        with open(run_dir / "metrics.jsonl", "rb") as fh:
            fh.seek(max(0, fh.seek(0, os.SEEK_END) - 4096))
            last = fh.read().decode(errors="replace").strip().splitlines()[-1]
        return float(json.loads(last).get("train_flops") or 0.0)
    except (OSError, IndexError, ValueError, AttributeError):
        return 0.0


class SweepProgress:
    """A live view of a sweep (done / running / failed / pending, FLOPs and energy so far, ETA), polled from disk.

    It reads only the run folders, so it shows the work of every worker on them, local processes and Slurm jobs
    alike. On a terminal it is a live table; elsewhere (a CI log, ``nohup``, a Slurm output file) one plain line on
    stderr each time a run finishes. A no-op unless ``enabled``.
    """

    def __init__(self, run_dirs: Sequence[Path], enabled: bool = True, refresh_s: float = 1.0):
        self.run_dirs, self.refresh_s, self.enabled = list(run_dirs), refresh_s, enabled
        self._live = self._thread = None
        self._stop = threading.Event()
        self._t0 = time.monotonic()
        self._finished_at_start = 0

    def snapshot(self) -> dict[str, Any]:
        counts = {s.value: 0 for s in Status}
        flops = energy = 0.0
        for run_dir in self.run_dirs:
            record = read_record(run_dir) or {}
            status = record.get("status", Status.pending.value)
            counts[status] = counts.get(status, 0) + 1
            acc = record.get("accounting") or {}
            running = status == Status.running.value
            flops += _last_train_flops(run_dir) if running else float(acc.get("train_flops") or 0.0)
            energy += float(acc.get("energy_kwh") or 0.0)
        finished = counts["done"] + counts["failed"]
        remaining = len(self.run_dirs) - finished
        new = finished - self._finished_at_start
        elapsed = time.monotonic() - self._t0
        eta = elapsed / new * remaining if new > 0 else None
        return {**counts, "total": len(self.run_dirs), "train_flops": flops, "energy_kwh": energy,
                "elapsed_s": elapsed, "eta_s": eta}

    def _render(self):
        from rich.table import Table

        s = self.snapshot()
        table = Table(title=f"sweep: {s['total']} runs", show_header=True, header_style="bold")
        for column in ("done", "running", "failed", "pending", "FLOPs", "kWh", "elapsed", "ETA"):
            table.add_column(column, justify="right")
        eta = "-" if s["eta_s"] is None else _duration(s["eta_s"])
        table.add_row(f"[green]{s['done']}", f"[cyan]{s['running']}", f"[red]{s['failed']}", str(s["pending"]),
                      f"{s['train_flops']:.2e}", f"{s['energy_kwh']:.3g}", _duration(s["elapsed_s"]), eta)
        return table

    def line(self, s: dict[str, Any]) -> str:
        """The plain-text view: ``[0:02:10] 12/27 done, 2 running, 0 failed, 3.1e+12 FLOPs, ETA 0:02:40``."""
        eta = "-" if s["eta_s"] is None else _duration(s["eta_s"])
        return (f"[{_duration(s['elapsed_s'])}] {s['done']}/{s['total']} done, {s['running']} running, "
                f"{s['failed']} failed, {s['train_flops']:.2e} FLOPs, ETA {eta}")

    def _log_lines(self) -> None:
        last = None
        while not self._stop.wait(5 * self.refresh_s):
            s = self.snapshot()
            if (s["done"], s["failed"]) != last:
                last = (s["done"], s["failed"])
                print(self.line(s), file=sys.stderr, flush=True)

    def __enter__(self) -> "SweepProgress":
        if self.enabled:
            s = self.snapshot()
            self._finished_at_start = s["done"] + s["failed"]
            if sys.stdout.isatty():
                from rich.live import Live

                self._live = Live(get_renderable=self._render, refresh_per_second=1 / self.refresh_s)
                self._live.__enter__()
            else:
                self._thread = threading.Thread(target=self._log_lines, name="sweep-progress", daemon=True)
                self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if self._live is not None:
            self._live.__exit__(*exc)
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            print(self.line(self.snapshot()), file=sys.stderr, flush=True)


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    h, rem = divmod(seconds, 3600)
    return f"{h}:{rem // 60:02d}:{rem % 60:02d}"
