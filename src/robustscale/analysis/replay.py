"""Replaying a strategy on a finished table: how close it gets to the full grid's alpha for a share of its compute.

A finished sweep is an oracle: choosing one of its runs reveals that run's row and spends its ``train_flops``. The
strategy sees only the revealed rows and, for the rest, the recipe columns and planned FLOPs; it chooses until the
next choice would overrun ``budget_frac`` of the grid's compute or, with ``target_ci``, until the law has stayed
pinned with an interval narrower than that (as ``sweep --adaptive --target-ci`` stops). The law is then fitted on the revealed
rows exactly as ``robustscale fit`` fits it (:func:`usable_runs`, :class:`ScalingLaw` with the same bins), with its
95% bootstrap interval from the revealed runs (:func:`robustscale.analysis.adaptive_law.law_interval`), and compared
with the law fitted on the whole table: the error of alpha, and whether the interval holds the full table's alpha.

The seeds of a replay perturb the strategy (its bootstrap ensemble and tie breaks), not the table: they are not
independent replications of the grid, so ``coverage`` over seeds describes this one table. How often the interval
holds the truth across grids is what ``benchmarks/adaptive_oos.py`` measures.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from robustscale.analysis._table import check_flops_sum, usable_runs
from robustscale.analysis.adaptive import STRATEGIES, make_strategy, search_features
from robustscale.analysis.adaptive_law import LEVEL, SETTLE_RUNS, law_interval, target_reached
from robustscale.analysis.scaling import ScalingLaw, check_bins
from robustscale.config_checks import MAX_SEED
from robustscale.errors import ParameterError, UserError, shown


def replay(table: pd.DataFrame, strategy: str, *, budget_frac: float, seeds: int = 8, first_seed: int = 0,
           batch_size: int = 1, metric: str = "autoattack_acc", bins: int = 19, min_acc: float | None = None,
           target_ci: float | None = None, bootstrap: int = 1000, settle_runs: int = SETTLE_RUNS,
           strategy_options: dict[str, Any] | None = None) -> dict:
    """Replay ``strategy`` on ``table`` for ``seeds`` seeds and summarise the alpha it recovers, with its interval.

    Args:
        table: a finished results table (see :func:`robustscale.analysis.read_table`).
        strategy: a name in :data:`robustscale.analysis.adaptive.STRATEGIES`.
        budget_frac: share of the grid's total ``train_flops`` the strategy may spend, in (0, 1].
        seeds: how many seeds, ``first_seed`` onwards.
        batch_size: runs chosen per round (a live sweep's number of workers).
        metric, bins, min_acc: as for ``robustscale fit``.
        target_ci: stop a seed early once the law has stayed pinned with an interval narrower than this (alpha
            units) over the last ``settle_runs`` runs chosen, as ``sweep --adaptive --target-ci`` stops.
        bootstrap: resamples of each interval (and of each round's refit under ``target_ci``).
        strategy_options: keyword arguments of the strategy beyond its seed, metric and bins (benchmarks).

    Returns:
        The ``robustscale replay --json`` object: ``full_alpha`` and ``full_alpha_ci``; per seed under ``seeds``
        ``alpha``, ``alpha_ci``, ``ci_width``, ``pinned``, ``not_pinned``, ``covered`` (the interval holds
        ``full_alpha``), ``alpha_error``, ``runs``, ``compute_frac``, ``stop_reason`` and ``chosen``; then
        ``coverage`` (share of seeds covered; a seed without an interval is not), ``median_alpha_error``,
        ``median_runs``, ``median_compute_frac``.
    """
    _check_options(strategy, budget_frac, seeds, batch_size, target_ci, bootstrap)
    if isinstance(settle_runs, bool) or not isinstance(settle_runs, int) or settle_runs < 0:
        raise ParameterError(f"settle_runs {shown(settle_runs)}: a number of runs, 0 or more", "settle_runs")
    _check_seeds(first_seed, seeds)
    check_bins(bins)
    full_alpha = _fit_alpha(table, metric, bins, min_acc)  # a table without a law is the user's to fix: say why
    law = _Law(metric, bins, min_acc, bootstrap)
    full = law.fit(table, seed=0)
    pool, excluded = oracle_pool(table)
    total_flops = check_flops_sum(pool["train_flops"], str(table.attrs.get("source", "table")))
    stops = _Stops(budget_frac * total_flops, batch_size, target_ci, settle_runs)
    episodes = [_episode(pool, strategy, seed, stops, law, strategy_options or {})
                for seed in range(first_seed, first_seed + seeds)]
    for episode in episodes:
        episode["compute_frac"] = episode.pop("spent_flops") / total_flops
        episode["alpha_error"] = None if episode["alpha"] is None else abs(episode["alpha"] - full_alpha)
        ci = episode["alpha_ci"]
        episode["covered"] = ci is not None and ci[0] <= full_alpha <= ci[1]
    return {
        "strategy": strategy, "budget_frac": budget_frac, "batch_size": batch_size, "metric": metric, "bins": bins,
        "source": str(table.attrs.get("source", "table")), "n_candidates": len(pool), "excluded": excluded,
        "total_flops": total_flops, "target_ci": target_ci, "level": LEVEL, "bootstrap": bootstrap,
        "full_alpha": full_alpha, "full_alpha_ci": full["alpha_ci"], "seeds": episodes,
        "coverage": float(np.mean([e["covered"] for e in episodes])),
        "median_alpha_error": _median([e["alpha_error"] for e in episodes], missing=math.inf),
        "median_runs": _median([e["runs"] for e in episodes]),
        "median_compute_frac": _median([e["compute_frac"] for e in episodes]),
    }


def law_alpha(table: pd.DataFrame, *, metric: str = "autoattack_acc", bins: int = 19,
              min_acc: float | None = None) -> float | None:
    """The envelope law's alpha exactly as ``robustscale fit`` computes it, or None when the runs give no law."""
    try:
        return _fit_alpha(table, metric, bins, min_acc)
    except UserError:
        return None


def _fit_alpha(table: pd.DataFrame, metric: str, bins: int, min_acc: float | None) -> float:
    runs = usable_runs(table, metric, min_acc)
    return float(ScalingLaw(bins=bins, bootstrap=0).fit(runs.flops, runs.accuracy).alpha_)


def oracle_pool(table: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, int]]:
    """The runs a strategy may choose: done, with a positive FLOP count and (when it has any) a complete recipe."""
    frame, excluded = table, {}
    if "status" in frame:
        done = frame["status"].astype(str).str.strip().str.lower() == "done"
        excluded["not_done"], frame = int((~done).sum()), frame[done]
    flops = pd.to_numeric(frame["train_flops"], errors="coerce")
    costed = np.isfinite(flops) & (flops > 0)
    excluded["no_flops"], frame = int((~costed).sum()), frame[costed].assign(train_flops=flops[costed])
    features = search_features(frame)
    complete = frame[features].notna().all(axis=1)
    excluded["incomplete_recipe"], frame = int((~complete).sum()), frame[complete]
    frame.attrs["features"] = features
    return frame, {k: v for k, v in excluded.items() if v}


class _Law:
    """The law fitted on revealed runs as ``fit`` fits it, with the interval and the pinned tests (one per replay)."""

    def __init__(self, metric: str, bins: int, min_acc: float | None, bootstrap: int):
        self.metric, self.bins, self.min_acc, self.bootstrap = metric, bins, min_acc, bootstrap

    def fit(self, runs: pd.DataFrame, seed: int, grid: pd.DataFrame | None = None) -> dict[str, Any]:
        return law_interval(runs, metric=self.metric, bins=self.bins, bootstrap=self.bootstrap, seed=seed,
                            min_acc=self.min_acc, grid=grid)


class _Stops:
    """When a seed stops choosing: the budget, and (with ``target_ci``) a law that stayed pinned and narrow enough
    (:func:`robustscale.analysis.adaptive_law.target_reached`, as a live sweep stops)."""

    def __init__(self, budget_flops: float, batch_size: int, target_ci: float | None, settle_runs: int):
        self.budget_flops, self.batch_size, self.target_ci = budget_flops, batch_size, target_ci
        self.settle_runs = settle_runs

    def reached(self, history: list[tuple[int, dict[str, Any]]]) -> bool:
        return self.target_ci is not None and target_reached(history, self.target_ci, self.settle_runs)


def _episode(pool: pd.DataFrame, name: str, seed: int, stops: _Stops, law: _Law,
             options: dict[str, Any]) -> dict[str, Any]:
    """One seed: choose rounds of ``batch_size`` until nothing left fits the budget (or the law is narrow enough);
    fit the law on what was seen."""
    strategy = make_strategy(name, seed=seed, metric=law.metric, bins=law.bins, **options)
    hidden = pool[[*pool.attrs["features"], "train_flops"]]  # what a strategy may know of an untrained recipe
    chosen: list = []
    spent, stop, fitted, history = 0.0, None, None, []
    while stop is None:
        open_ = hidden.drop(index=chosen)
        if open_.empty:
            stop = "grid_exhausted"
            break
        open_ = open_[open_["train_flops"] <= stops.budget_flops - spent]
        picks = strategy.select(pool.loc[chosen], open_, stops.batch_size) if len(open_) else []
        fitting = [p for p in _affordable(picks, open_, stops.budget_flops - spent)]
        if not fitting:
            stop = "budget"
            break
        chosen += fitting
        spent += float(pool.loc[fitting, "train_flops"].sum())
        if stops.target_ci is not None:
            fitted = law.fit(_revealed(pool, chosen), seed, pool)
            history.append((len(chosen), fitted))
            stop = "target_ci" if stops.reached(history) else None
    revealed = _revealed(pool, chosen)
    fitted = fitted if stop == "target_ci" else law.fit(revealed, seed, pool)
    ids = revealed["run_id"].astype(str).tolist() if "run_id" in revealed else [str(i) for i in chosen]
    return {"seed": seed, "alpha": fitted["alpha"], "alpha_ci": fitted["alpha_ci"], "ci_width": fitted["ci_width"],
            "law_points": fitted["law_points"], "pinned": fitted["pinned"], "not_pinned": fitted["not_pinned"],
            "runs": len(chosen), "spent_flops": spent, "stop_reason": stop, "chosen": ids}


def _revealed(pool: pd.DataFrame, chosen: list) -> pd.DataFrame:
    revealed = pool.loc[chosen]
    revealed.attrs["source"] = pool.attrs.get("source", "table")
    return revealed


def _affordable(picks: list, candidates: pd.DataFrame, left_flops: float) -> list:
    """The picks, in order, that still fit the budget; a label that is not a candidate is a bug in the strategy."""
    unknown = [p for p in picks if p not in candidates.index]
    if unknown or len(set(picks)) != len(picks):
        raise RuntimeError(f"strategy returned {picks!r}: labels must be distinct candidates")
    fitting = []
    for pick in picks:
        cost = float(candidates.at[pick, "train_flops"])
        if cost <= left_flops:
            fitting.append(pick)
            left_flops -= cost
    return fitting


def _check_options(strategy: str, budget_frac: float, seeds: int, batch_size: int, target_ci: float | None,
                   bootstrap: int) -> None:
    if strategy not in STRATEGIES:
        raise ParameterError(f"strategy {shown(strategy)}: unknown; choose one of {', '.join(STRATEGIES)}",
                             "strategy")
    if not 0 < budget_frac <= 1:
        raise ParameterError(f"budget_frac {budget_frac}: a share of the grid's compute must lie in (0, 1]",
                             "budget_frac")
    if seeds < 1:
        raise ParameterError(f"seeds {seeds}: replay at least one seed", "seeds")
    if batch_size < 1:
        raise ParameterError(f"batch_size {batch_size}: choose at least one run per round", "batch_size")
    if target_ci is not None and (isinstance(target_ci, bool) or not math.isfinite(target_ci) or target_ci <= 0):
        raise ParameterError(f"target_ci {shown(target_ci)}: must be a positive number (a width in alpha's units)",
                             "target_ci")
    if bootstrap < 2:
        raise ParameterError(f"bootstrap {bootstrap}: an interval needs at least 2 resamples (default 1000)",
                             "bootstrap")


def _check_seeds(first_seed: int, seeds: int) -> None:
    """Seeds are numpy's: 32-bit and non-negative, the last one included."""
    if isinstance(first_seed, bool) or not 0 <= first_seed <= MAX_SEED - seeds + 1:
        raise ParameterError(f"first_seed {first_seed}: the seeds first_seed ... first_seed + seeds - 1 must lie in "
                             f"0 .. {MAX_SEED}", "first_seed")


def _median(values: list, missing: float | None = None) -> float | None:
    """Median of per-seed figures; a seed without a law counts as ``missing`` (an infinite error)."""
    numbers = [missing if v is None else v for v in values]
    numbers = [v for v in numbers if v is not None]
    return float(np.median(numbers)) if numbers else None
