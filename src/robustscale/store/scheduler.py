"""What the scheduler says about the job that holds a claim: a claim names its Slurm job (``slurm:<id>``), and a job
that Slurm still has in its queue (pending after a requeue, held, running) owns its run however old its heartbeat.

A preempted or timed-out job parks its claim and may then wait in the queue for hours, far longer than any
``--stale-after``; without asking Slurm, another sweep would take the run over and train it beside the requeued job.
Only ``squeue`` is asked (one call, only for a claim that would otherwise be taken over): a job it no longer knows
has ended. Where Slurm cannot be asked (no ``squeue`` here, the controller not answering) the answer is unknown and
the claim's heartbeat decides, as it does for every other worker.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
from datetime import datetime

__all__ = ["LIVE_STATES", "slurm_job_id", "slurm_job_state", "job_in_queue", "slurm_job_end"]

log = logging.getLogger(__name__)

# squeue's states of a job that will still run (or runs): everything but the end states
LIVE_STATES = frozenset({"PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED",
                         "RESIZING", "SUSPENDED", "SIGNALING", "STAGE_OUT", "STOPPED", "RESV_DEL_HOLD", "PREEMPTED"})
SQUEUE_TIMEOUT_S = 30


def slurm_job_id(job: object) -> str | None:
    """The Slurm id in a claim's ``job`` (``slurm:1234`` or, in an array, ``slurm:1234_5``); None for another."""
    if isinstance(job, str) and job.startswith("slurm:") and job[6:].replace("_", "").isdigit():
        return job[6:]
    return None


def _squeue(job_id: str, fmt: str) -> str | None:
    """``squeue -h -j JOB -o FMT``'s answer; "" when Slurm no longer knows the job; None when it cannot be asked."""
    if shutil.which("squeue") is None:
        return None
    try:
        done = subprocess.run(["squeue", "-h", "-j", job_id, "-o", fmt], capture_output=True, text=True,
                              timeout=SQUEUE_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired) as err:
        log.warning("squeue -j %s: %s", job_id, err)
        return None
    if done.returncode == 0:
        return done.stdout.strip()
    if "invalid job id" in done.stderr.lower():  # ended, and forgotten by the controller
        return ""
    log.warning("squeue -j %s: %s", job_id, done.stderr.strip())
    return None


def slurm_job_state(job_id: str) -> str | None:
    """The job's state (``PENDING``, ``RUNNING``, ...), "" when Slurm no longer has it, None when unknown."""
    answer = _squeue(job_id, "%T")
    return answer.splitlines()[0].strip() if answer else answer


def job_in_queue(job: object) -> bool | None:
    """Whether the claim's ``job`` is a Slurm job still queued or running (None: not a Slurm job, or unknown)."""
    job_id = slurm_job_id(job)
    if job_id is None:
        return None
    state = slurm_job_state(job_id)
    return None if state is None else state in LIVE_STATES


def slurm_job_end(job_id: str) -> datetime | None:
    """When Slurm ends the running job ``job_id`` (its time limit), in local time; None when unknown or unlimited."""
    answer = _squeue(job_id, "%e")
    try:
        return datetime.fromisoformat(answer.splitlines()[0].strip()) if answer else None
    except ValueError:  # "N/A", "NONE": no limit
        return None
