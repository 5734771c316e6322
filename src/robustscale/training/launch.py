"""One machine, P processes: run a function on every rank of a local process group, as ``torchrun`` would.

``launch(fn, args, procs)`` starts ``procs`` processes, describes the group to each in torchrun's environment
variables (:func:`robustscale.training.distributed.rank_env`), and returns rank 0's return value. When one rank fails
the others are stopped and :class:`RankFailed` says which rank and why, so a caller never waits on a group that lost
a member. NCCL on GPUs (rank ``r`` on ``cuda:r`` of the devices ``CUDA_VISIBLE_DEVICES`` leaves visible), gloo on
CPUs.

The ranks fork from multiprocessing's forkserver: a clean process that imports torch and this package once, the
first time a process launches, and never starts CUDA or torch's thread pools (neither survives a fork). A spawned
rank paid Python, torch and ``torch._dynamo`` itself, about 3 CPU-seconds before its first step on a 2-core VM, and
more where the package lies on a shared file system; a forked one pays none of it. A rank takes the launcher's
environment as it is at the launch (``CUDA_VISIBLE_DEVICES`` included), not the server's. ``spawn`` where there is no
forkserver (Windows) or it cannot start (a temporary folder whose path is too long for the server's socket).

No rank outlives the launcher: each watches it from the moment it starts (a pidfd on Linux, which wakes as the
launcher ends; elsewhere a thread polling it) and exits with it, so a launcher killed with SIGKILL takes its ranks
with it instead of leaving them to init, training on and writing into the run folder; the forkserver then ends too.
(A rank's parent is the server, not the launcher, so the parent-death signal would watch the wrong process;
``torch.multiprocessing.spawn`` watches nothing.) SIGTERM, where nobody else handles it, makes the launcher stop its
ranks and clean up before it exits (status 143).

Nothing of the group listens beyond this machine: the ranks meet in a ``FileStore`` in a private (0700) temporary
folder, removed when the group ends, instead of a TCPStore that binds every interface, and gloo's and NCCL's own
connections are pinned to the loopback interface (``GLOO_SOCKET_IFNAME`` / ``NCCL_SOCKET_IFNAME``). Multi-node groups
(torchrun, Slurm jobs through submitit) keep their TCP rendezvous: they need the network.

:func:`check_local_ranks` refuses more ranks than this machine has GPUs, or, without GPUs, CPU cores (one line,
before anything starts); :func:`gpu_sets` and :func:`threads_per_rank` divide a machine between runs that train side
by side.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import re
import select
import shutil
import signal
import socket
import tempfile
import threading
import time
from multiprocessing import forkserver
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import torch
import torch.distributed as dist
import torch.multiprocessing as torch_mp
from torch.multiprocessing.spawn import ProcessException, ProcessExitedException

from robustscale.accounting.host import visible_gpus
from robustscale.config import Config, config_to_dict
from robustscale.errors import ParameterError
from robustscale.store.fence import fence
from robustscale.store.record import RunRecord, mark_failed_if_running
from robustscale.store.rundir import CLAIM, Claim
from robustscale.training.distributed import rank_env
from robustscale.training.loop import train
from robustscale.training.run_config import config_from_dict

__all__ = ["launch", "train_on_ranks", "RankFailed", "free_port", "gpu_sets", "threads_per_rank", "available_cores",
           "check_local_ranks", "die_with", "loopback_interface"]

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


def check_local_ranks(procs: int) -> None:
    """Refuse ``procs`` ranks on this machine beyond one per visible GPU, or, without GPUs, one per CPU core this
    process may run on (512 gloo processes on 2 cores was 512 processes). One line naming ``procs_per_node``."""
    if procs <= 1:
        return
    gpus = len(visible_gpus())
    if gpus and procs > gpus:
        raise ParameterError(f"procs_per_node {procs}: each process trains on a GPU of its own and {gpus} are visible "
                             f"here; use at most {gpus} (set by --procs-per-node, or a sweep spec's "
                             "ddp.procs_per_node)", "procs_per_node")
    cores = available_cores()
    if not gpus and procs > cores:
        raise ParameterError(f"procs_per_node {procs}: this machine has no GPU and {cores} CPU core(s) this process "
                             f"may use; use at most {cores} processes, one per core (set by --procs-per-node, or a "
                             "sweep spec's ddp.procs_per_node)", "procs_per_node")


def die_with(pid: int) -> None:
    """Exit (status 1) the moment process ``pid`` ends, which may have happened already: a thread waits on a pidfd of
    it (Linux 5.3+), or polls it twice a second where there is none. Not on Windows, where signal 0 is a Ctrl-C event
    for ``pid``'s console group (ranks are spawned there, the launcher's own children)."""
    if os.name == "nt":
        return
    try:
        pidfd = os.pidfd_open(pid) if hasattr(os, "pidfd_open") else None
    except ProcessLookupError:
        os._exit(1)
    except OSError:  # a kernel without pidfds
        pidfd = None

    def alive() -> bool:
        try:
            os.kill(pid, 0)
        except (ProcessLookupError, PermissionError):  # gone (its pid may belong to someone else's process now)
            return False
        return True

    def wait() -> None:
        if pidfd is not None:
            ended = select.poll()
            ended.register(pidfd, select.POLLIN)  # readable once the process has ended
            ended.poll()
        else:
            while alive():
                time.sleep(0.5)
        os._exit(1)

    if pidfd is None and not alive():
        os._exit(1)
    threading.Thread(target=wait, name=f"die-with-{pid}", daemon=True).start()


def loopback_interface() -> str:
    """The name of this machine's loopback interface (``lo`` on Linux, ``lo0`` on macOS)."""
    with contextlib.suppress(OSError, AttributeError):
        names = [name for _, name in socket.if_nameindex()]
        for name in ("lo", "lo0", *names):
            if name in names and name.startswith("lo"):
                return name
    return "lo"


@contextlib.contextmanager
def _sigterm_exits() -> Iterator[None]:
    """While a group runs, SIGTERM ends the launcher with ``SystemExit(143)`` instead of at once, so that it stops its
    ranks, removes the rendezvous folder and releases its run's claim on the way out. Only where SIGTERM has its
    default action and this is the main thread: a handler someone else set (submitit's) is left alone."""
    if threading.current_thread() is not threading.main_thread() or \
            signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        yield
        return

    def on_sigterm(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_sigterm)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


@contextlib.contextmanager
def _rendezvous() -> Iterator[str]:
    """A FileStore path in a private temporary folder (mkdtemp: 0700), removed when the group has ended."""
    folder = tempfile.mkdtemp(prefix="robustscale-group-")
    try:
        yield str(Path(folder) / "store")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _rank_main(local_rank: int, fn: Callable[..., Any], args: Sequence[Any], kwargs: dict[str, Any], procs: int,
               store: str, launcher: int, env: dict[str, str], threads: int | None, reports) -> None:
    """One rank: die with the launcher, take its environment and describe the group in it (a file store, loopback
    only), run ``fn``; rank 0 hands back the result, and a rank that raises says when (the first to fail is the cause,
    the others failed on its broken connections)."""
    die_with(launcher)
    os.environ.clear()
    os.environ.update(env)
    interface = loopback_interface()
    os.environ.update(rank_env(local_rank, procs, local_rank, procs, "127.0.0.1", 0, store=store),
                      GLOO_SOCKET_IFNAME=interface, NCCL_SOCKET_IFNAME=interface)
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
        ParameterError: more ranks than this machine has GPUs, or CPU cores (:func:`check_local_ranks`).
    """
    check_local_ranks(procs)
    method = _start_method(fn)
    reports = mp.get_context(method).SimpleQueue()
    with _sigterm_exits(), _rendezvous() as store:
        ranks_args = (fn, tuple(args), dict(kwargs or {}), procs, store, os.getpid(), dict(os.environ), threads,
                      reports)
        context = torch_mp.start_processes(_rank_main, args=ranks_args, nprocs=procs, join=False,
                                           start_method=method)
        try:
            while not context.join():  # a failed rank: the others are stopped at once (SIGTERM, then SIGKILL)
                pass
        except ProcessException as err:
            raise _cause(context, err, procs, _drain(reports)) from None
        except BaseException:  # Ctrl-C, or an error of the launcher's own: no rank is left behind
            _stop(context)
            raise
    return next((out for kind, _, _, out in _drain(reports) if kind == "result"), None)


def _start_method(fn: Callable[..., Any]) -> str:
    """``forkserver``, its server preloading this module (torch, the training loop) and ``fn``'s (the first launch in a
    process starts the server; later ones reuse it); ``spawn`` where there is none, or where it cannot start: its
    socket lives in the temporary folder, and a ``TMPDIR`` longer than about 75 characters leaves no room for its
    path in a Unix socket address (108 bytes)."""
    if "forkserver" not in mp.get_all_start_methods():
        return "spawn"
    mp.set_forkserver_preload([__name__] + ([fn.__module__] if fn.__module__ not in ("__main__", __name__) else []))
    try:
        forkserver.ensure_running()
    except OSError:
        return "spawn"
    return "forkserver"


def _stop(context) -> None:
    for process in context.processes:
        if process.is_alive():
            process.kill()
    for process in context.processes:
        process.join(timeout=10)


def _train_rank(config: dict[str, Any], run_dir: str, resume: bool, progress: bool,
                token: str | None = None) -> RunRecord | None:
    """One rank of ``train``; with the launcher's claim ``token``, every write is fenced by it, as a sweep's ranks'
    are (:mod:`robustscale.store.fence`): a rank whose launcher lost the run writes nothing more."""
    if token is None:
        return train(config_from_dict(config), run_dir, resume=resume, progress=progress)
    claim = Claim(Path(run_dir) / CLAIM, token, heartbeat_s=0.0)  # the launcher beats; a rank only checks
    with fence(run_dir, claim.holds, "claim"):
        return train(config_from_dict(config), run_dir, resume=resume, progress=progress)


def train_on_ranks(cfg: Config, run_dir: str | os.PathLike, procs: int, *, resume: bool = False,
                   progress: bool = True, claim: Claim | None = None) -> RunRecord | None:
    """``train`` as a DDP job of ``procs`` processes on this machine (``robustscale train --procs-per-node``): the
    cores shared between them on CPUs, one GPU each on GPUs. A rank that dies ends the run ``failed`` (naming the
    rank), never ``running``, and :class:`RankFailed` is raised. ``claim``: the run folder's claim, held by the
    caller (:func:`robustscale.store.rundir.holding_claim`); the ranks write only while it holds."""
    check_local_ranks(procs)
    threads = threads_per_rank(available_cores(), 1, procs)
    token = claim.token if claim is not None else None
    try:
        return launch(_train_rank, (config_to_dict(cfg), str(run_dir), resume, progress, token), procs,
                      threads=threads)
    except RankFailed as err:
        mark_failed_if_running(run_dir, err)
        raise
