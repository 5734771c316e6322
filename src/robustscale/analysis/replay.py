"""Replaying a strategy on a finished table: how close it gets to the full grid's alpha for a share of its compute.

A finished sweep is an oracle: choosing one of its runs reveals that run's row and spends its ``train_flops``. The
strategy sees only the revealed rows and, for the rest, the recipe columns and planned FLOPs; it chooses until the
next choice would overrun ``budget_frac`` of the grid's compute. The law is then fitted on the revealed rows exactly
as ``robustscale fit`` fits it (:func:`usable_runs`, :class:`ScalingLaw` with the same bins), and compared with the
law fitted on the whole table.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from robustscale.analysis._table import check_flops_sum, usable_runs
from robustscale.analysis.adaptive import STRATEGIES, make_strategy, search_features
from robustscale.analysis.scaling import ScalingLaw, check_bins
from robustscale.config_checks import MAX_SEED
from robustscale.errors import ParameterError, UserError, shown


def replay(table: pd.DataFrame, strategy: str, *, budget_frac: float, seeds: int = 8, first_seed: int = 0,
           batch_size: int = 1, metric: str = "autoattack_acc", bins: int = 19, min_acc: float | None = None) -> dict:
    """Replay ``strategy`` on ``table`` for ``seeds`` seeds and summarise the alpha it recovers.

    Args:
        table: a finished results table (see :func:`robustscale.analysis.read_table`).
        strategy: a name in :data:`robustscale.analysis.adaptive.STRATEGIES`.
        budget_frac: share of the grid's total ``train_flops`` the strategy may spend, in (0, 1].
        seeds: how many seeds, ``first_seed`` onwards.
        batch_size: runs chosen per round (a live sweep's number of workers).
        metric, bins, min_acc: as for ``robustscale fit``.

    Returns:
        The ``robustscale replay --json`` object: ``full_alpha``, per-seed ``alpha``, ``alpha_error``, ``runs``,
        ``compute_frac`` and ``chosen`` under ``seeds``, and ``median_alpha_error``, ``median_runs``,
        ``median_compute_frac``.
    """
    _check_options(strategy, budget_frac, seeds, batch_size)
    _check_seeds(first_seed, seeds)
    check_bins(bins)
    full_alpha = _fit_alpha(table, metric, bins, min_acc)  # a table without a law is the user's to fix: say why
    pool, excluded = oracle_pool(table)
    total_flops = check_flops_sum(pool["train_flops"], str(table.attrs.get("source", "table")))
    episodes = [_episode(pool, strategy, seed, budget_frac * total_flops, batch_size, metric, bins, min_acc)
                for seed in range(first_seed, first_seed + seeds)]
    for episode in episodes:
        episode["compute_frac"] = episode.pop("spent_flops") / total_flops
        episode["alpha_error"] = None if episode["alpha"] is None else abs(episode["alpha"] - full_alpha)
    return {
        "strategy": strategy, "budget_frac": budget_frac, "batch_size": batch_size, "metric": metric, "bins": bins,
        "source": str(table.attrs.get("source", "table")), "n_candidates": len(pool), "excluded": excluded,
        "total_flops": total_flops, "full_alpha": full_alpha, "seeds": episodes,
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


def _episode(pool: pd.DataFrame, name: str, seed: int, budget_flops: float, batch_size: int, metric: str,
             bins: int, min_acc: float | None) -> dict[str, Any]:
    """One seed: choose rounds of ``batch_size`` until nothing left fits the budget; fit the law on what was seen."""
    strategy = make_strategy(name, seed=seed, metric=metric, bins=bins)
    hidden = pool[[*pool.attrs["features"], "train_flops"]]  # what a strategy may know of an untrained recipe
    chosen: list = []
    spent = 0.0
    while True:
        open_ = hidden.drop(index=chosen)
        open_ = open_[open_["train_flops"] <= budget_flops - spent]
        picks = strategy.select(pool.loc[chosen], open_, batch_size) if len(open_) else []
        fitting = [p for p in _affordable(picks, open_, budget_flops - spent)]
        if not fitting:
            break
        chosen += fitting
        spent += float(pool.loc[fitting, "train_flops"].sum())
    revealed = pool.loc[chosen]
    revealed.attrs["source"] = pool.attrs.get("source", "table")
    ids = revealed["run_id"].astype(str).tolist() if "run_id" in revealed else [str(i) for i in chosen]
    return {"seed": seed, "alpha": law_alpha(revealed, metric=metric, bins=bins, min_acc=min_acc),
            "runs": len(chosen), "spent_flops": spent, "chosen": ids}


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


def _check_options(strategy: str, budget_frac: float, seeds: int, batch_size: int) -> None:
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
