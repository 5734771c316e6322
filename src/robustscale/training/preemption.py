"""Stopping at a step boundary when the scheduler asks: a preemption, or the signal Slurm sends before a time limit.

A signal handler may interrupt the training step anywhere (inside a backward pass, half-way through an optimiser
update), so it only sets a flag: :func:`request`. The training loop asks :func:`agreed` after every optimiser step;
once the flag is up there, it saves a checkpoint of that exact step and raises :class:`Preempted`, and the job
requeues itself (:class:`robustscale.sweep.worker.RunJob`). Under DDP the ranks must stop at the *same* step, and a
scheduler may signal only some of them, so :func:`agreed` is a collective (the flag's maximum over the ranks). It is
one only while the loop is :func:`armed`: a run that no scheduler can preempt (``robustscale train``, the local
executor) pays nothing, not even a host sync.
"""

from __future__ import annotations

import contextlib
import threading
import time
from typing import Iterator

import torch
import torch.distributed as dist

__all__ = ["Preempted", "request", "requested", "reset", "armed", "is_armed", "stoppable", "stoppable_now", "agreed",
           "longest_step_s"]

_requested = threading.Event()
_armed = threading.Event()  # a scheduler may signal this process (the worker listens)
_stoppable = threading.Event()  # the loop is inside its training steps, where it honours a request
_steps = {"last": None, "longest_s": 0.0}  # when the loop last asked (armed), and the longest time between two asks


class Preempted(Exception):
    """Training stopped at a step boundary because the scheduler asked; a checkpoint of that step is on disk."""


def request() -> None:
    """Ask the loop to stop at its next step boundary (safe to call from a signal handler)."""
    _requested.set()


def requested() -> bool:
    """Whether a stop was requested in this process."""
    return _requested.is_set()


def reset() -> None:
    """Forget a request (a new job in the same process)."""
    _requested.clear()


def is_armed() -> bool:
    return _armed.is_set()


@contextlib.contextmanager
def armed() -> Iterator[None]:
    """While the block runs, the loop checks for a stop request after every step (every rank must be armed)."""
    _armed.set()
    try:
        yield
    finally:
        _armed.clear()


@contextlib.contextmanager
def stoppable() -> Iterator[None]:
    """The loop's training steps: a request made while the block runs is honoured at a step boundary. Outside it
    (setup, the final evaluation) :func:`stoppable_now` is False, and a signal handler must act on its own."""
    _stoppable.set()
    _steps["last"] = None  # the time before the first step (setup, a resume) is no step
    try:
        yield
    finally:
        _stoppable.clear()


def longest_step_s() -> float:
    """The longest time between two step boundaries seen while armed (a validation between two epochs included): how
    long a stop request may wait to be honoured, which a job near its time limit must allow for."""
    return _steps["longest_s"]


def _note_step() -> None:
    now = time.monotonic()
    if _steps["last"] is not None:
        _steps["longest_s"] = max(_steps["longest_s"], now - _steps["last"])
    _steps["last"] = now


def stoppable_now() -> bool:
    """Whether a request made now will be honoured by the loop at its next step boundary."""
    return _armed.is_set() and _stoppable.is_set()


def agreed(device: torch.device) -> bool:
    """Whether the ranks agree to stop now: the flag on any rank (a collective under DDP; every rank calls it at the
    same step). Always False when not armed, without communicating."""
    if not _armed.is_set():
        return False
    _note_step()
    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return _requested.is_set()
    flag = torch.tensor([1.0 if _requested.is_set() else 0.0], device=device)
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return bool(flag.item() > 0)
