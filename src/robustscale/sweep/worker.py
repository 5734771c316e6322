"""One sweep worker's job: bring one run folder to an end state, safely, from any number of processes at once.

Every executor calls :func:`run_one` on each run folder (:class:`RunJob` wraps it for submitit). ``run_one`` trains
only while it holds the run's claim, skips runs already done, resumes interrupted ones from their checkpoint, and turns
a crash of training into a ``failed`` record with a one-line reason (the traceback goes to ``error.log``). Every start
of training appends one line to ``attempts.jsonl``, so "trained exactly once" can be checked after the fact. While it
trains, every write into the run folder is fenced by the claim (:mod:`robustscale.store.fence`): a worker paused past
the stale time, whose claim another worker took over, stops before its next write (outcome ``lost``). Run folders are
plain names under the sweep's output and never symbolic links, nor are the logs appended to there.

A run can be a DDP job (a spec's ``ddp`` section): then every rank calls ``run_one``, in a process group the
environment describes (torchrun's variables; :func:`robustscale.training.launch.launch` on one machine,
:class:`RunJob` from Slurm's tasks). Rank 0 alone decides, claims, heartbeats and writes; it tells the other ranks
what to do (a broadcast), and they train beside it. When a rank dies, whoever launched the group calls
:func:`fail_abandoned`, so the run ends ``failed`` (``--retry-failed`` resumes it), never ``running``.

Under submitit :class:`RunJob` also listens for the scheduler's preemption / time-limit signal: training stops at the
next step boundary with a checkpoint of that step (:mod:`robustscale.training.preemption`), the claim is parked for
the job's requeued incarnation, and submitit requeues the job, which resumes exactly where it stopped.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import threading
import time
import traceback
import zipfile
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Iterable

import submitit
import torch
from submitit.core.utils import UncompletedJobError
from submitit.helpers import DelayedSubmission, TorchDistributedEnvironment

import robustscale.training.preemption as preemption
from robustscale.data.synthetic import content_key
from robustscale.errors import UserError, shown
from robustscale.store.atomic import append_line
from robustscale.store.fence import WriteFenced, fence
from robustscale.store.record import RECORD, RunRecord, Status, failed_record, now, read_record, write_record
from robustscale.store.rundir import CLAIM, DEFAULT_STALE_S, LOCK, Claim, acquire_claim, current_job
from robustscale.store.safe_paths import check_run_folder
from robustscale.store.scheduler import slurm_job_end
from robustscale.training.checkpoint import CHECKPOINT, saved_step
from robustscale.training.distributed import DistInfo, broadcast_object, cleanup, gather_objects, init_distributed
from robustscale.training.loop import train
from robustscale.training.run_config import config_from_dict

__all__ = ["run_one", "RunJob", "outcome", "nothing_to_do", "refuse_other_synthetic_data", "fail_abandoned", "ATTEMPTS",
           "ERROR_LOG", "RUN_FILES"]

log = logging.getLogger(__name__)

ATTEMPTS = "attempts.jsonl"  # one line per start of training in this folder
ERROR_LOG = "error.log"  # tracebacks of failed attempts
# what is appended to or opened in place in a run folder (a link there would redirect the write); "eval" is a folder
RUN_FILES = (RECORD, ATTEMPTS, ERROR_LOG, "metrics.jsonl", CLAIM, LOCK, "eval")
CHECKPOINT_MARGIN_S = 30.0  # a Slurm job stops this long (and two of its slowest steps) before its time limit


def outcome(run_dir: Path, action: str, record: RunRecord | None) -> dict[str, Any]:
    """What a worker did with a run: ``{"run_id", "action", "status", "reason"}``."""
    return {"run_id": run_dir.name, "action": action,
            "status": (record.status if record else Status.pending).value, "reason": record.reason if record else None}


def nothing_to_do(record: RunRecord | None, retry_failed: bool) -> bool:
    """Whether a run is at an end state (done; failed, unless retrying)."""
    status = record.status if record else None
    return status is Status.done or (status is Status.failed and not retry_failed)


def refuse_other_synthetic_data(out: Path, runs: Iterable[tuple[Path, dict[str, Any]]]) -> None:
    """A run's id holds its ``data.synthetic.path``, not the file's content: a done run whose record names another
    content key (``synthetic_key``) than the file now at that path would be skipped as done, its numbers standing for
    data it never saw. The sweep stops first, with one line, before anything trains. ``runs``: each run's folder and
    resolved config. Records without a key (from robustscale before it was kept) and files that are gone or
    unreadable pass: nothing checks them here."""
    keys: dict[str, str | None] = {}
    changed: list[tuple[str, str]] = []
    for run_dir, config in runs:
        path = config["data"]["synthetic"]["path"]
        record = read_record(run_dir) if path is not None else None
        if record is None or record.status is not Status.done or not isinstance(record.synthetic_key, str):
            continue
        if path not in keys:
            try:
                keys[path] = content_key(Path(path))
            except (OSError, ValueError, zipfile.BadZipFile):  # gone or corrupt: training reports it, if it runs
                keys[path] = None
        if keys[path] is not None and keys[path] != record.synthetic_key:
            changed.append((run_dir.name, path))
    if changed:
        first, path = changed[0]
        raise UserError(f"{len(changed)} done run(s) in '{shown(out)}' trained on another file at data.synthetic.path "
                        f"'{shown(path)}' than the one there now (first: {first}): sweep into a new --out, or put "
                        "the file they trained on back")


def _stamp() -> str:
    return f"--- {now()} {socket.gethostname()} pid {os.getpid()}\n"


def _failure(run_dir: Path, config: dict[str, Any], err: BaseException) -> RunRecord:
    message = str(err).strip().splitlines()[0] if str(err).strip() else ""
    reason = message if isinstance(err, UserError) else f"{type(err).__name__}: {message}".rstrip(": ")
    append_line(run_dir / ERROR_LOG, _stamp() + "".join(traceback.format_exception(err)))
    record = failed_record(config, f"{reason} (traceback in {ERROR_LOG})", read_record(run_dir))
    write_record(run_dir, record)
    return record


def _log_attempt(run_dir: Path, plan: dict[str, Any], ranks: list[dict[str, Any]] | None) -> None:
    """One line in attempts.jsonl: when, where (the scheduler's job too, and torch's threads), from which step (a
    resume), under which claim, on which ranks."""
    line = {"started": now(), "host": socket.gethostname(), "pid": os.getpid(), "job": current_job(),
            "threads": torch.get_num_threads(), "resume": plan["resume"], "claim": plan["token"]}
    if plan["resume"]:
        line["from_step"] = saved_step(run_dir / CHECKPOINT)
    if ranks is not None:
        line["ranks"] = ranks
    append_line(run_dir / ATTEMPTS, json.dumps(line))


def _train(run_dir: Path, config: dict[str, Any], plan: dict[str, Any], dist: DistInfo) -> RunRecord | None:
    ranks = gather_objects({"host": socket.gethostname(), "pid": os.getpid(), "threads": torch.get_num_threads()}) \
        if dist.enabled else None
    if dist.is_main:
        _log_attempt(run_dir, plan, ranks)
    try:
        return train(config_from_dict(config), run_dir, resume=plan["resume"], progress=False)
    except (WriteFenced, preemption.Preempted):  # the claim is lost / the job is requeued: write nothing more
        raise
    except Exception as err:  # a failed run is a result; the sweep goes on
        if not dist.is_main:  # rank 0 writes the record; this rank's death is what its launcher reports
            raise
        log.warning("run %s failed: %s", run_dir.name, err)
        return _failure(run_dir, config, err)


def _decide(run_dir: Path, retry_failed: bool, stale_s: float) -> tuple[dict[str, Any], Claim | None]:
    """Rank 0's decision, as a plan every rank can follow: ``{"action": train|skipped|busy, "token", "resume"}``,
    and the claim it now holds (None unless training)."""
    if nothing_to_do(read_record(run_dir), retry_failed):
        return {"action": "skipped"}, None
    run_dir.mkdir(parents=True, exist_ok=True)
    held = acquire_claim(run_dir, stale_s)
    if held is None:
        return {"action": "busy"}, None
    if nothing_to_do(read_record(run_dir), retry_failed):  # it may have finished while we were claiming it
        held.release()
        return {"action": "skipped"}, None
    return {"action": "train", "token": held.token, "resume": (run_dir / CHECKPOINT).is_file()}, held


def _run(run_dir: Path, config: dict[str, Any], retry_failed: bool, stale_s: float, dist: DistInfo) -> dict[str, Any]:
    plan, held = _decide(run_dir, retry_failed, stale_s) if dist.is_main else (None, None)
    plan = broadcast_object(plan)
    if plan["action"] != "train":
        return outcome(run_dir, plan["action"], read_record(run_dir))
    claim = held or Claim(run_dir / CLAIM, plan["token"], heartbeat_s=0.0)  # other ranks: the fence only
    parked = False
    try:
        with fence(run_dir, claim.holds, "claim"):
            return outcome(run_dir, "trained", _train(run_dir, config, plan, dist))
    except WriteFenced as err:
        log.warning("run %s: %s", run_dir.name, err)
        return {**outcome(run_dir, "lost", read_record(run_dir)), "reason": str(err)}
    except preemption.Preempted:
        parked = True
        raise
    finally:  # released also on SystemExit from submitit's own requeue: the requeued job reclaims at once
        if held is not None and parked:
            held.park()
        elif held is not None:
            held.release()


def run_one(run_dir: str | Path, config: dict[str, Any], retry_failed: bool = False, *,
            stale_s: float = DEFAULT_STALE_S) -> dict[str, Any]:
    """Bring one run to an end state unless it is already there or another worker is on it.

    Under DDP every rank of the run calls it (the environment describes the group, as torchrun's does); rank 0 claims
    and writes, and its return value is the one that counts.

    Args:
        run_dir: the run's folder (``OUT/<run_id>``), created if needed.
        config: the resolved config as a plain dict (``config_to_dict``).
        retry_failed: train a run whose record says failed (resuming from its last checkpoint).
        stale_s: a claim whose heartbeat is older than this belongs to a dead worker and is taken over.

    Returns:
        ``{"run_id", "action": trained|skipped|busy|lost, "status", "reason"}`` (``lost``: paused past the stale
        time, this worker lost the claim to another and stopped before its next write).

    Raises:
        Preempted: the scheduler asked the job to stop (only under :class:`RunJob`); the step it stopped at is
            checkpointed and the claim parked for the requeued job.
    """
    run_dir = check_run_folder(run_dir, RUN_FILES)
    dist = init_distributed()
    try:
        return _run(run_dir, config, retry_failed, stale_s, dist)
    finally:
        if dist.owns_group:
            cleanup()


def fail_abandoned(run_dir: str | Path, reason: str, *, stale_s: float = DEFAULT_STALE_S,
                   ended_job: str | None = None, reword_failed: bool = False) -> RunRecord | None:
    """A run whose processes died (a rank killed, a node lost, a job out of requeues) without writing its end: when
    its record still says ``running`` and nobody live holds it, mark it ``failed`` with ``reason`` (and log it), so
    it is never left ``running``; ``--retry-failed`` resumes it from its checkpoint. A record still ``pending`` with
    an attempt logged died in the run's setup (data, model, before training writes ``running``): failed too, so the
    death is the run's reason and not only a line in the sweep's summary.

    Args:
        run_dir: the run folder.
        reason: one line naming what died.
        stale_s: as for :func:`run_one`; the dead processes' claim is free at once on this host (their pids are gone).
        ended_job: the scheduler job that trained it (:func:`robustscale.store.rundir.job_key`), which its scheduler
            says has ended: its claim is free though its host is another.
        reword_failed: also a run already ``failed``, by rank 0 of the job that just ended, whose reason is only the
            echo of another rank's death (a broken connection): ``reason`` replaces it.

    Returns:
        The failed record written, or None (another worker holds the run, or it is not ``running``, nor ``pending``
        with an attempt logged).
    """
    run_dir = Path(run_dir)
    held = acquire_claim(run_dir, stale_s, ended_job=ended_job)
    if held is None:
        return None
    try:
        append_line(run_dir / ERROR_LOG, _stamp() + reason + "\n")  # what died, whatever the record says
        record = read_record(run_dir)
        ended = {Status.running, Status.failed} if reword_failed else {Status.running}
        if (run_dir / ATTEMPTS).is_file():  # a worker got to it (the attempt is logged before the run's setup)
            ended.add(Status.pending)
        if record is None or record.status not in ended:
            return None
        record = record.failed(f"{reason}; rerun with --retry-failed to resume from the last checkpoint")
        write_record(run_dir, record)
        log.warning("run %s failed: %s", run_dir.name, reason)
        return record
    finally:
        held.release()


# ---------------------------------------------------------------------------------------------- submitit


def _join_job_group() -> None:
    """A job of several tasks (Slurm's ``nodes`` x ``tasks_per_node``) describes its process group in torchrun's
    variables, from Slurm's environment as submitit reads it: master address from the job's first node, a port
    derived from the job id (the same in every task and across requeues). GPUs stay all visible: rank ``r`` trains
    on ``cuda:LOCAL_RANK``."""
    if os.environ.get("SUBMITIT_EXECUTOR") and submitit.JobEnvironment().num_tasks > 1:
        TorchDistributedEnvironment().export(set_cuda_visible_devices=False, overwrite=True)


def _listen_for_preemption() -> tuple[int, Callable[..., Any]] | None:
    """Replace submitit's handler of the preemption / time-limit signal by one that asks training to stop at its next
    step boundary; outside the training steps (setup, final evaluation) submitit's own handler acts at once.
    Returns the signal and submitit's handler (None when this process is not a submitit job)."""
    if not os.environ.get("SUBMITIT_EXECUTOR"):
        return None
    signum = submitit.JobEnvironment._usr_sig()
    submitits = signal.getsignal(signum)
    if not callable(submitits):
        return None

    def on_signal(received: int, frame: Any) -> None:
        preemption.request()
        if not preemption.stoppable_now():
            submitits(received, frame)

    signal.signal(signum, on_signal)
    return signum, submitits


def _allocated_cpus() -> int | None:
    """The CPUs Slurm gave this task (``--cpus-per-task``): its torch threads. Without cgroups nothing else confines
    a task to them, and ranks sharing a node would each start one thread per core of the node."""
    cpus = os.environ.get("SLURM_CPUS_PER_TASK", "")
    return int(cpus) if os.environ.get("SUBMITIT_EXECUTOR") == "slurm" and cpus.isdigit() else None


def _guard_time_limit() -> None:
    """Stop at a step boundary while the checkpoint still fits before the job's time limit: once the time left is
    less than twice the slowest step seen (a validation included) plus :data:`CHECKPOINT_MARGIN_S`, whether or not
    Slurm's signal has come (``signal_delay_s`` is fixed at submission, before any step was timed; Slurm also sends
    it only at its 30-second checks). Slurm jobs only; the limit is read once from ``squeue``."""
    job_id = os.environ.get("SLURM_JOB_ID") if os.environ.get("SUBMITIT_EXECUTOR") == "slurm" else None
    end = slurm_job_end(job_id) if job_id else None
    if end is None:
        return

    def watch() -> None:
        while not preemption.requested():
            left_s = (end - datetime.now()).total_seconds()
            if left_s < 2 * preemption.longest_step_s() + CHECKPOINT_MARGIN_S:
                log.warning("%.0f s to the time limit, steps take up to %.1f s: stopping at the next step",
                            left_s, preemption.longest_step_s())
                preemption.request()
                return
            time.sleep(1.0)

    threading.Thread(target=watch, name="time-limit", daemon=True).start()


class RunJob:
    """``run_one`` as a submitit job (one task, or one per rank) that requeues itself when preempted or timed out.

    On the signal the ranks stop at the next step boundary with a checkpoint of it, rank 0 parks the run's claim, and
    submitit's handler (which calls :meth:`checkpoint`) requeues the job; the requeued ``run_one`` adopts the claim
    and resumes from that step. A job out of requeues ends its run ``failed`` instead of leaving it ``running``.
    """

    def __init__(self, threads: int | None = None):
        self.threads = threads  # torch CPU threads (jobs sharing one machine, as with submitit's local executor)

    def __call__(self, run_dir: str, config: dict[str, Any], retry_failed: bool, stale_s: float) -> dict[str, Any]:
        threads = self.threads or _allocated_cpus()
        if threads:
            torch.set_num_threads(threads)
        _join_job_group()
        listening = _listen_for_preemption()
        if listening:
            _guard_time_limit()
        try:
            with preemption.armed() if listening else contextlib.nullcontext():
                return run_one(run_dir, config, retry_failed, stale_s=stale_s)
        except preemption.Preempted:
            return self._requeue(run_dir, stale_s, *listening)

    @staticmethod
    def _requeue(run_dir: str, stale_s: float, signum: int, submitits: Callable[..., Any]) -> dict[str, Any]:
        """Hand over to submitit's handler: on rank 0 it checkpoints this job and requeues it (the process exits);
        on other ranks it does nothing, and the rank ends (the requeue restarts every task)."""
        try:
            submitits(signum, None)
        except UncompletedJobError as err:  # out of requeues: the run must not stay `running`
            fail_abandoned(run_dir, f"job not requeued ({err})", stale_s=stale_s)
            raise
        return {"run_id": Path(run_dir).name, "action": "preempted", "status": Status.running.value, "reason": None}

    def checkpoint(self, *args: Any, **kwargs: Any) -> DelayedSubmission:
        return DelayedSubmission(self, *args, **kwargs)
