"""One sweep worker's job: bring one run folder to an end state, safely, from any number of processes at once.

Every executor calls :func:`run_one` on each run folder (:class:`RunJob` wraps it for submitit). ``run_one`` trains
only while it holds the run's claim, skips runs already done, resumes interrupted ones from their checkpoint, and turns
a crash of training into a ``failed`` record with a one-line reason (the traceback goes to ``error.log``). Every start
of training appends one line to ``attempts.jsonl``, so "trained exactly once" can be checked after the fact. While it
trains, every write into the run folder is fenced by the claim (:mod:`robustscale.store.fence`): a worker paused past
the stale time, whose claim another worker took over, stops before its next write (outcome ``lost``). Run folders are
plain names under the sweep's output and never symbolic links, nor are the logs appended to there.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import traceback
from pathlib import Path
from typing import Any

import torch
from submitit.helpers import DelayedSubmission

from robustscale.errors import UserError
from robustscale.store.atomic import append_line
from robustscale.store.fence import WriteFenced, fence
from robustscale.store.record import RECORD, RunRecord, Status, failed_record, now, read_record, write_record
from robustscale.store.rundir import CLAIM, DEFAULT_STALE_S, LOCK, acquire_claim
from robustscale.store.safe_paths import check_run_folder
from robustscale.training.checkpoint import CHECKPOINT
from robustscale.training.loop import train
from robustscale.training.run_config import config_from_dict

__all__ = ["run_one", "RunJob", "outcome", "nothing_to_do", "ATTEMPTS", "ERROR_LOG", "RUN_FILES"]

log = logging.getLogger(__name__)

ATTEMPTS = "attempts.jsonl"  # one line per start of training in this folder
ERROR_LOG = "error.log"  # tracebacks of failed attempts
# what is appended to or opened in place in a run folder (a link there would redirect the write); "eval" is a folder
RUN_FILES = (RECORD, ATTEMPTS, ERROR_LOG, "metrics.jsonl", CLAIM, LOCK, "eval")


def outcome(run_dir: Path, action: str, record: RunRecord | None) -> dict[str, Any]:
    """What a worker did with a run: ``{"run_id", "action", "status", "reason"}``."""
    return {"run_id": run_dir.name, "action": action,
            "status": (record.status if record else Status.pending).value, "reason": record.reason if record else None}


def nothing_to_do(record: RunRecord | None, retry_failed: bool) -> bool:
    """Whether a run is at an end state (done; failed, unless retrying)."""
    status = record.status if record else None
    return status is Status.done or (status is Status.failed and not retry_failed)


def _failure(run_dir: Path, config: dict[str, Any], err: BaseException) -> RunRecord:
    message = str(err).strip().splitlines()[0] if str(err).strip() else ""
    reason = message if isinstance(err, UserError) else f"{type(err).__name__}: {message}".rstrip(": ")
    stamp = f"--- {now()} {socket.gethostname()} pid {os.getpid()}\n"
    append_line(run_dir / ERROR_LOG, stamp + "".join(traceback.format_exception(err)))
    record = failed_record(config, f"{reason} (traceback in {ERROR_LOG})", read_record(run_dir))
    write_record(run_dir, record)
    return record


def _train(run_dir: Path, config: dict[str, Any], token: str) -> RunRecord | None:
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
    if nothing_to_do(record, retry_failed):
        return outcome(run_dir, "skipped", record)
    run_dir.mkdir(parents=True, exist_ok=True)
    held = acquire_claim(run_dir, stale_s)
    if held is None:
        return outcome(run_dir, "busy", read_record(run_dir))
    try:
        with fence(run_dir, held.holds, "claim"):
            record = read_record(run_dir)  # it may have finished while we were claiming it
            if nothing_to_do(record, retry_failed):
                return outcome(run_dir, "skipped", record)
            return outcome(run_dir, "trained", _train(run_dir, config, held.token))
    except WriteFenced as err:
        log.warning("run %s: %s", run_dir.name, err)
        return {**outcome(run_dir, "lost", read_record(run_dir)), "reason": str(err)}
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
            torch.set_num_threads(self.threads)
        return run_one(run_dir, config, retry_failed, stale_s=stale_s)

    def checkpoint(self, *args: Any, **kwargs: Any) -> DelayedSubmission:
        return DelayedSubmission(self, *args, **kwargs)
