"""Executors: where the runs of a sweep execute. All call the same :func:`robustscale.sweep.worker.run_one`.

- :class:`LocalExecutor`: one run after another in this process, or ``workers`` spawned processes (one per visible
  GPU when there are GPUs, else CPU workers sharing the cores).
- :class:`SlurmExecutor`: one submitit job per run, as a job array on Slurm. A preempted or timed-out job requeues
  itself and resumes from the run's checkpoint. ``cluster="local"`` runs the same code path through submitit's local
  executor (how the tests exercise it without a cluster).

Because the runs coordinate through claims in their folders, executors need no bookkeeping of their own: any mix of
them, any number of times, over one output folder, trains each run once.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import threading
import time
from abc import ABC, abstractmethod
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any, Sequence

import submitit
import torch

from robustscale.accounting.host import visible_gpus
from robustscale.enums import ExecutorKind, choice
from robustscale.errors import ParameterError, UserError
from robustscale.sweep.worker import RunJob, run_one

__all__ = ["Executor", "LocalExecutor", "SlurmExecutor", "make_executor", "available_cores"]

log = logging.getLogger(__name__)

Task = tuple[Path, dict[str, Any]]  # (run folder, resolved config dict)


class Executor(ABC):
    """Runs ``run_one`` on every task and returns its outcomes (``crashed`` when the worker itself died)."""

    @abstractmethod
    def run(self, tasks: Sequence[Task], *, retry_failed: bool, stale_s: float) -> list[dict[str, Any]]:
        ...

    @abstractmethod
    def describe(self) -> str:
        ...


def _crashed(run_dir: Path, err: BaseException) -> dict[str, Any]:
    return {"run_id": Path(run_dir).name, "action": "crashed", "status": "running",
            "reason": f"worker died: {type(err).__name__}: {err}".strip()}


# ---------------------------------------------------------------------------------------------- local


def available_cores() -> int:
    """Cores this process may run on: the affinity mask, which containers, Slurm and ``taskset`` narrow (not the
    host's count, which would oversubscribe a 2-core allocation on a 64-core node)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _init_worker(threads: int, gpus, parent_pid: int) -> None:
    """Spawned worker setup: its own GPU (before CUDA starts), its share of the cores, and death with the parent."""
    if gpus is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = str(gpus.get())  # before this process starts CUDA
    torch.set_num_threads(threads)

    def orphaned() -> None:  # a killed sweep leaves no worker training on: the next sweep takes its claims over
        while os.getppid() == parent_pid:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=orphaned, daemon=True).start()


class LocalExecutor(Executor):
    """This machine: ``workers=1`` runs in this process; more spawn that many processes."""

    def __init__(self, workers: int = 1):
        if workers < 1:
            raise ParameterError(f"workers {workers}: use 1 or more", "workers")
        self.workers = workers

    def describe(self) -> str:
        return f"local ({self.workers} worker{'s' if self.workers > 1 else ''})"

    def run(self, tasks: Sequence[Task], *, retry_failed: bool, stale_s: float) -> list[dict[str, Any]]:
        if self.workers == 1 or len(tasks) == 1:
            return [run_one(run_dir, config, retry_failed, stale_s=stale_s) for run_dir, config in tasks]
        return self._pool(tasks, retry_failed, stale_s)

    def _pool(self, tasks: Sequence[Task], retry_failed: bool, stale_s: float) -> list[dict[str, Any]]:
        ctx = mp.get_context("spawn")  # no fork: CUDA and torch's thread pools do not survive it
        workers = min(self.workers, len(tasks))
        n_gpus, gpus = len(visible_gpus()), None
        if n_gpus:
            gpus = ctx.Queue()
            for k in range(workers):
                gpus.put(k % n_gpus)
        threads = max(1, available_cores() // workers)
        outcomes = []
        with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker,
                                 initargs=(threads, gpus, os.getpid())) as pool:
            futures = {pool.submit(run_one, run_dir, config, retry_failed, stale_s=stale_s): run_dir
                       for run_dir, config in tasks}
            for future in as_completed(futures):
                try:
                    outcomes.append(future.result())
                except Exception as err:  # the worker process died (OOM killer, segfault): resumable later
                    outcomes.append(_crashed(futures[future], err))
        return outcomes


# ---------------------------------------------------------------------------------------------- slurm (submitit)

# spec/CLI names -> submitit's AutoExecutor parameter names
_SLURM_ALIASES = {"partition": "slurm_partition", "account": "slurm_account", "qos": "slurm_qos",
                  "constraint": "slurm_constraint", "array_parallelism": "slurm_array_parallelism",
                  "time": "timeout_min", "gpus": "gpus_per_node", "cpus": "cpus_per_task", "mem": "mem_gb",
                  "signal_delay_s": "slurm_signal_delay_s", "setup": "slurm_setup"}
_SLURM_DEFAULTS = {"gpus_per_node": 1, "timeout_min": 24 * 60, "cpus_per_task": 8, "tasks_per_node": 1, "nodes": 1}


class SlurmExecutor(Executor):
    """One submitit job per run (a job array on Slurm), requeued on preemption and timeout.

    Args:
        folder: where submitit keeps its job files and logs (``OUT/.submitit``).
        cluster: ``None`` (Slurm when ``sbatch`` is there), ``"slurm"``, or ``"local"`` (submitit's local executor).
        wait: wait for every job to end; False submits and returns (the sweep is then followed by rerunning it, or
            with ``robustscale results``).
        options: submitit parameters; ``partition``, ``account``, ``gpus``, ``time`` (minutes) ... are accepted
            as short names.
    """

    def __init__(self, folder: str | Path, cluster: str | None = None, wait: bool = True, **options: Any):
        self.folder, self.cluster, self.wait = Path(folder), cluster, wait
        if cluster is None:
            self._check_slurm()
        self.options = {**_SLURM_DEFAULTS}
        for key, value in options.items():
            if value is not None:
                self.options[_SLURM_ALIASES.get(key, key)] = value
        self.jobs: list[Any] = []

    def describe(self) -> str:
        return f"slurm via submitit ({self.cluster or 'slurm'})"

    @staticmethod
    def _check_slurm() -> None:
        """Refuse to fall back silently to running every job at once on this machine (submitit's default)."""
        try:
            found = submitit.AutoExecutor.which()
        except RuntimeError:
            found = None
        if found != "slurm":
            raise ParameterError("executor slurm: no Slurm here (sbatch not found); run on a login node, use executor "
                                 "local, or set `slurm: {cluster: local}` in the spec for submitit's local executor",
                                 "executor")

    def _executor(self) -> submitit.AutoExecutor:
        try:
            executor = submitit.AutoExecutor(folder=self.folder, cluster=self.cluster)
        except (RuntimeError, ValueError) as err:
            raise ParameterError(f"executor slurm: {err} (is this a Slurm login node?)", "executor") from None
        options = dict(self.options)
        options.setdefault("name", "robustscale")
        try:
            executor.update_parameters(**options)
        except (NameError, ValueError, TypeError) as err:
            raise UserError(f"slurm options: {err}") from None
        return executor

    def run(self, tasks: Sequence[Task], *, retry_failed: bool, stale_s: float) -> list[dict[str, Any]]:
        executor = self._executor()
        dirs = [str(run_dir) for run_dir, _ in tasks]
        configs = [config for _, config in tasks]
        threads = None
        if executor.cluster != "slurm":  # every job on this machine: share its cores instead of oversubscribing
            threads = max(1, available_cores() // len(tasks))
        n = len(tasks)
        self.jobs = executor.map_array(RunJob(threads), dirs, configs, [retry_failed] * n, [stale_s] * n)
        log.info("submitted %d jobs (%s)", len(self.jobs), ", ".join(j.job_id for j in self.jobs[:5]))
        if not self.wait:
            return [{"run_id": Path(d).name, "action": "submitted", "status": "pending", "reason": j.job_id}
                    for d, j in zip(dirs, self.jobs)]
        outcomes = []
        for run_dir, job in zip(dirs, self.jobs):
            try:
                outcomes.append(job.result())
            except Exception as err:  # the job died outside run_one (node failure, out of requeues)
                outcomes.append(_crashed(Path(run_dir), err))
        return outcomes


def make_executor(kind: ExecutorKind | str, *, workers: int = 1, folder: str | Path = ".submitit",
                  slurm: dict[str, Any] | None = None, wait: bool = True) -> Executor:
    """The executor of ``kind`` (``local`` or ``slurm``), configured from the spec and the command line."""
    if choice(ExecutorKind, kind, "executor") is ExecutorKind.local:
        return LocalExecutor(workers)
    options = dict(slurm or {})
    return SlurmExecutor(folder, cluster=options.pop("cluster", None), wait=wait, **options)
