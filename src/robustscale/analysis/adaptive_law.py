"""The envelope law as an adaptive sweep learns it: alpha, its interval, and whether the revealed runs pin it.

An adaptive sweep (:mod:`robustscale.sweep.adaptive`) refits the law after every round to decide whether to go on
(``--target-ci``); the replay harness (:mod:`robustscale.analysis.replay`) fits it on the runs a strategy revealed;
the report draws the same fits from the finished table's ``adaptive_round`` column
(:mod:`robustscale.analysis.adaptive_figures`). All call :func:`law_interval`, so the figure shows exactly the
intervals the sweep stopped on. The fit is ``robustscale fit``'s: :func:`usable_runs`, then :class:`ScalingLaw` with a
seeded pairs bootstrap of the envelope points; where the runs hold replicate seeds of a recipe, each draw first
redraws every recipe's seeds, then takes the envelope again (as ``fit`` does), so the interval carries seed noise.

**Pinned.** A handful of revealed runs can give a narrow interval by luck (a few points on a line), and a wide one
says nothing on its own. The law counts as *pinned* by the revealed runs only when all of these hold; otherwise
``not_pinned`` names each that fails, and a sweep never stops on ``--target-ci`` while one does:

* ``no_law``: at least three FLOP bins hold a usable run (a line needs three points to have an interval);
* ``too_few_bins``: at least :data:`MIN_PINNED_BINS` bins do (with fewer, a two-parameter fit keeps at most two
  residual degrees of freedom, and a bootstrap of four points redraws the same point or two in most draws);
* ``one_family``: when the grid holds several recipe families (:data:`FAMILY_AXES`: the choices that shift the whole
  accuracy-against-compute curve, where model size, attack steps and epochs move a run along it), the revealed runs
  show more than one, so something revealed says the other families are not better;
* ``wide``: the interval is at most :data:`MAX_REL_WIDTH` times ``|alpha|`` wide. Wider, it holds both alpha and
  zero or spans more than alpha itself: the runs do not say how fast accuracy grows with compute, only that it may.

**Stopping on a target width** (:func:`target_reached`, ``--target-ci W``): the law must have been pinned with an
interval narrower than W after every round of the last :data:`SETTLE_RUNS` runs chosen, not after one round only.
An interval is a statement about the runs revealed, not about the runs a strategy has not tried yet; a strategy that
has just reached the top of the grid can hold a pinned, narrow law before it has found the envelope's best runs.
The runs it then chooses as most promising either move the law (and the stop waits) or confirm it. Measured on the
out-of-sample benchmark's tuning grids (``benchmarks/adaptive_oos.py --dev``, W = half of alpha): stopping at the
first narrow round, the interval held the full grid's alpha in 21 of 25 paper-like grids; with the 8-run wait, 24 of
25, at a median fifth of the grid's compute (BENCHMARKS.md has the evaluation grids' figures).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import pandas as pd

from robustscale.analysis._table import check_flops_sum, usable_runs
from robustscale.analysis.replicates import recipe_codes
from robustscale.analysis.scaling import ScalingLaw
from robustscale.errors import UserError

__all__ = ["ROUND_COLUMN", "STRATEGY_COLUMN", "FAMILY_AXES", "MIN_PINNED_BINS", "MAX_REL_WIDTH", "LEVEL",
           "SETTLE_RUNS", "law_interval", "target_reached", "families", "rounds_of_table", "is_adaptive"]

ROUND_COLUMN, STRATEGY_COLUMN = "adaptive_round", "adaptive_strategy"  # the results table's adaptive columns
LEVEL = 0.95  # coverage the intervals aim at
MIN_PINNED_BINS = 5  # FLOP bins holding a usable run before the law can count as pinned
MAX_REL_WIDTH = 1.0  # X of issue 31: an interval wider than X * |alpha| does not pin the law
SETTLE_RUNS = 8  # --target-ci: pinned and narrow enough after every round of the last this many runs
FAMILY_AXES = ("activation", "synthetic", "loss")  # a recipe family: the paper's curve-shifting choices (Fig. 2)
MAX_ROUND = 1_000_000  # a round trains at least one run: more rounds than any grid has runs


def law_interval(table: pd.DataFrame, *, metric: str = "autoattack_acc", bins: int = 19, bootstrap: int = 1000,
                 seed: int = 0, min_acc: float | None = None, grid: pd.DataFrame | None = None,
                 resample_seeds: bool = True) -> dict[str, Any]:
    """Alpha of the envelope law on ``table`` with its 95% bootstrap interval, and whether the runs pin it.

    Args:
        table: the runs revealed so far (a results table's rows).
        metric, bins, min_acc: as for ``robustscale fit``.
        bootstrap, seed: resamples of the interval and their seed.
        grid: every run the sweep could choose (revealed or not; recipe columns suffice): the families it holds, for
            the ``one_family`` test. None: that test is skipped.
        resample_seeds: where ``table`` holds several seeds of a recipe, each draw redraws them first.

    Returns:
        ``{"alpha", "alpha_ci": [lo, hi], "ci_width", "law_points", "pinned", "not_pinned"}``: alpha and the interval
        are None while the runs give no law yet (fewer than three FLOP bins hold a usable run), so a sweep can ask
        after its first round; ``not_pinned`` lists why the law is not pinned (module docstring), empty when it is.
    """
    law, runs = None, None
    try:
        runs = usable_runs(table, metric, min_acc)
        groups = recipe_codes(runs.frame) if resample_seeds else None
        law = ScalingLaw(bins=bins, bootstrap=bootstrap, seed=seed).fit(runs.flops, runs.accuracy, groups=groups)
    except UserError:
        pass
    ci = law.ci_["alpha"] if law is not None and law.ci_ and np.all(np.isfinite(law.ci_["alpha"])) else None
    out = {"alpha": None if law is None else law.alpha_, "alpha_ci": ci,
           "ci_width": None if ci is None else ci[1] - ci[0], "law_points": None if law is None else law.n_}
    reasons = _not_pinned(out, None if runs is None else runs.frame, grid)
    return {**out, "pinned": not reasons, "not_pinned": reasons}


def _not_pinned(law: dict[str, Any], usable: pd.DataFrame | None, grid: pd.DataFrame | None) -> list[str]:
    """Why the revealed runs do not pin the law (module docstring), one ``code: reason`` string each."""
    if law["alpha"] is None:
        return ["no_law: fewer than three FLOP bins hold a usable run"]
    reasons = []
    if law["law_points"] < MIN_PINNED_BINS:
        reasons.append(f"too_few_bins: {law['law_points']} FLOP bins hold a usable run; the law needs "
                       f"{MIN_PINNED_BINS}")
    if grid is not None and usable is not None:
        seen, planned = families(usable), families(grid)
        if planned.nunique() > 1 and seen.nunique() < 2:
            reasons.append(f"one_family: every usable run is {seen.iloc[0]}, of the grid's {planned.nunique()} "
                           "recipe families")
    width, alpha = law["ci_width"], law["alpha"]
    if width is None or width > MAX_REL_WIDTH * abs(alpha):
        what = "no interval" if width is None else f"the interval is {width:.3g} wide"
        reasons.append(f"wide: {what}, more than {MAX_REL_WIDTH:g} x |alpha| ({abs(alpha):.3g})")
    return reasons


def target_reached(history: Sequence[tuple[int, dict[str, Any]]], target_ci: float,
                   settle_runs: int = SETTLE_RUNS) -> bool:
    """Whether a sweep may stop on ``target_ci`` (module docstring).

    Args:
        history: per round so far, oldest first, the runs chosen up to it and the law after it (:func:`law_interval`).
        target_ci: the width alpha's interval must be under.
        settle_runs: how many of the latest runs the law must have stayed pinned and narrow over.
    """
    if not history:
        return False
    now = history[-1][0]
    if history[0][0] > now - settle_runs:
        return False  # the sweep has not yet chosen settle_runs runs since its first law
    return all(law["pinned"] and law["ci_width"] < target_ci for runs, law in history if runs >= now - settle_runs)


def families(table: pd.DataFrame) -> pd.Series:
    """Each run's recipe family, ``activation=silu, synthetic=True, loss=trades`` (the :data:`FAMILY_AXES` it has)."""
    axes = [a for a in FAMILY_AXES if a in table]
    names = pd.Series("", index=table.index)
    for axis in axes:
        names += ("" if axis == axes[0] else ", ") + f"{axis}=" + table[axis].astype(str).str.strip().str.lower()
    return names if axes else names + "one family"


def is_adaptive(table: pd.DataFrame) -> bool:
    """Whether the table came from an adaptive sweep (some run carries the round that chose it)."""
    return ROUND_COLUMN in table and pd.to_numeric(table[ROUND_COLUMN], errors="coerce").notna().any()


def _round_numbers(table: pd.DataFrame) -> pd.Series | None:
    """The table's round column as numbers (blank or non-numeric: not chosen by the strategy), or one line naming a
    number that is no round: rounds count 1, 2, 3, ... (an ``inf`` was an OverflowError in the report)."""
    if ROUND_COLUMN not in table:
        return None
    rounds = pd.to_numeric(table[ROUND_COLUMN], errors="coerce").astype(float)
    values = rounds.to_numpy()
    bad = ~np.isnan(values) & ~(np.isfinite(values) & (values >= 1) & (values <= MAX_ROUND)
                                & (np.floor(values) == values))
    if bad.any():
        source = table.attrs.get("source", "table")
        raise UserError(f"{source}: column '{ROUND_COLUMN}' holds {values[bad][0]:g}, not a round number (1, 2, 3, "
                        f"... up to {MAX_ROUND}); fix the value or remove the column")
    return rounds


def rounds_of_table(table: pd.DataFrame, *, metric: str = "autoattack_acc", bins: int = 19, bootstrap: int = 1000,
                    seed: int = 0, min_acc: float | None = None) -> list[dict[str, Any]]:
    """For each round of an adaptive sweep's table: the runs chosen up to it, their train FLOPs, and the law on them.

    Compute is the sum of ``train_flops`` over every run chosen so far, failed ones included (what was spent); a run
    the strategy did not choose (trained by a plain sweep into the same folder) is left out.
    """
    rounds = _round_numbers(table)
    if rounds is None or rounds.notna().sum() == 0:
        return []
    flops = pd.to_numeric(table["train_flops"], errors="coerce").fillna(0.0) if "train_flops" in table else None
    if flops is not None:
        check_flops_sum(flops, str(table.attrs.get("source", "table")))
    out = []
    for number in sorted(int(r) for r in rounds.dropna().unique()):
        seen = (rounds <= number).fillna(False).to_numpy(dtype=bool)
        chosen = table[seen]
        chosen.attrs = dict(table.attrs)
        out.append({"round": number, "runs": int(seen.sum()), "new_runs": int((rounds == number).sum()),
                    "compute_flops": float(flops[seen].sum()) if flops is not None else None,
                    **law_interval(chosen, metric=metric, bins=bins, bootstrap=bootstrap, seed=seed,
                                   min_acc=min_acc)})
    return out
