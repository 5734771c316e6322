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
run still ``running`` as ``failed`` with the rank and the cause (:func:`robustscale.sweep.worker.fail_abandoned`); on
Slurm the sweep watches all its jobs at once (one ``sacct`` call every 15 s), so a job that dies is seen while the
jobs submitted before it still run. What each job asks of Slurm follows the partition's nodes where the spec does
not say (:func:`slurm_options`): no GPU on a CPU partition, CPUs that a node has.

Because the runs coordinate through claims in their folders, executors need no bookkeeping of their own: any mix of
them, any number of times, over one output folder, trains each run once.
"""

from __future__ import annotations

import contextlib
import io
import logging
import multiprocessing as mp
import os
import re
import subprocess
import sys
import threading
import time
from abc import ABC, abstractmethod
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import submitit
import torch
from submitit.core.utils import FailedJobError

from robustscale.accounting.host import visible_gpus
from robustscale.enums import ExecutorKind, Status, choice
from robustscale.errors import ParameterError, UserError, one_line, shown
from robustscale.store.rundir import job_key
from robustscale.store.scheduler import LIVE_STATES, slurm_job_state
from robustscale.sweep.worker import RunJob, fail_abandoned, run_one
from robustscale.training.distributed import DDPLayout
from robustscale.training.launch import (RankFailed, available_cores, check_local_ranks, gpu_sets, launch,
                                         threads_per_rank)

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
                  "signal_delay_s": "slurm_signal_delay_s", "setup": "slurm_setup",
                  "additional_parameters": "slurm_additional_parameters"}
_SLURM_DEFAULTS = {"timeout_min": 24 * 60, "tasks_per_node": 1, "nodes": 1}
# CPUs per task (per DDP rank) where the nodes have them: data loading and the host side of a GPU's steps; fewer on
# nodes that have fewer (a job asking for more CPUs than any node has is never scheduled)
CPUS_PER_TASK = 8
# Slurm signals a job this long before its time limit (at most a quarter of the limit, so that a short job trains
# before it is signalled): the step in flight, its checkpoint and a slow file system must fit in it (90 s, submitit's
# default, did not for a slow CPU step). Slurm checks time limits only every 30 s, so the signal may come that much
# earlier: a limit of a minute or two can signal a job still importing torch, which the signal kills (its run stays
# pending for the next sweep). Each job also stops by itself once the time left is shorter than its slowest step so
# far allows (robustscale.sweep.worker), whatever this says.
SIGNAL_DELAY_S = 300
# requeues after a time limit before submitit gives a job up (preemptions do not count): submitit's default, 3, would
# end a run of the paper's largest model ("more than 16 days on a node with four Nvidia V100 GPUs", its Section V) in
# 24-hour jobs after 4 days
MAX_TIMEOUT_REQUEUES = 60
WAIT_POLL_S = 2.0  # how often the waiting sweep looks for the jobs' results
SACCT_EVERY_S = 15.0  # and asks sacct which jobs ended (one call for all of them): a job that died is seen this soon


@dataclass(frozen=True)
class NodeKind:
    """What Slurm says of the nodes a sweep's jobs go to (``sinfo``, the partition asked for or the default one);
    None where it is not known (no ``sinfo``, submitit's local executor)."""

    cpus: int | None = None  # the fewest CPUs of a node
    gpus: bool | None = None  # whether its nodes have GPUs (a ``gpu`` generic resource)


def partition_nodes(partition: str | None) -> NodeKind:
    """The nodes of ``partition`` (comma-separated names, as sbatch takes; None: the cluster's default partition)."""
    try:
        out = subprocess.run(["sinfo", "-h", "-o", "%P|%c|%G"], capture_output=True, text=True, timeout=60,
                             check=True).stdout
    except (OSError, subprocess.SubprocessError) as err:
        log.warning("sinfo: %s; asking for GPUs and CPUs without knowing the nodes", err)
        return NodeKind()
    rows = [line.split("|") for line in out.splitlines() if line.count("|") == 2]
    wanted = set(partition.split(",")) if partition else None
    chosen = [r for r in rows if (r[0].rstrip("*") in wanted if wanted else r[0].endswith("*"))]
    cpus = [int(c.rstrip("+")) for _, c, _ in chosen if c.rstrip("+").isdigit()]
    names = sorted({r[0].rstrip("*") for r in rows})
    if wanted and names and not wanted & set(names):
        raise ParameterError(f"partition {shown(partition)}: Slurm here has {', '.join(names)}; set the spec's "
                             "slurm partition (or --partition) to one of them")
    if not chosen:
        return NodeKind()
    return NodeKind(min(cpus) if cpus else None, any("gpu" in gres for _, _, gres in chosen))


def _resolved(slurm: dict[str, Any]) -> dict[str, Any]:
    return {_SLURM_ALIASES.get(k, k): v for k, v in slurm.items() if v is not None}


def slurm_options(slurm: dict[str, Any], ddp: DDPLayout | None = None, nodes: NodeKind = NodeKind()) -> dict[str, Any]:
    """submitit's parameters for runs of layout ``ddp`` on ``nodes``: ``nodes``, ``tasks_per_node`` = procs per node
    (one rank per task), short names (``partition``, ``gpus``, ``time``, ...) resolved, and ``--requeue`` asked
    explicitly (a site's ``JobRequeue=0`` would otherwise refuse the requeue of a preempted run).

    GPUs per node: the spec's ``gpus`` when given; else one per rank on a partition whose nodes have GPUs (or whose
    nodes are not known), and none on a CPU partition, where asking for a GPU is refused by sbatch. GPUs that no rank
    would use are refused: a job of 4 GPUs training on one is the silent waste this layout exists to prevent. CPUs per
    task: the spec's, else :data:`CPUS_PER_TASK` or what a node holds for each of its ranks, if fewer."""
    ddp = ddp or DDPLayout()
    given = _resolved(slurm)
    for key, want in (("nodes", ddp.nodes), ("tasks_per_node", ddp.procs_per_node)):
        if key in given and given[key] != want:
            raise ParameterError(f"slurm {key} {given[key]} differs from the run's DDP layout ({want}): set nodes and "
                                 "procs_per_node in the spec's ddp section (or --nodes / --procs-per-node) only")
    gpus = given.pop("gpus_per_node", 0 if nodes.gpus is False else ddp.procs_per_node)
    if gpus not in (0, ddp.procs_per_node):
        raise ParameterError(f"slurm gpus {gpus} per node, but each node runs {ddp.procs_per_node} DDP process(es), "
                             f"one per GPU: set ddp procs_per_node to {gpus} (--procs-per-node {gpus}) to train on "
                             "all of them, or gpus to match (0 on a CPU cluster)", "gpus")
    options = {**_SLURM_DEFAULTS, **given, "nodes": ddp.nodes, "tasks_per_node": ddp.procs_per_node}
    options.setdefault("cpus_per_task", max(1, min(CPUS_PER_TASK, (nodes.cpus or CPUS_PER_TASK) // ddp.procs_per_node)))
    options.setdefault("slurm_signal_delay_s", _signal_delay_s(options["timeout_min"]))
    extra = given.get("slurm_additional_parameters", {})
    if not isinstance(extra, dict):
        raise ParameterError(f"slurm additional_parameters {shown(extra)}: use a mapping of sbatch options "
                             "({exclusive: true})", "additional_parameters")
    options["slurm_additional_parameters"] = {"requeue": True, **extra}
    if gpus:  # none: no --gpus-per-node line at all (a CPU-only Slurm refuses the gres, even of 0)
        options["gpus_per_node"] = gpus
    return options


def _signal_delay_s(timeout_min: Any) -> int:
    """:data:`SIGNAL_DELAY_S`, at most a quarter of the time limit (a limit submitit cannot read: unchanged)."""
    try:
        return int(min(SIGNAL_DELAY_S, float(timeout_min) * 60 // 4))
    except (TypeError, ValueError):
        return SIGNAL_DELAY_S


def _task(job, rank: int):
    """Task ``rank`` of a job (the job itself when it has one task)."""
    return job.task(rank) if job.num_tasks > 1 else job


def _rank0_result(job) -> dict[str, Any]:
    """The outcome of a job: its rank 0's (a DDP job has a task per rank; rank 0 claims and reports)."""
    return _task(job, 0).result()


def _srun_says(job, rank: int) -> str | None:
    """What srun logged of task ``rank`` in the job's batch log (``task 1: Killed``), if anything."""
    try:
        text = Path(_task(job, 0).paths.stderr).read_text(errors="replace")
    except OSError:
        return None
    found = re.findall(rf"srun: error: \S+: tasks? (?:\d+[-,])*{rank}(?:[-,]\d+)*: (.+)", text)
    return found[-1].strip() if found else None


def _missing_ranks(job) -> list[int]:
    """The tasks (ranks) of an ended job that left no result: killed, or lost with their node."""
    return [k for k in range(job.num_tasks) if not Path(_task(job, k).paths.result_pickle).exists()]


def death_reason(job) -> str:
    """One line naming what died in a job that ended without rank 0's outcome, or whose rank 0 failed because
    another rank died: the first rank without a result, what srun said of it, the job, and that rank's log."""
    rank = (_missing_ranks(job) or [0])[0]
    srun = _srun_says(job, rank)
    said = f"srun: {srun}" if srun else f"state {_task(job, rank).state}"
    who = f"rank {rank} of {job.num_tasks} of job {job.job_id}" if job.num_tasks > 1 else f"job {job.job_id}"
    return f"{who} died ({said}) without finishing the run; its log: {shown(_task(job, rank).paths.stderr)}"


def _map_array(executor: submitit.AutoExecutor, job: Callable[..., Any], *args: Sequence[Any]) -> list[Any]:
    """``executor.map_array``, with a submission sbatch refuses (the spec's slurm section asks for what is not there)
    said once, in one line (submitit prints the refusal too)."""
    printed = io.StringIO()
    try:
        with contextlib.redirect_stderr(printed):
            jobs = executor.map_array(job, *args)
    except FailedJobError as err:
        raise UserError(f"sbatch refused the jobs: {one_line(err)} (see the spec's slurm section, --partition, "
                        "--account, --gpus, --time-min)") from None
    sys.stderr.write(printed.getvalue())
    if executor.cluster != "slurm":
        # submitit waits up to 15 s for an ended job's result file to show (Job._results_timeout_s), for network
        # filesystems; on this machine a job's process writes it before it exits, so a job without one died, and
        # its run fails at once (submitit's own tests set the same attribute to 0)
        for submitted in jobs:
            for rank in range(submitted.num_tasks):
                _task(submitted, rank)._results_timeout_s = 0
    return jobs


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
        if cluster is None:
            self._check_slurm()
        nodes = partition_nodes(_resolved(options).get("slurm_partition")) if self._on_slurm() else NodeKind()
        self.options = slurm_options(options, self.ddp, nodes)
        self.max_num_timeout = int(self.options.pop("max_num_timeout", MAX_TIMEOUT_REQUEUES))
        self.jobs: list[Any] = []

    def describe(self) -> str:
        ddp = f", {self.ddp.nodes} x {self.ddp.procs_per_node} processes per run" if self.ddp.distributed else ""
        return f"slurm via submitit ({self.cluster or 'slurm'}{ddp})"

    def _on_slurm(self) -> bool:
        return self.cluster in (None, "slurm")

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
        self.jobs = _map_array(executor, RunJob(threads), dirs, configs, [retry_failed] * n, [stale_s] * n)
        log.info("submitted %d jobs (%s)", len(self.jobs), ", ".join(j.job_id for j in self.jobs[:5]))
        if not self.wait:
            return [{"run_id": Path(d).name, "action": "submitted", "status": "pending", "reason": j.job_id}
                    for d, j in zip(dirs, self.jobs)]
        return self._wait(dirs, stale_s)

    def _wait(self, dirs: Sequence[str], stale_s: float) -> list[dict[str, Any]]:
        """Each job's outcome as soon as it ends, in whatever order they end: a job that dies is seen (and its run
        failed) within :data:`SACCT_EVERY_S`, while the jobs submitted before it still run (submitit alone asks
        sacct less and less often, up to every 10 minutes)."""
        waiting = {Path(d): job for d, job in zip(dirs, self.jobs)}
        outcomes, asked = [], 0.0
        while waiting:
            if self._on_slurm() and time.monotonic() - asked >= SACCT_EVERY_S:
                _ask_scheduler(waiting.values())
                asked = time.monotonic()
            ended = [run_dir for run_dir, job in waiting.items() if self._ended(job)]
            for run_dir in ended:
                outcomes.append(self._outcome(run_dir, waiting.pop(run_dir), stale_s))
            if waiting and not ended:
                time.sleep(WAIT_POLL_S)
        return outcomes

    def _ended(self, job) -> bool:
        """Whether the job is over: every task's result is there, or sacct says it ended and Slurm's queue agrees
        (sacct may say so of a job that is being requeued)."""
        if not job.done():
            return False
        if not self._on_slurm() or Path(_task(job, 0).paths.result_pickle).exists():
            return True
        return slurm_job_state(job.job_id) not in LIVE_STATES

    def _outcome(self, run_dir: Path, job, stale_s: float) -> dict[str, Any]:
        try:
            result = _rank0_result(job)
        except Exception as err:  # the job died outside run_one (a rank or node lost, out of requeues)
            return self._died(run_dir, job, err, stale_s)
        failed = result.get("action") == "trained" and result.get("status") == Status.failed.value
        if failed and job.num_tasks > 1 and _missing_ranks(job):
            # rank 0 failed because another rank died: the run's reason names that rank, not rank 0's broken pipe
            reason = death_reason(job)
            if fail_abandoned(run_dir, reason, stale_s=stale_s, ended_job=self._key(job), reword_failed=True):
                return {**result, "action": "crashed", "reason": reason}
        return result

    def submit(self, job: Callable[..., Any], *args: Sequence[Any]) -> list[Any]:
        """Any job (``robustscale eval``'s :class:`~robustscale.sweep.evaluation.EvalJob`) once per item of
        ``args``, as a job array with this executor's options and layout; the submitit jobs. A submission the
        scheduler refuses (``sbatch: error: ...``) is a one-line :class:`UserError`."""
        return _map_array(self._executor(), job, *args)

    def _died(self, run_dir: Path, job, err: BaseException, stale_s: float) -> dict[str, Any]:
        """A job that ended without rank 0's outcome: its run, if still ``running``, fails (never left running)."""
        fail_abandoned(run_dir, death_reason(job), stale_s=stale_s, ended_job=self._key(job))
        return _crashed(run_dir, err)

    def _key(self, job) -> str:
        return job_key("slurm" if self._on_slurm() else str(self.cluster), job.job_id)


def _ask_scheduler(jobs) -> None:
    """One sacct call that refreshes what submitit knows of every job (submitit's own watcher waits longer and longer
    between calls, up to 10 minutes)."""
    watchers = {id(w): w for w in (getattr(job, "watcher", None) for job in jobs) if w is not None}
    for watcher in watchers.values():
        watcher.update()


def make_executor(kind: ExecutorKind | str, *, workers: int = 1, folder: str | Path = ".submitit",
                  slurm: dict[str, Any] | None = None, wait: bool = True, ddp: DDPLayout | None = None) -> Executor:
    """The executor of ``kind`` (``local`` or ``slurm``), configured from the spec and the command line; ``ddp``: the
    processes each run trains on."""
    ddp = ddp or DDPLayout()
    if choice(ExecutorKind, kind, "executor") is ExecutorKind.local:
        if ddp.nodes > 1:
            raise ParameterError(f"nodes {ddp.nodes}: the local executor trains on this machine only; use executor "
                                 "slurm for runs across several nodes", "nodes")
        check_local_ranks(ddp.procs_per_node)  # before any run folder is made
        return LocalExecutor(workers, ddp.procs_per_node)
    options = dict(slurm or {})
    return SlurmExecutor(folder, cluster=options.pop("cluster", None), wait=wait, ddp=ddp, **options)
