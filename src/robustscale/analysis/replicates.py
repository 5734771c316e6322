"""Seed replicates: which runs are the same recipe, how much a recipe's numbers move, and resampling that knows it.

The paper could not afford replicates and reports one run per recipe; a retrain of a published model can move its
AutoAttack accuracy by more than a point (pyautoattack issue #54: 51.70 vs 53.08). A sweep with ``seeds: [0, 1, 2]``
trains each recipe several times; runs that differ only in ``train.seed`` are one recipe. This module names the
recipes, summarises each one (mean, standard deviation, n, a t-interval per metric: ``results --by-recipe``) and
draws bootstrap indices that resample seeds within recipes, so a law's intervals include seed noise.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd
from scipy import stats

__all__ = ["RECIPE_COLUMNS", "SUMMARY_METRICS", "by_recipe", "has_replicates", "recipe_codes", "recipe_ids",
           "resample_recipes", "resample_within_recipes"]

# The knobs that define a recipe in a table without a ``recipe_id`` column (another framework's table): every
# canonical column that describes what was trained, none that was measured.
RECIPE_COLUMNS = ("dataset", "model", "params", "activation", "loss", "beta", "attack_steps", "epochs", "ema",
                  "synthetic", "synthetic_fraction")
# What ``results --by-recipe`` summarises, when the table has it: accuracies, losses, then costs.
SUMMARY_METRICS = ("clean_acc", "pgd40_acc", "autoattack_acc", "adv_loss", "adv_margin", "train_flops",
                   "samples_seen", "unique_images", "gpu_hours", "energy_kwh", "cost_usd", "co2_kg", "wall_s")


def recipe_ids(table: pd.DataFrame) -> pd.Series:
    """The recipe of every row: its ``recipe_id`` when the table has one, else its knob columns.

    robustscale's own table carries ``recipe_id`` (the run config without ``train.seed``). Another framework's table
    may name its own (``--map recipe_id=COLUMN``); without one, rows of a table with a ``seed`` column that agree on
    every knob in :data:`RECIPE_COLUMNS` are replicates. A table with neither has no known replicates: every row is
    its own recipe (resampling then reduces to the ordinary bootstrap).
    """
    if "recipe_id" in table and table["recipe_id"].notna().all():
        return table["recipe_id"].astype(str)
    knobs = [c for c in RECIPE_COLUMNS if c in table]
    if "seed" not in table or not knobs:
        return pd.Series([f"row{i}" for i in range(len(table))], index=table.index)
    return table[knobs].map(str).agg("|".join, axis=1)  # map(str): NaN becomes "nan", not a missing string


def recipe_codes(table: pd.DataFrame) -> np.ndarray:
    """:func:`recipe_ids` as integer codes 0..R-1 (what the resampling functions take)."""
    return pd.factorize(recipe_ids(table))[0]


def has_replicates(codes: np.ndarray) -> bool:
    """True when at least one recipe holds more than one run."""
    codes = np.asarray(codes)
    return codes.size > 0 and np.unique(codes).size < codes.size


def _layout(codes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows ordered by recipe, and each recipe's first position and size in that order."""
    order = np.argsort(codes, kind="stable")
    counts = np.bincount(codes)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    return order, starts, counts


def resample_within_recipes(codes: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Row indices where each recipe's runs are redrawn with replacement from that recipe's runs (seed noise only).

    Every recipe keeps its number of rows, so a law's point set keeps its shape; only which seed stands for the
    recipe changes. Used under the accuracy envelope, whose own bootstrap then resamples the envelope points.
    """
    codes = np.asarray(codes)
    order, starts, counts = _layout(codes)
    picks = starts[codes] + np.floor(rng.random(codes.size) * counts[codes]).astype(int)
    return order[picks]


def resample_recipes(codes: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Two-stage bootstrap: draw recipes with replacement, then each drawn recipe's seeds with replacement.

    Rows of one recipe are not independent points (they share everything but the seed), so resampling rows alone
    would understate the uncertainty; resampling recipes as groups, and seeds inside them, keeps both the spread
    between recipes and the seed noise in the intervals.
    """
    codes = np.asarray(codes)
    order, starts, counts = _layout(codes)
    chosen = rng.integers(0, counts.size, counts.size)
    groups = np.repeat(chosen, counts[chosen])
    picks = starts[groups] + np.floor(rng.random(groups.size) * counts[groups]).astype(int)
    return order[picks]


def _t_interval(mean: float, std: float, n: int, level: float) -> tuple[float, float]:
    """Student-t interval of a mean: n = 3 seeds widen it by t(0.975, 2) = 4.30 standard errors, not 1.96."""
    if n < 2 or not np.isfinite(std):
        return float("nan"), float("nan")
    half = float(stats.t.ppf(0.5 + level / 2.0, n - 1)) * std / np.sqrt(n)
    return mean - half, mean + half


def _metric_stats(values: pd.Series, level: float) -> dict[str, float]:
    values = pd.to_numeric(values, errors="coerce").dropna().astype(float)
    n = int(values.size)
    mean = float(values.mean()) if n else float("nan")
    std = float(values.std(ddof=1)) if n > 1 else float("nan")
    lo, hi = _t_interval(mean, std, n, level)
    return {"mean": mean, "std": std, "n": n, "ci_lo": lo, "ci_hi": hi}


def by_recipe(table: pd.DataFrame, level: float = 0.95, metrics: Sequence[str] | None = None) -> pd.DataFrame:
    """One row per recipe: its knobs, its seeds, and mean, std (n - 1), n and a t-interval for every metric.

    Only ``done`` runs count when the table has a status. Columns are ``recipe_id``, the knob columns present,
    ``n`` (runs), ``seeds``, then ``{metric}_mean``, ``_std``, ``_n``, ``_ci_lo`` and ``_ci_hi`` per metric (a
    metric with one run has no std or interval: NaN).

    Args:
        table: a results table (robustscale's, or another framework's through ``--map``).
        level: coverage of the intervals.
        metrics: columns to summarise; default: those of :data:`SUMMARY_METRICS` the table has.
    """
    if "status" in table:
        table = table[table["status"].astype(str).str.strip().str.lower() == "done"]
    table = table.assign(recipe_id=recipe_ids(table).to_numpy())
    metrics = [m for m in (metrics or SUMMARY_METRICS) if m in table]
    knobs = [c for c in RECIPE_COLUMNS if c in table]
    rows = []
    for recipe, group in table.groupby("recipe_id", sort=True):
        row = {"recipe_id": recipe, **{k: group[k].iloc[0] for k in knobs}, "n": len(group)}
        row["seeds"] = ",".join(str(s) for s in group["seed"].tolist()) if "seed" in group else ""
        for metric in metrics:
            row.update({f"{metric}_{key}": value for key, value in _metric_stats(group[metric], level).items()})
        rows.append(row)
    return pd.DataFrame(rows)
