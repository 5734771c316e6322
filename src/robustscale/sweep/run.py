"""Running a sweep: :func:`sweep` ties spec, executor and progress view together; :func:`plan_runs` is its dry run.

Every executor calls :func:`robustscale.sweep.worker.run_one` on each run folder, which is safe to call on any run
folder at any time, from any number of processes or machines (see :mod:`robustscale.sweep.worker`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from robustscale.accounting.budget import plan
from robustscale.config import config_to_dict, pgd_eval_step_size
from robustscale.enums import ExecutorKind, Status, Tracker
from robustscale.errors import ParameterError
from robustscale.store.record import RECORD, RunRecord, read_record
from robustscale.store.rundir import DEFAULT_STALE_S, claim_is_live, write_json_exclusive
from robustscale.store.safe_paths import run_folder
from robustscale.sweep.executors import make_executor
from robustscale.sweep.progress import SweepProgress
from robustscale.sweep.spec import SweepSpec, expand_runs, load_spec, run_output
from robustscale.sweep.worker import (ATTEMPTS, ERROR_LOG, RUN_FILES, RunJob, nothing_to_do, outcome,
                                      refuse_other_synthetic_data, run_one)
from robustscale.tracking import require_installed
from robustscale.training.optim import effective_lr

__all__ = ["sweep", "plan_runs", "run_one", "RunJob", "SweepProgress", "ATTEMPTS", "ERROR_LOG"]


def plan_runs(spec_path: str | Path, *, gpu: str = "h100", nodes: int | None = None,
              procs_per_node: int | None = None) -> dict[str, Any]:
    """The dry run: every run of the spec with its resolved config, the epochs it trains (cool-down included), its
    global batch and peak lr, planned FLOPs (``planned_flops``: training and PGD validation, from the budget planner,
    over all ``epochs``), and the time they take on the run's GPUs: ``gpus`` (nodes x procs per node, one per DDP
    process), ``planned_wall_hours`` and ``planned_gpu_hours`` on ``gpu`` (the budget's model: peak x utilisation,
    time divided over the GPUs, GPU-hours not)."""
    spec = load_spec(spec_path)
    layout = spec.layout(nodes, procs_per_node)
    runs, gpu_name, wall_assumption = [], gpu, ""
    for run in expand_runs(spec):
        cfg, planned = run.config, plan(run.config, gpu=gpu, gpus=layout.world_size)
        gpu_name, wall_assumption = planned["gpu"], planned["assumptions"]["wall_hours"]
        runs.append({"run_id": run.run_id, "config": config_to_dict(cfg),
                     "epochs": cfg.train.epochs, "cooldown_epochs": cfg.train.cooldown_epochs,
                     "batch_size": cfg.data.batch_size, "lr": effective_lr(cfg.train, cfg.data.batch_size),
                     "pgd40_step_size": pgd_eval_step_size(cfg),
                     "optimizer_steps": planned["optimizer_steps"], "planned_train_flops": float(planned["train_flops"]),
                     "planned_flops": float(planned["total_flops"]), "gpus": layout.world_size,
                     "planned_wall_hours": planned["wall_hours"], "planned_gpu_hours": planned["gpu_hours"]})
    return {"runs": runs, "total_planned_flops": sum(r["planned_flops"] for r in runs),
            "total_planned_gpu_hours": sum(r["planned_gpu_hours"] for r in runs),
            "total_planned_wall_hours": sum(r["planned_wall_hours"] for r in runs),
            "gpu": gpu_name, "gpus_per_run": layout.world_size,
            "ddp": {"nodes": layout.nodes, "procs_per_node": layout.procs_per_node},
            "assumptions": {"planned_wall_hours": wall_assumption,
                            "total_planned_wall_hours": "the runs one after another (divide by the runs that train "
                                                        "at once)"}}


def _prepare(spec: SweepSpec, out: Path,
             trackers: Sequence[Tracker] | None = None) -> list[tuple[Path, dict[str, Any]]]:
    """Expand the spec and give every run a folder with a pending record (never overwriting an existing one). A
    tracker the runs ask for that is not installed is refused first, before anything is written."""
    runs = [(run, run_output(run, out, spec, trackers)) for run in expand_runs(spec)]
    require_installed(Tracker(t) for _, config in runs for t in config["output"]["trackers"])
    if out.exists() and not out.is_dir():
        raise ParameterError(f"out '{out}' is a file: pass a folder for the run folders", "out")
    prepared = []
    for run, config in runs:
        run_dir = run_folder(out, run.run_id, RUN_FILES)
        run_dir.mkdir(parents=True, exist_ok=True)
        write_json_exclusive(run_dir / RECORD, RunRecord.new(config).to_dict())
        prepared.append((run_dir, config))
    return prepared


def _select(prepared, retry_failed: bool, stale_s: float):
    """Split runs into those to hand to the executor and those to leave (done, failed, claimed elsewhere)."""
    todo, left = [], []
    for run_dir, config in prepared:
        record = read_record(run_dir)
        if nothing_to_do(record, retry_failed):
            left.append(outcome(run_dir, "skipped", record))
        elif claim_is_live(run_dir, stale_s):
            left.append(outcome(run_dir, "busy", record))
        else:
            todo.append((run_dir, config))
    return todo, left


def _summary(out: Path, prepared, outcomes: Sequence[dict[str, Any]]) -> dict[str, Any]:
    records = {run_dir.name: read_record(run_dir) for run_dir, _ in prepared}
    by_status = {s.value: [rid for rid, r in records.items() if r is not None and r.status is s] for s in Status}
    acted = {o["run_id"]: o["action"] for o in outcomes}
    return {
        "out": str(out), "runs": len(prepared), "done": by_status["done"], "failed": by_status["failed"],
        "running": by_status["running"], "pending": by_status["pending"],
        "trained": [rid for rid, a in acted.items() if a == "trained"],
        "skipped": [rid for rid, a in acted.items() if a in ("skipped", "busy", "lost")],
        "busy": [rid for rid, a in acted.items() if a == "busy"],
        "lost": [rid for rid, a in acted.items() if a == "lost"],
        "submitted": [rid for rid, a in acted.items() if a == "submitted"],
        "reasons": {rid: records[rid].reason for rid in by_status["failed"]},
        "errors": {o["run_id"]: o["reason"] for o in outcomes if o["action"] == "crashed"},
    }


def sweep(spec_path: str | Path, out: str | Path | None = None, executor: ExecutorKind | str = ExecutorKind.local,
          workers: int | None = None,
          retry_failed: bool = False, dry_run: bool = False, *, stale_s: float | None = None,
          slurm: dict[str, Any] | None = None, wait: bool = True, progress: bool = False,
          nodes: int | None = None, procs_per_node: int | None = None, gpu: str = "h100",
          trackers: Sequence[Tracker] | None = None) -> dict[str, Any]:
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
        nodes, procs_per_node: every run as a DDP job of nodes x procs_per_node processes (over the spec's ``ddp``).
        gpu: the GPU the dry run plans time on (the budget's table).
        trackers: log every run to these experiment trackers (over its config's ``output.trackers``); a sweep's
            tracker runs are grouped under its name and named by run id (:func:`robustscale.sweep.spec.run_output`).

    Returns:
        Lists of run ids: ``done``, ``failed``, ``running``, ``pending`` (the state at the end), ``trained`` (by this
        call), ``skipped`` (done, failed without ``retry_failed``, or ``busy``: claimed by another worker).
    """
    if dry_run:
        return plan_runs(spec_path, gpu=gpu, nodes=nodes, procs_per_node=procs_per_node)
    spec = load_spec(spec_path)
    out = Path(out) if out is not None else spec.out or Path("runs") / spec.name
    runner = make_executor(executor, workers=workers if workers is not None else spec.workers or 1,
                           folder=out / ".submitit", slurm={**spec.slurm, **(slurm or {})}, wait=wait,
                           ddp=spec.layout(nodes, procs_per_node))
    prepared = _prepare(spec, out, trackers)
    refuse_other_synthetic_data(out, prepared)
    stale_s = float(stale_s or spec.stale_after_s or DEFAULT_STALE_S)
    todo, left = _select(prepared, retry_failed, stale_s)
    with SweepProgress([run_dir for run_dir, _ in prepared], enabled=progress):
        outcomes = runner.run(todo, retry_failed=retry_failed, stale_s=stale_s) if todo else []
    summary = _summary(out, prepared, [*left, *outcomes])
    summary["executor"] = runner.describe()
    return summary
