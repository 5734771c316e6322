"""``robustscale eval`` at scale: one run or a sweep's folder of runs, each evaluation split over P processes.

:func:`eval_runs` evaluates run folders (or checkpoints) one after another on every rank of the process group the
environment describes (none: this process alone), each through :func:`robustscale.evaluate.evaluate`, which splits
the attack over the ranks. :func:`evaluate_runs` starts it where asked, as sweeps start training:

- here, in this process (or as a rank of ``torchrun --nproc_per_node P -m robustscale eval ...``);
- ``procs_per_node`` P > 1: a group of P processes on this machine (:func:`robustscale.training.launch.launch`);
- ``executor="slurm"``: one submitit job per run (a job array), each a job of ``nodes`` x P tasks, one rank per task
  (``slurm: {cluster: local}``: submitit's local executor, one node).

Over a folder (``only_missing``) a run is evaluated only when it is done and lacks the requested evaluation (its
``eval/<attack>-<eps>.json`` with the same settings): rerunning evaluates nothing, and a killed evaluation resumes from
its AutoAttack states. Rank 0 holds the run's claim while it evaluates it (:mod:`robustscale.store.rundir`, the claim a
sweep's training takes), so two evaluations, or an evaluation and a sweep, never work on one run at once, and its
writes are fenced by it. An AutoAttack result at the run's own threat model fills a record that has none
(:func:`robustscale.evaluate.record_evaluation`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import traceback
from pathlib import Path
from typing import Any, Sequence

import torch
from submitit.helpers import DelayedSubmission

from robustscale.config import config_from_dict
from robustscale.enums import ExecutorKind, Status, choice
from robustscale.errors import ParameterError, UserError
from robustscale.evaluate import EvalRequest, evaluate, existing_evaluation, record_evaluation
from robustscale.store.fence import WriteFenced, fence
from robustscale.store.record import RECORD, read_record
from robustscale.store.rundir import CLAIM, DEFAULT_STALE_S, Claim, acquire_claim
from robustscale.sweep.executors import SlurmExecutor
from robustscale.sweep.worker import _join_job_group
from robustscale.training.distributed import DDPLayout, DistInfo, broadcast_object, cleanup, init_distributed
from robustscale.training.launch import available_cores, check_local_ranks, launch, threads_per_rank

__all__ = ["evaluate_runs", "eval_runs", "EvalJob", "is_run", "ACTIONS"]

log = logging.getLogger(__name__)

# what an evaluation did with a run
ACTIONS = ("evaluated", "recorded", "skipped", "busy", "not_done", "lost", "failed")


def is_run(path: str | Path) -> bool:
    """A checkpoint file, or a run folder (its record or weights): not a folder of runs."""
    path = Path(path)
    return path.is_file() or any((path / name).is_file() for name in (RECORD, "best.safetensors", "last.safetensors"))


def _outcome(path: Path, action: str, reason: str | None = None, res: dict[str, Any] | None = None) -> dict[str, Any]:
    out = {"run_id": path.name, "path": str(path), "action": action, "reason": reason}
    if res is not None:
        out.update({k: res.get(k) for k in ("robust_acc", "clean_acc", "n", "ok", "seconds", "eval_flops")},
                   result=res)
    return out


def _resolved(request: EvalRequest, record) -> EvalRequest | None:
    """The request with the run's own settings, from its record's config (None when that is not a config)."""
    try:
        return request.for_config(config_from_dict(record.config))
    except (UserError, ValueError, TypeError, AttributeError):
        return None


def _decide(path: Path, request: EvalRequest, only_missing: bool,
            stale_s: float) -> tuple[dict[str, Any], Claim | None]:
    """Rank 0's decision for one path, as a plan every rank follows, and the claim it now holds (evaluating only)."""
    if not path.is_dir():
        return {"action": "evaluate"}, None  # a checkpoint file: nothing to claim
    record = read_record(path)
    if only_missing and (record is None or record.status is not Status.done):
        return {"action": "not_done", "reason": f"status {record.status if record else 'unknown'}"}, None
    held = acquire_claim(path, stale_s) if record is not None else None
    if record is not None and held is None:
        return {"action": "busy", "reason": "another worker holds its claim"}, None
    resolved = _resolved(request, record) if only_missing else None
    found = existing_evaluation(path, resolved) if resolved is not None else None
    if found is not None:
        with fence(path, held.holds, "claim"):
            action = "recorded" if record_evaluation(path, found) else "skipped"
        held.release()
        return {"action": action, "result": found}, None
    return {"action": "evaluate", "token": held.token if held else None}, held


def _eval_one(path: Path, request: EvalRequest, only_missing: bool, stale_s: float, info: DistInfo) -> dict[str, Any]:
    plan, held = _decide(path, request, only_missing, stale_s) if info.is_main else (None, None)
    plan = broadcast_object(plan)
    if plan["action"] != "evaluate":
        return _outcome(path, plan["action"], plan.get("reason"), plan.get("result"))
    claim = held or (Claim(path / CLAIM, plan["token"], heartbeat_s=0.0) if plan.get("token") else None)
    try:
        with fence(path, claim.holds, "claim") if claim else contextlib.nullcontext():
            res = evaluate(path, **request.as_kwargs())
            if info.is_main and path.is_dir():
                res["recorded"] = record_evaluation(path, res)
        return _outcome(path, "evaluated", res=res)
    except WriteFenced as err:
        return _outcome(path, "lost", str(err))
    except Exception as err:  # one run's failure is its outcome; the folder goes on (one run alone: raised)
        if not only_missing:
            raise
        log.warning("evaluation of %s failed: %s", path.name, "".join(traceback.format_exception(err)))
        return _outcome(path, "failed", f"{type(err).__name__}: {str(err).strip().splitlines()[0] if str(err) else ''}")
    finally:
        if held is not None:
            held.release()


def eval_runs(paths: Sequence[str | Path], request: EvalRequest, only_missing: bool = False,
              stale_s: float = DEFAULT_STALE_S) -> list[dict[str, Any]]:
    """Evaluate every path (a run folder or checkpoint) in turn, on every rank of the process group the environment
    describes (this process alone without one). Every rank calls it; the outcomes are the same on every rank.

    Args:
        paths: run folders or ``.safetensors`` checkpoints.
        request: the evaluation (:class:`~robustscale.evaluate.EvalRequest`; None fields: each run's own).
        only_missing: evaluate only done runs lacking this evaluation (a folder of runs); False: evaluate every path
            and raise on the first failure (one run).
        stale_s: a claim whose heartbeat is older than this is taken over.

    Returns:
        One ``{"run_id", "path", "action", "reason", ...}`` per path (:data:`ACTIONS`); an evaluated (or recorded,
        or skipped) run adds ``robust_acc``, ``clean_acc``, ``n``, ``ok``, ``seconds``, ``eval_flops`` and the
        whole ``result``.
    """
    info = init_distributed()
    try:
        return [_eval_one(Path(p), request, only_missing, stale_s, info) for p in paths]
    finally:
        if info.owns_group:
            cleanup()


class EvalJob:
    """:func:`eval_runs` as a submitit job (one task, or one per rank); requeued when preempted or timed out, when
    its AutoAttack resumes from the states the ranks saved."""

    def __init__(self, threads: int | None = None):
        self.threads = threads  # torch CPU threads (jobs sharing one machine, as with submitit's local executor)

    def __call__(self, paths: list[str], request: EvalRequest, only_missing: bool,
                 stale_s: float) -> list[dict[str, Any]]:
        if self.threads:
            torch.set_num_threads(self.threads)
        _join_job_group()
        return eval_runs(paths, request, only_missing, stale_s)

    def checkpoint(self, *args: Any, **kwargs: Any) -> DelayedSubmission:
        return DelayedSubmission(self, *args, **kwargs)


def _in_launched_group() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def evaluate_runs(paths: Sequence[str | Path], request: EvalRequest, *, only_missing: bool = False,
                  executor: ExecutorKind | str = ExecutorKind.local, procs_per_node: int = 1, nodes: int = 1,
                  slurm: dict[str, Any] | None = None, folder: str | Path = ".submitit",
                  stale_s: float = DEFAULT_STALE_S) -> list[dict[str, Any]]:
    """:func:`eval_runs` where asked: here (or as this rank of torchrun's group), on ``procs_per_node`` local
    processes, or as Slurm jobs (one per path, ``nodes`` x ``procs_per_node`` tasks each; submitit's files in
    ``folder``; ``slurm``: the sweep spec's ``slurm`` options, ``cluster: local`` included).

    Raises:
        RankFailed: a local rank died (its evaluation resumes from its AutoAttack states on the next call).
    """
    layout = DDPLayout(nodes, procs_per_node)
    if choice(ExecutorKind, executor, "executor") is ExecutorKind.slurm:
        return _on_slurm(paths, request, only_missing, stale_s, layout, slurm or {}, Path(folder))
    if nodes > 1:
        raise ParameterError(f"nodes {nodes}: a local evaluation runs on this machine only; use executor slurm for "
                             "several nodes", "nodes")
    if procs_per_node == 1 or _in_launched_group():
        if procs_per_node > 1:
            raise ParameterError("procs_per_node: this process is already one rank of a group (torchrun): drop it",
                                 "procs_per_node")
        return eval_runs(paths, request, only_missing, stale_s)
    check_local_ranks(procs_per_node)
    threads = threads_per_rank(available_cores(), 1, procs_per_node)
    return launch(eval_runs, ([str(p) for p in paths], request, only_missing, stale_s), procs_per_node,
                  threads=threads)


def _on_slurm(paths, request, only_missing, stale_s, layout: DDPLayout, slurm: dict[str, Any],
              folder: Path) -> list[dict[str, Any]]:
    """One job per path, waited for; a job that died without an outcome is its run's ``failed`` outcome (its
    AutoAttack resumes from the states its ranks saved on the next call)."""
    options = dict(slurm)
    runner = SlurmExecutor(folder, cluster=options.pop("cluster", None), wait=True, ddp=layout, **options)
    local = runner.cluster not in (None, "slurm")  # every job on this machine: share its cores
    threads = threads_per_rank(available_cores(), len(paths), layout.procs_per_node) if local else None
    n = len(paths)
    jobs = runner.submit(EvalJob(threads), [[str(p)] for p in paths], [request] * n, [only_missing] * n,
                         [stale_s] * n)
    outcomes = []
    for path, job in zip(paths, jobs):
        try:
            outcomes += job.task(0).result() if job.num_tasks > 1 else job.result()
        except Exception as err:  # the job died (a rank or node lost, out of requeues)
            outcomes.append(_outcome(Path(path), "failed", f"job {job.job_id} ended without an outcome "
                                                           f"({type(err).__name__}; logs in {folder})"))
    return outcomes
