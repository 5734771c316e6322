"""Executors: where the runs of a sweep execute. All call the same :func:`robustscale.sweep.worker.run_one`.

- :class:`LocalExecutor`: one run after another in this process, or ``workers`` spawned processes (one per visible
  GPU when there are GPUs, else CPU workers sharing the cores). With ``procs_per_node`` P > 1 every run is a DDP job
  of P processes (:func:`robustscale.training.launch.launch`): with G visible GPUs, floor(G / P) runs train at once,
  each on its own P GPUs (``CUDA_VISIBLE_DEVICES``); on CPUs the runs' P gloo processes share the cores (torch
  threads per process = cores / (runs at once x P)).
- :class:`SlurmExecutor`: one submitit job per run, as a job array on Slurm; a DDP run is a job of ``nodes`` x
  ``tasks_per_node`` tasks with one GPU each, every task one rank. A preempted or timed-out job checkpoints at the
  next step boundary, requeues itself and resumes from that step. ``cluster="local"`` runs the same code path
  through submitit's local executor (one node; how the tests exercise it without a cluster).

A rank that dies fails its run: the launcher (the local executor) or the sweep waiting on the job (Slurm) marks a
run still ``running`` as ``failed`` with the rank and the cause (:func:`robustscale.sweep.worker.fail_abandoned`).

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
from typing import Any, Callable, Sequence

import submitit
import torch

from robustscale.accounting.host import visible_gpus
from robustscale.enums import ExecutorKind, choice
from robustscale.errors import ParameterError, UserError, shown
from robustscale.store.rundir import job_key
from robustscale.sweep.worker import RunJob, fail_abandoned, run_one
from robustscale.training.distributed import DDPLayout
from robustscale.training.launch import RankFailed, available_cores, gpu_sets, launch, threads_per_rank

__all__ = ["Executor", "LocalExecutor", "SlurmExecutor", "make_executor", "available_cores", "slurm_options"]

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


def _init_worker(threads: int, gpus, parent_pid: int) -> None:
    """Spawned worker setup: its own GPU(s) (before CUDA starts), its share of the cores, and death with the
    parent."""
    if gpus is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = gpus.get()  # before this process (or a rank it launches) starts CUDA
    torch.set_num_threads(threads)

    def orphaned() -> None:  # a killed sweep leaves no worker training on: the next sweep takes its claims over
        while os.getppid() == parent_pid:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=orphaned, daemon=True).start()


def run_ddp(run_dir: Path, config: dict[str, Any], retry_failed: bool, stale_s: float, procs: int,
            threads: int | None) -> dict[str, Any]:
    """One run as a DDP job of ``procs`` processes on this machine; a rank that dies fails the run (the others are
    stopped), so it is never left ``running``."""
    try:
        return launch(run_one, (run_dir, config, retry_failed), procs, kwargs={"stale_s": stale_s}, threads=threads)
    except RankFailed as err:
        record = fail_abandoned(run_dir, str(err), stale_s=stale_s)
        return {"run_id": Path(run_dir).name, "action": "crashed",
                "status": record.status.value if record else "running", "reason": str(err)}


class LocalExecutor(Executor):
    """This machine: ``workers=1`` runs in this process; more spawn that many processes. ``procs_per_node`` > 1:
    every run is a DDP job of that many processes, ``workers`` (at most floor(GPUs / procs) on GPUs) at once."""

    def __init__(self, workers: int = 1, procs_per_node: int = 1):
        if workers < 1:
            raise ParameterError(f"workers {workers}: use 1 or more", "workers")
        if procs_per_node < 1:
            raise ParameterError(f"procs_per_node {procs_per_node}: use 1 or more", "procs_per_node")
        self.workers, self.procs = workers, procs_per_node

    def describe(self) -> str:
        ddp = f", {self.procs} processes per run" if self.procs > 1 else ""
        return f"local ({self.workers} worker{'s' if self.workers > 1 else ''}{ddp})"

    def _at_once(self, n_tasks: int, n_gpus: int) -> int:
        """Runs trained side by side: the workers asked for, at most one per task and one per set of P GPUs."""
        if n_gpus and n_gpus < self.procs:
            raise ParameterError(f"procs_per_node {self.procs}: each run needs {self.procs} GPUs and {n_gpus} are "
                                 "visible; lower procs_per_node", "procs_per_node")
        if self.procs == 1:  # as before DDP: workers beyond the GPUs share them round-robin
            return min(self.workers, n_tasks)
        return min(self.workers, n_tasks, *([n_gpus // self.procs] if n_gpus else []))

    def run(self, tasks: Sequence[Task], *, retry_failed: bool, stale_s: float) -> list[dict[str, Any]]:
        n_gpus = len(visible_gpus())
        workers = self._at_once(len(tasks), n_gpus)
        if workers == 1 and self.procs == 1:
            return [run_one(run_dir, config, retry_failed, stale_s=stale_s) for run_dir, config in tasks]
        if workers == 1:
            threads = threads_per_rank(available_cores(), 1, self.procs)
            return [run_ddp(run_dir, config, retry_failed, stale_s, self.procs, threads) for run_dir, config in tasks]
        return self._pool(tasks, retry_failed, stale_s, workers, n_gpus)

    def _job(self, pool: ProcessPoolExecutor, task: Task, retry_failed: bool, stale_s: float, threads: int):
        run_dir, config = task
        if self.procs == 1:
            return pool.submit(run_one, run_dir, config, retry_failed, stale_s=stale_s)
        return pool.submit(run_ddp, run_dir, config, retry_failed, stale_s, self.procs, threads)

    def _pool(self, tasks: Sequence[Task], retry_failed: bool, stale_s: float, workers: int,
              n_gpus: int) -> list[dict[str, Any]]:
        ctx = mp.get_context("spawn")  # no fork: CUDA and torch's thread pools do not survive it
        gpus = None
        if n_gpus:
            gpus, sets = ctx.Queue(), gpu_sets(n_gpus, self.procs)
            for k in range(workers):
                gpus.put(sets[k % len(sets)])
        threads = threads_per_rank(available_cores(), workers, self.procs)
        outcomes = []
        with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker,
                                 initargs=(threads, gpus, os.getpid())) as pool:
            futures = {self._job(pool, task, retry_failed, stale_s, threads): task[0] for task in tasks}
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
# requeues after a time limit before submitit gives a job up (preemptions do not count): submitit's default, 3, would
# end a run of the paper's largest model ("more than 16 days on a node with four Nvidia V100 GPUs", its Section V) in
# 24-hour jobs after 4 days
MAX_TIMEOUT_REQUEUES = 60


def slurm_options(slurm: dict[str, Any], ddp: DDPLayout | None = None) -> dict[str, Any]:
    """submitit's parameters for runs of layout ``ddp``: ``nodes``, ``tasks_per_node`` = procs per node (one rank per
    task), ``gpus_per_node`` = procs per node (or 0 for a CPU cluster), short names (``partition``, ``gpus``,
    ``time``, ...) resolved. GPUs that no rank would use are refused: a job of 4 GPUs training on one is the silent
    waste this layout exists to prevent."""
    ddp = ddp or DDPLayout()
    given = {_SLURM_ALIASES.get(k, k): v for k, v in slurm.items() if v is not None}
    for key, want in (("nodes", ddp.nodes), ("tasks_per_node", ddp.procs_per_node)):
        if key in given and given[key] != want:
            raise ParameterError(f"slurm {key} {given[key]} differs from the run's DDP layout ({want}): set nodes and "
                                 "procs_per_node in the spec's ddp section (or --nodes / --procs-per-node) only")
    gpus = given.get("gpus_per_node", ddp.procs_per_node)
    if gpus not in (0, ddp.procs_per_node):
        raise ParameterError(f"slurm gpus {gpus} per node, but each node runs {ddp.procs_per_node} DDP process(es), "
                             f"one per GPU: set ddp procs_per_node to {gpus} (--procs-per-node {gpus}) to train on "
                             "all of them, or gpus to match (0 on a CPU cluster)", "gpus")
    return {**_SLURM_DEFAULTS, **given, "nodes": ddp.nodes, "tasks_per_node": ddp.procs_per_node,
            "gpus_per_node": gpus}


def _rank0_result(job) -> dict[str, Any]:
    """The outcome of a job: its rank 0's (a DDP job has a task per rank; rank 0 claims and reports)."""
    return job.task(0).result() if job.num_tasks > 1 else job.result()


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

    def __init__(self, folder: str | Path, cluster: str | None = None, wait: bool = True,
                 ddp: DDPLayout | None = None, **options: Any):
        self.folder, self.cluster, self.wait = Path(folder), cluster, wait
        self.ddp = ddp or DDPLayout()
        self.options = slurm_options(options, self.ddp)
        self.max_num_timeout = int(self.options.pop("max_num_timeout", MAX_TIMEOUT_REQUEUES))
        if cluster is None:
            self._check_slurm()
        self.jobs: list[Any] = []

    def describe(self) -> str:
        ddp = f", {self.ddp.nodes} x {self.ddp.procs_per_node} processes per run" if self.ddp.distributed else ""
        return f"slurm via submitit ({self.cluster or 'slurm'}{ddp})"

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
            executor = submitit.AutoExecutor(folder=self.folder, cluster=self.cluster,
                                             slurm_max_num_timeout=self.max_num_timeout,
                                             local_max_num_timeout=self.max_num_timeout)
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
            threads = threads_per_rank(available_cores(), len(tasks), self.ddp.procs_per_node)
        n = len(tasks)
        self.jobs = executor.map_array(RunJob(threads), dirs, configs, [retry_failed] * n, [stale_s] * n)
        log.info("submitted %d jobs (%s)", len(self.jobs), ", ".join(j.job_id for j in self.jobs[:5]))
        if not self.wait:
            return [{"run_id": Path(d).name, "action": "submitted", "status": "pending", "reason": j.job_id}
                    for d, j in zip(dirs, self.jobs)]
        outcomes = []
        for run_dir, job in zip(dirs, self.jobs):
            try:
                outcomes.append(_rank0_result(job))
            except Exception as err:  # the job died outside run_one (a rank or node lost, out of requeues)
                outcomes.append(self._died(Path(run_dir), job, err, stale_s))
        return outcomes

    def submit(self, job: Callable[..., Any], *args: Sequence[Any]) -> list[Any]:
        """Any job (``robustscale eval``'s :class:`~robustscale.sweep.evaluation.EvalJob`) once per item of
        ``args``, as a job array with this executor's options and layout; the submitit jobs. A submission the
        scheduler refuses (``sbatch: error: ...``) is a one-line :class:`UserError`."""
        try:
            return self._executor().map_array(job, *args)
        except submitit.core.utils.FailedJobError as err:
            raise UserError(f"the scheduler refused the jobs: {shown(str(err).strip().splitlines()[0])} (check the "
                            "spec's slurm section and --partition / --account)") from None

    def _died(self, run_dir: Path, job, err: BaseException, stale_s: float) -> dict[str, Any]:
        """A job that ended without rank 0's outcome: its run, if still ``running``, fails (never left running)."""
        reason = (f"job {job.job_id} ended without finishing the run ({type(err).__name__}; its ranks' logs: "
                  f"{self.folder}/{job.job_id}_*_log.err)")
        fail_abandoned(run_dir, reason, stale_s=stale_s, ended_job=job_key(self._cluster_name(), job.job_id))
        return _crashed(run_dir, err)

    def _cluster_name(self) -> str:
        return "slurm" if self.cluster in (None, "slurm") else str(self.cluster)


def make_executor(kind: ExecutorKind | str, *, workers: int = 1, folder: str | Path = ".submitit",
                  slurm: dict[str, Any] | None = None, wait: bool = True, ddp: DDPLayout | None = None) -> Executor:
    """The executor of ``kind`` (``local`` or ``slurm``), configured from the spec and the command line; ``ddp``: the
    processes each run trains on."""
    ddp = ddp or DDPLayout()
    if choice(ExecutorKind, kind, "executor") is ExecutorKind.local:
        if ddp.nodes > 1:
            raise ParameterError(f"nodes {ddp.nodes}: the local executor trains on this machine only; use executor "
                                 "slurm for runs across several nodes", "nodes")
        return LocalExecutor(workers, ddp.procs_per_node)
    options = dict(slurm or {})
    return SlurmExecutor(folder, cluster=options.pop("cluster", None), wait=wait, ddp=ddp, **options)
