"""Adaptive sweeps: train the runs of a spec in rounds a strategy chooses, until a budget or a narrow enough law.

The paper trained every run of its grid (320 runs, over ten thousand GPU-hours: section III-A) to fit one envelope law
that only the best run of each FLOP bin enters (section IV-B). :func:`adaptive_sweep` trains the spec's runs in rounds
of as many runs as there are workers, each round chosen by a strategy of :mod:`robustscale.analysis.adaptive` from the
runs finished so far and the untrained runs with their planned train FLOPs (the dry run's figures). Rounds run through
the same executors and :func:`robustscale.sweep.worker.run_one` as any sweep. After each round the law is refitted on
every run chosen so far (:func:`robustscale.analysis.adaptive_law.law_interval`), and the sweep stops when

* ``target_ci``: the chosen runs pin the law (:mod:`robustscale.analysis.adaptive_law`: enough FLOP bins, more
  than one recipe family where the grid has several, an interval no wider than ``|alpha|``) and alpha's 95% bootstrap
  interval is narrower than this, after every round of the last 8 runs chosen (``SETTLE_RUNS``); or
* ``budget``: no untrained run fits what is left of ``budget_flops`` (train FLOPs as the results table counts them,
  the law's x axis: PGD validation and AutoAttack are not counted; a chosen run costs its measured ``train_flops``, or
  its planned ones until it has them) or of ``budget_gpu_hours`` (what the chosen runs' records report, wall hours for
  a CPU run; a candidate's hours are predicted from its planned FLOPs at the rate the finished runs achieved, and
  before any run has finished the first round is not held back); or
* ``grid_exhausted``: every run of the spec was chosen; or
* ``interrupted``: a run of the round did not reach an end state (its worker died, or another worker holds it).

Resuming: every round's choice is written to ``OUT/adaptive_plan.json`` (:mod:`robustscale.store.adaptive_plan`)
before its runs start. A rerun replays the recorded rounds first, with the same runs (``run_one`` skips the done ones
and resumes an interrupted one from its checkpoint), and only then asks the strategy for new ones, which it answers
deterministically from the finished runs. A rerun with a larger budget continues the same plan; the strategy, its
seed, the metric and the bins are fixed for the folder. Only chosen runs get a run folder, so the results table holds
the chosen runs, marked with ``adaptive_round`` and ``adaptive_strategy``.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import pandas as pd

from robustscale.accounting.budget import run_flops_plan
from robustscale.accounting.flops import step_flops_for_config
from robustscale.analysis.adaptive import STRATEGIES, Strategy, make_strategy
from robustscale.analysis.adaptive_law import SETTLE_RUNS, law_interval, target_reached
from robustscale.config_checks import MAX_BINS, MAX_SEED
from robustscale.enums import AutoAttackVersion, ExecutorKind, Status, Tracker
from robustscale.errors import ParameterError, UserError, shown
from robustscale.store.adaptive_plan import AdaptivePlan, PlanRound, plan_lock, read_plan, write_plan
from robustscale.store.record import RECORD, RunRecord, now, read_record
from robustscale.store.results import record_row
from robustscale.store.rundir import DEFAULT_STALE_S, write_json_exclusive
from robustscale.store.safe_paths import run_folder
from robustscale.sweep.executors import Executor, make_executor
from robustscale.sweep.progress import SweepProgress
from robustscale.sweep.spec import SweepSpec, expand_runs, load_spec, run_output
from robustscale.sweep.worker import RUN_FILES, nothing_to_do, refuse_other_synthetic_data
from robustscale.tracking import require_installed

__all__ = ["adaptive_sweep", "Limits", "METRICS", "DEFAULT_STRATEGY"]

DEFAULT_STRATEGY = "envelope"
METRICS = ("autoattack_acc", "pgd40_acc", "clean_acc")  # what a run record measures, as the results table names it
_ENDED = (Status.done, Status.failed)


@dataclass(frozen=True)
class Limits:
    """When to stop choosing: any limit that is not None counts (at least one must be set)."""

    budget_flops: float | None = None
    budget_gpu_hours: float | None = None
    target_ci: float | None = None
    settle_runs: int = SETTLE_RUNS  # target_ci must hold over this many of the latest runs (adaptive_law)

    def check(self) -> "Limits":
        for name in ("budget_flops", "budget_gpu_hours", "target_ci"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not math.isfinite(value) or value <= 0):
                raise ParameterError(f"{name} {shown(value)}: must be a positive number", name)
        if isinstance(self.settle_runs, bool) or not isinstance(self.settle_runs, int) or self.settle_runs < 0:
            raise ParameterError(f"settle_runs {shown(self.settle_runs)}: a number of runs, 0 or more", "settle_runs")
        if self.budget_flops is None and self.budget_gpu_hours is None and self.target_ci is None:
            raise ParameterError("an adaptive sweep needs a stopping rule: budget_flops, budget_gpu_hours or target_ci "
                                 "(e.g. budget_flops 1e15)", "budget_flops", "budget_gpu_hours", "target_ci")
        return self


@dataclass(frozen=True)
class Candidate:
    """One run of the grid: its resolved config and its row as the strategy sees it (planned ``train_flops``)."""

    run_id: str
    config: dict[str, Any]
    row: dict[str, Any]

    @property
    def planned_flops(self) -> float:
        return float(self.row["train_flops"])


@dataclass
class Spent:
    """What the chosen runs have shown and cost so far."""

    finished: pd.DataFrame  # chosen runs at an end state, as results-table rows (train_flops never missing)
    flops: float
    gpu_hours: float
    hours_per_flop: float | None  # the finished runs' rate, to predict a candidate's hours


def adaptive_sweep(spec_path: str | Path, out: str | Path | None = None, *, strategy: str | None = None,
                   seed: int | None = None, budget_flops: float | None = None, budget_gpu_hours: float | None = None,
                   target_ci: float | None = None, metric: str | None = None, bins: int | None = None,
                   executor: ExecutorKind | str = ExecutorKind.local, workers: int | None = None,
                   round_size: int | None = None, retry_failed: bool = False, stale_s: float | None = None,
                   slurm: dict[str, Any] | None = None, progress: bool = False, nodes: int | None = None,
                   procs_per_node: int | None = None, trackers: Sequence[Tracker] | None = None,
                   settle_runs: int = SETTLE_RUNS) -> dict[str, Any]:
    """Train the runs of a spec in rounds chosen by ``strategy`` until a limit is reached; resumable.

    Args:
        spec_path: the sweep spec (YAML); its runs are the candidates.
        out: folder for the run folders and the plan (default: the spec's ``out``, else ``runs/<spec name>``).
        strategy: a name in :data:`robustscale.analysis.adaptive.STRATEGIES` (default: the folder's plan, else
            ``envelope``).
        seed: the strategy's seed (default: the plan's, else 0).
        budget_flops, budget_gpu_hours, target_ci: the stopping rules (see the module); at least one.
        metric: the accuracy the law is fitted to (default: the plan's, else ``autoattack_acc``, or ``pgd40_acc``
            when the spec's runs skip AutoAttack).
        bins: FLOP bins of the law (default: the plan's, else the paper's 19).
        executor, workers, retry_failed, stale_s, slurm, nodes, procs_per_node, trackers: as for
            :func:`robustscale.sweep.sweep`.
        round_size: runs per round (default: ``workers``, else the spec's ``workers``, else 1).
        settle_runs: ``target_ci`` must have held after every round of this many latest runs.
        progress: show the live progress view and one line per round on stderr.

    Returns:
        The ``sweep --adaptive --json`` object: ``rounds`` (per round: ``run_ids``, cumulative ``spent_flops`` and
        ``spent_gpu_hours``, ``alpha``, ``alpha_ci``, ``ci_width``, ``pinned``, ``not_pinned``), ``runs_trained`` (by
        this call), ``chosen``, ``spent_flops``, ``spent_gpu_hours``, ``compute_frac``, ``alpha``, ``alpha_ci``,
        ``pinned``, ``not_pinned`` and ``stop_reason``.
    """
    limits = Limits(budget_flops, budget_gpu_hours, target_ci, settle_runs).check()
    _check_choices(strategy, seed, metric, bins, round_size)
    spec = load_spec(spec_path)
    out = Path(out) if out is not None else spec.out or Path("runs") / spec.name
    grid = grid_candidates(spec, out, trackers)
    require_installed(Tracker(t) for c in grid.values() for t in c.config["output"]["trackers"])
    workers = workers if workers is not None else spec.workers or 1
    runner = make_executor(executor, workers=workers, folder=out / ".submitit", slurm={**spec.slurm, **(slurm or {})},
                           ddp=spec.layout(nodes, procs_per_node))
    if out.exists() and not out.is_dir():
        raise ParameterError(f"out '{shown(out)}' is a file: pass a folder for the run folders", "out")
    out.mkdir(parents=True, exist_ok=True)
    refuse_other_synthetic_data(out, [(out / rid, c.config) for rid, c in grid.items() if (out / rid).is_dir()])
    with plan_lock(out):
        plan = _open_plan(out, spec, grid, strategy, seed, metric, bins)
        stale_s = float(stale_s or spec.stale_after_s or DEFAULT_STALE_S)
        return _AdaptiveSweep(out, grid, plan, limits, runner, round_size or workers, retry_failed=retry_failed,
                              stale_s=stale_s, progress=progress).run()


def _check_choices(strategy: str | None, seed: int | None, metric: str | None, bins: int | None,
                   round_size: int | None) -> None:
    """Reject a bad name or count before anything is read or written."""
    if strategy is not None and strategy not in STRATEGIES:
        raise ParameterError(f"strategy {shown(strategy)}: unknown; choose one of {', '.join(STRATEGIES)}",
                             "strategy")
    if seed is not None and not 0 <= seed <= MAX_SEED:
        raise ParameterError(f"seed {seed}: use a non-negative integer up to {MAX_SEED}", "seed")
    if metric is not None and metric not in METRICS:
        raise ParameterError(f"metric {shown(metric)}: an adaptive sweep fits one of {', '.join(METRICS)}", "metric")
    if bins is not None and not 2 <= bins <= MAX_BINS:
        raise ParameterError(f"bins {bins}: the law needs 2 to {MAX_BINS} FLOP bins (the paper: 19)", "bins")
    if round_size is not None and round_size < 1:
        raise ParameterError(f"round_size {round_size}: train at least one run per round", "round_size")


def grid_candidates(spec: SweepSpec, out: Path, trackers: Sequence[Tracker] | None = None) -> dict[str, Candidate]:
    """Every run of the spec as a candidate: the config it trains with (output under ``out``) and the row a strategy
    sees, its recipe columns as the results table names them, with the parameter count and planned train FLOPs
    counted on the meta device (:func:`robustscale.accounting.budget.run_flops_plan`, the dry run's figures)."""
    grid = {}
    for run in expand_runs(spec):
        config = run_output(run, out, spec, trackers)  # as a plain sweep writes it
        step = step_flops_for_config(run.config)
        record = RunRecord.new(config)
        record.params = step.params
        row = record_row(record, out / run.run_id)
        row["run_id"], row["train_flops"] = run.run_id, float(run_flops_plan(run.config, step)["train_flops"])
        grid[run.run_id] = Candidate(run.run_id, config, row)
    return grid


def _default_metric(grid: dict[str, Candidate]) -> str:
    """AutoAttack accuracy, as the paper fits, unless no run of the spec measures it."""
    skips = all(c.config["eval"]["autoattack"] == AutoAttackVersion.none.value for c in grid.values())
    return "pgd40_acc" if skips else "autoattack_acc"


def _open_plan(out: Path, spec: SweepSpec, grid: dict[str, Candidate], strategy: str | None, seed: int | None,
               metric: str | None, bins: int | None) -> AdaptivePlan:
    """The folder's plan, checked against this call's choices, or a new one."""
    plan = read_plan(out, strategies=STRATEGIES, metrics=METRICS)  # a name the file gives is the file's, not a flag's
    if plan is None:
        plan = AdaptivePlan(strategy or DEFAULT_STRATEGY, 0 if seed is None else int(seed),
                            metric or _default_metric(grid), 19 if bins is None else int(bins), spec=str(spec.path))
        write_plan(out, plan)
        return plan
    for name, given, kept in (("strategy", strategy, plan.strategy), ("seed", seed, plan.seed),
                              ("metric", metric, plan.metric), ("bins", bins, plan.bins)):
        if given is not None and given != kept:
            raise ParameterError(f"{name} {shown(given)}: '{shown(out)}' holds an adaptive sweep planned with {name} "
                                 f"{shown(kept)}; pass {shown(kept)} (or leave it out) to continue it, or use a new "
                                 "--out", name)
    unknown = [rid for rid in plan.chosen_ids() if rid not in grid]
    if unknown:
        raise UserError(f"'{shown(out)}' holds an adaptive sweep that chose run {shown(unknown[0])}, which the spec "
                        f"'{shown(spec.path)}' does not expand to: rerun it with the spec it was planned with, or use "
                        "a new --out")
    return plan


class _AdaptiveSweep:
    """The loop: replay the recorded rounds, then choose, record, train and refit until a limit stops it."""

    def __init__(self, out: Path, grid: dict[str, Candidate], plan: AdaptivePlan, limits: Limits, runner: Executor,
                 round_size: int, *, retry_failed: bool, stale_s: float, progress: bool):
        self.out, self.grid, self.plan, self.limits, self.runner = out, grid, plan, limits, runner
        self.round_size, self.retry_failed, self.stale_s, self.progress = round_size, retry_failed, stale_s, progress
        self.strategy: Strategy = make_strategy(plan.strategy, seed=plan.seed, metric=plan.metric, bins=plan.bins)
        self.grid_flops = sum(c.planned_flops for c in grid.values())
        self.grid_rows = pd.DataFrame([c.row for c in grid.values()])  # the families the grid holds
        self.trained: list[str] = []
        self.rounds: list[dict[str, Any]] = []

    def run(self) -> dict[str, Any]:
        stop = None
        for entry in list(self.plan.rounds):  # chosen by earlier calls: finished with the same runs, never re-chosen
            if not self._play(entry, replayed=True):
                stop = "interrupted"
                break
        while stop is None:
            stop = self._target_reached()
            if stop is None:
                stop, entry = self._next_round()
                if entry is not None and not self._play(entry, replayed=False):
                    stop = "interrupted"
        self.plan.stop_reason = stop
        write_plan(self.out, self.plan)
        return self._summary(stop)

    def _play(self, entry: PlanRound, *, replayed: bool) -> bool:
        """Train a round, refit, record; whether every run of the round reached an end state."""
        outcomes = self._train(entry.run_ids)
        return self._end_round(entry, self._spent(upto=entry.round), replayed=replayed, outcomes=outcomes)

    def _target_reached(self) -> str | None:
        history = [(r["runs"], r) for r in self.rounds]
        if self.limits.target_ci is not None and target_reached(history, self.limits.target_ci,
                                                                self.limits.settle_runs):
            return "target_ci"
        return None

    # -------------------------------------------------------------------------------------- choosing

    def _next_round(self) -> tuple[str | None, PlanRound | None]:
        """Choose and record the next round, or say why there is none."""
        chosen = set(self.plan.chosen_ids())
        open_ = [c for rid, c in self.grid.items() if rid not in chosen]
        if not open_:
            return "grid_exhausted", None
        picks = self._choose(self._spent(), open_)
        if not picks:
            return "budget", None
        entry = PlanRound(len(self.plan.rounds) + 1, picks, chosen=now(),
                          planned_flops=sum(self.grid[rid].planned_flops for rid in picks))
        self.plan.rounds.append(entry)
        write_plan(self.out, self.plan)  # before any of its runs starts: a kill from here on replays this choice
        return None, entry

    def _choose(self, spent: Spent, open_: Sequence[Candidate]) -> list[str]:
        """Up to ``round_size`` runs the strategy ranks first among those that fit the budget left, together."""
        left_flops = self._left(self.limits.budget_flops, spent.flops)
        left_hours = self._left(self.limits.budget_gpu_hours, spent.gpu_hours)

        def hours(flops: float) -> float:
            return flops * spent.hours_per_flop if spent.hours_per_flop else 0.0

        fitting = [c for c in open_ if c.planned_flops <= left_flops and hours(c.planned_flops) <= left_hours]
        if not fitting:
            return []
        candidates = pd.DataFrame([c.row for c in fitting], index=[c.run_id for c in fitting])
        picks = []
        for rid in self.strategy.select(spent.finished, candidates, self.round_size):
            cost = self.grid[rid].planned_flops
            if cost <= left_flops and hours(cost) <= left_hours:
                picks.append(rid)
                left_flops, left_hours = left_flops - cost, left_hours - hours(cost)
        return picks

    def _chosen(self, upto: int | None = None) -> list[str]:
        return [rid for r in self.plan.rounds if upto is None or r.round <= upto for rid in r.run_ids]

    @staticmethod
    def _left(budget: float | None, spent: float) -> float:
        return math.inf if budget is None else budget - spent

    # -------------------------------------------------------------------------------------- training

    def _train(self, run_ids: Sequence[str]) -> list[dict[str, Any]]:
        """Bring the round's runs to an end state through the executor (folders created for these runs only)."""
        tasks, dirs = [], []
        for rid in run_ids:
            config = self.grid[rid].config
            run_dir = run_folder(self.out, rid, RUN_FILES)
            run_dir.mkdir(parents=True, exist_ok=True)
            write_json_exclusive(run_dir / RECORD, RunRecord.new(config).to_dict())
            dirs.append(run_dir)
            if not nothing_to_do(read_record(run_dir), self.retry_failed):
                tasks.append((run_dir, config))
        with SweepProgress(dirs, enabled=self.progress and sys.stdout.isatty()):  # elsewhere: one line per round
            outcomes = self.runner.run(tasks, retry_failed=self.retry_failed, stale_s=self.stale_s) if tasks else []
        self.trained += [o["run_id"] for o in outcomes if o["action"] == "trained"]
        return outcomes

    def _spent(self, upto: int | None = None) -> Spent:
        """The rows and costs of the runs chosen so far (up to round ``upto``), read from their records."""
        rows, flops, hours, rate_flops, rate_hours = [], 0.0, 0.0, 0.0, 0.0
        for rid in self._chosen(upto):
            record, planned = read_record(self.out / rid), self.grid[rid].planned_flops
            if record is None or record.status not in _ENDED:
                flops += planned  # chosen, not ended (interrupted): count what it will cost
                continue
            measured = record.accounting.train_flops
            run_hours = _device_hours(record)
            flops, hours = flops + (measured or planned), hours + run_hours
            if record.status is Status.done and measured:
                rate_flops, rate_hours = rate_flops + measured, rate_hours + run_hours
            row = record_row(record, self.out / rid)
            row["train_flops"] = float(measured or planned)
            rows.append(row)
        finished = pd.DataFrame(rows, index=[r["run_id"] for r in rows])
        finished.attrs["source"] = str(self.out)
        return Spent(finished, flops, hours, rate_hours / rate_flops if rate_flops and rate_hours else None)

    # -------------------------------------------------------------------------------------- after a round

    def _end_round(self, entry: PlanRound, spent: Spent, *, replayed: bool, outcomes: list[dict[str, Any]]) -> bool:
        """Record what the round cost and the law after it (in the plan and in this call's rounds)."""
        law = law_interval(spent.finished, metric=self.plan.metric, bins=self.plan.bins, grid=self.grid_rows)
        ended = all(_status(self.out / rid) in _ENDED for rid in entry.run_ids)
        entry.ended = entry.ended or (now() if ended else None)
        entry.spent_flops, entry.spent_gpu_hours = spent.flops, spent.gpu_hours
        entry.alpha, entry.alpha_ci, entry.law_points = law["alpha"], law["alpha_ci"], law["law_points"]
        write_plan(self.out, self.plan)
        trained = {o["run_id"] for o in outcomes if o["action"] == "trained"}
        self.rounds.append({
            "round": entry.round, "run_ids": list(entry.run_ids), "replayed": replayed,
            "trained": [rid for rid in entry.run_ids if rid in trained], "ended": ended,
            "runs": len(self._chosen(entry.round)),
            "spent_flops": spent.flops, "spent_gpu_hours": spent.gpu_hours,
            "compute_frac": spent.flops / self.grid_flops if self.grid_flops else None, **law})
        if self.progress:
            print(_round_line(self.rounds[-1]), file=sys.stderr, flush=True)
        return ended

    def _summary(self, stop: str | None) -> dict[str, Any]:
        chosen = self.plan.chosen_ids()
        statuses = {rid: _status(self.out / rid) for rid in chosen}
        last = self.rounds[-1] if self.rounds else {}
        spent = self._spent()
        records = {rid: read_record(self.out / rid) for rid, s in statuses.items() if s is Status.failed}
        return {
            "out": str(self.out), "adaptive": True, "strategy": self.plan.strategy, "seed": self.plan.seed,
            "metric": self.plan.metric, "bins": self.plan.bins, "round_size": self.round_size,
            "executor": self.runner.describe(), "candidates": len(self.grid), "grid_flops": self.grid_flops,
            **{k: getattr(self.limits, k) for k in ("budget_flops", "budget_gpu_hours", "target_ci")},
            "rounds": self.rounds, "chosen": chosen, "runs_trained": self.trained,
            "done": [rid for rid, s in statuses.items() if s is Status.done],
            "failed": list(records), "reasons": {rid: r.reason for rid, r in records.items() if r is not None},
            "spent_flops": spent.flops, "spent_gpu_hours": spent.gpu_hours,
            "compute_frac": spent.flops / self.grid_flops if self.grid_flops else None,
            "alpha": last.get("alpha"), "alpha_ci": last.get("alpha_ci"), "ci_width": last.get("ci_width"),
            "pinned": last.get("pinned", False), "not_pinned": last.get("not_pinned", ["no_law: no round yet"]),
            "stop_reason": stop,
        }


def _status(run_dir: Path) -> Status | None:
    record = read_record(run_dir)
    return record.status if record is not None else None


def _device_hours(record: RunRecord) -> float:
    """GPU-hours of a run; a CPU run (no GPU) counts its wall hours, so a budget in hours also bounds CPU sweeps."""
    accounting, gpus = record.accounting, record.hardware.gpu_count
    if gpus:
        return float(accounting.gpu_hours if accounting.gpu_hours is not None else accounting.wall_s * gpus / 3600)
    return float(accounting.wall_s or 0.0) / 3600


def _round_line(entry: dict[str, Any]) -> str:
    """``round 3: 2 runs (1 trained), 4.1e+09 FLOPs so far (21% of the grid), alpha 0.052 [0.031, 0.077]``."""
    law = "no law yet" if entry["alpha"] is None else f"alpha {entry['alpha']:.4g}"
    if entry["alpha_ci"] is not None:
        law += f" [{entry['alpha_ci'][0]:.4g}, {entry['alpha_ci'][1]:.4g}]"
    if entry["alpha"] is not None and not entry["pinned"]:
        law += f", not pinned ({', '.join(reason.split(':')[0] for reason in entry['not_pinned'])})"
    frac = "" if entry["compute_frac"] is None else f" ({entry['compute_frac']:.0%} of the grid)"
    runs = len(entry["run_ids"])
    return (f"round {entry['round']}: {runs} run{'s' if runs != 1 else ''} ({len(entry['trained'])} trained), "
            f"{entry['spent_flops']:.3g} FLOPs so far{frac}, {law}")
