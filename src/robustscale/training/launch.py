"""One machine, P processes: run a function on every rank of a local process group, as ``torchrun`` would.

``launch(fn, args, procs)`` spawns ``procs`` processes (``spawn``: CUDA and torch's thread pools do not survive a
fork), describes the group to each in torchrun's environment variables with a free port on this host
(:func:`robustscale.training.distributed.rank_env`), and returns rank 0's return value. The ranks die with the
process that launched them (torch sets their parent-death signal), and when one rank fails the others are stopped
and :class:`RankFailed` says which rank and why, so a caller never waits on a group that lost a member. NCCL on GPUs
(rank ``r`` on ``cuda:r`` of the devices ``CUDA_VISIBLE_DEVICES`` leaves visible), gloo on CPUs.

:func:`gpu_sets` and :func:`threads_per_rank` divide a machine between runs that train side by side.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import re
import signal
import socket
import time
from typing import Any, Callable, Sequence

import torch
import torch.distributed as dist
import torch.multiprocessing as torch_mp
from torch.multiprocessing.spawn import ProcessException, ProcessExitedException

from robustscale.config import Config, config_to_dict
from robustscale.store.record import RunRecord, mark_failed_if_running
from robustscale.training.distributed import rank_env
from robustscale.training.loop import train
from robustscale.training.run_config import config_from_dict

__all__ = ["launch", "train_on_ranks", "RankFailed", "free_port", "gpu_sets", "threads_per_rank", "available_cores"]

# how gloo and NCCL say that a peer of a collective is gone
_PEER_LOST = re.compile(r"gloo|nccl|connection (closed|reset)|broken pipe|DistBackendError", re.IGNORECASE)


class RankFailed(RuntimeError):
    """A rank of a launched group died or raised; the others were stopped.

    Attributes:
        rank: the first rank seen to fail.
        exit_code: its exit status (negative: killed by that signal), None when it raised.
        reason: one line: the signal, the exit status, or the last line of its traceback.
    """

    def __init__(self, rank: int, procs: int, exit_code: int | None, reason: str):
        self.rank, self.procs, self.exit_code, self.reason = rank, procs, exit_code, reason
        super().__init__(f"rank {rank} of {procs} {reason}")


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on ``host`` now (the kernel's choice), for a process group's rendezvous."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def gpu_sets(n_gpus: int, procs: int) -> list[str]:
    """``CUDA_VISIBLE_DEVICES`` values for the runs one machine trains side by side: ``floor(n_gpus / procs)``
    disjoint sets of ``procs`` devices (8 GPUs, 4 per run: ``["0,1,2,3", "4,5,6,7"]``); [] when fewer than
    ``procs`` GPUs are visible."""
    return [",".join(str(g) for g in range(k * procs, (k + 1) * procs)) for k in range(n_gpus // procs)]


def available_cores() -> int:
    """Cores this process may run on: the affinity mask, which containers, Slurm and ``taskset`` narrow (not the
    host's count, which would oversubscribe a 2-core allocation on a 64-core node)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def threads_per_rank(cores: int, runs: int, procs: int) -> int:
    """torch threads for each process when ``runs`` runs of ``procs`` processes share ``cores`` CPU cores (at least
    one): more would oversubscribe the cores, and OpenMP threads spinning against each other are far slower."""
    return max(1, cores // max(1, runs * procs))


def _rank_main(local_rank: int, fn: Callable[..., Any], args: Sequence[Any], kwargs: dict[str, Any], procs: int,
               port: int, threads: int | None, reports) -> None:
    """One spawned rank: describe the group in the environment, run ``fn``; rank 0 hands back the result, and a rank
    that raises says when (the first to fail is the cause, the others failed on its broken connections)."""
    os.environ.update(rank_env(local_rank, procs, local_rank, procs, "127.0.0.1", port))
    if threads:
        torch.set_num_threads(threads)
    try:
        out = fn(*args, **kwargs)
    except Exception as err:
        first = next((line for line in str(err).splitlines() if line.strip()), "").strip()
        message = f"{type(err).__name__}: {first}"[:300].rstrip(": ")
        reports.put(("raised", local_rank, (_lost_a_peer(err), time.time()), message))
        raise
    if local_rank == 0:
        reports.put(("result", 0, time.time(), out))


def _lost_a_peer(err: BaseException) -> bool:
    """Whether an error is a collective failing because another rank went away (a consequence, not a cause)."""
    return isinstance(err, getattr(dist, "DistError", ())) or bool(_PEER_LOST.search(str(err)))


def _drain(reports) -> list[tuple[str, int, float, Any]]:
    out = []
    while not reports.empty():
        out.append(reports.get())
    return out


def _cause(context, err: ProcessException, procs: int, reports: list[tuple[str, int, float, Any]]) -> RankFailed:
    """The rank that failed first. When one rank dies the others fail too, on its closed connections, and the
    launcher may see any of them first: a rank killed by a signal other than the launcher's own SIGTERM is the cause,
    else a rank that raised an error of its own (not a collective that lost its peer; the earliest), else the one
    torch saw."""
    codes = [process.exitcode for process in context.processes]
    killed = [r for r, code in enumerate(codes) if code is not None and code < 0 and -code != signal.SIGTERM]
    if killed:
        return RankFailed(killed[0], procs, codes[killed[0]], f"was killed by {signal.Signals(-codes[killed[0]]).name}")
    raised = sorted((when, rank, message) for kind, rank, when, message in reports if kind == "raised")
    if raised:
        return RankFailed(raised[0][1], procs, None, f"raised {raised[0][2]}")
    if isinstance(err, ProcessExitedException):
        how = f"was killed by {err.signal_name}" if err.signal_name else f"exited with status {err.exit_code}"
        return RankFailed(err.error_index, procs, err.exit_code, how)
    return RankFailed(err.error_index, procs, None, "raised an error")


def launch(fn: Callable[..., Any], args: Sequence[Any], procs: int, *, kwargs: dict[str, Any] | None = None,
           threads: int | None = None) -> Any:
    """Run ``fn(*args, **kwargs)`` on ``procs`` ranks of a new process group on this machine; rank 0's return value.

    Args:
        fn: a module-level function (it is pickled into each process); it joins the group itself
            (:func:`~robustscale.training.distributed.init_distributed`), as ``train`` does.
        args, kwargs: its arguments (picklable).
        procs: processes (ranks) to start.
        threads: torch CPU threads per rank (default: torch's own choice).

    Raises:
        RankFailed: a rank died or raised (the first one); every other rank has been stopped.
    """
    reports = mp.get_context("spawn").SimpleQueue()
    ranks_args = (fn, tuple(args), dict(kwargs or {}), procs, free_port(), threads, reports)
    context = torch_mp.start_processes(_rank_main, args=ranks_args, nprocs=procs, join=False, start_method="spawn")
    try:
        while not context.join():  # a failed rank: the others are stopped at once (SIGTERM, then SIGKILL)
            pass
    except ProcessException as err:
        raise _cause(context, err, procs, _drain(reports)) from None
    return next((out for kind, _, _, out in _drain(reports) if kind == "result"), None)


def _train_rank(config: dict[str, Any], run_dir: str, resume: bool, progress: bool) -> RunRecord | None:
    return train(config_from_dict(config), run_dir, resume=resume, progress=progress)


def train_on_ranks(cfg: Config, run_dir: str | os.PathLike, procs: int, *, resume: bool = False,
                   progress: bool = True) -> RunRecord | None:
    """``train`` as a DDP job of ``procs`` processes on this machine (``robustscale train --procs-per-node``): the
    cores shared between them on CPUs, one GPU each on GPUs. A rank that dies ends the run ``failed`` (naming the
    rank), never ``running``, and :class:`RankFailed` is raised."""
    threads = threads_per_rank(available_cores(), 1, procs)
    try:
        return launch(_train_rank, (config_to_dict(cfg), str(run_dir), resume, progress), procs, threads=threads)
    except RankFailed as err:
        mark_failed_if_running(run_dir, err)
        raise
