"""The envelope law as an adaptive sweep learns it: alpha and its interval after each round, against compute spent.

An adaptive sweep (:mod:`robustscale.sweep.adaptive`) refits the law after every round to decide whether to go on
(``--target-ci``); the report draws the same fits from the finished table's ``adaptive_round`` column
(:mod:`robustscale.analysis.adaptive_figures`). Both call :func:`law_interval`, so the figure shows exactly the
intervals the sweep stopped on. The fit is ``robustscale fit``'s: :func:`usable_runs`, then :class:`ScalingLaw` with a
seeded pairs bootstrap of the envelope points.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from robustscale.analysis._table import check_flops_sum, usable_runs
from robustscale.analysis.scaling import ScalingLaw
from robustscale.errors import UserError

__all__ = ["ROUND_COLUMN", "STRATEGY_COLUMN", "law_interval", "rounds_of_table", "is_adaptive"]

ROUND_COLUMN, STRATEGY_COLUMN = "adaptive_round", "adaptive_strategy"  # the results table's adaptive columns
MAX_ROUND = 1_000_000  # a round trains at least one run: more rounds than any grid has runs


def law_interval(table: pd.DataFrame, *, metric: str = "autoattack_acc", bins: int = 19, bootstrap: int = 1000,
                 seed: int = 0, min_acc: float | None = None) -> dict[str, Any]:
    """Alpha of the envelope law on ``table`` with its 95% bootstrap interval.

    Returns:
        ``{"alpha", "alpha_ci": [lo, hi], "ci_width", "law_points"}``; every value None while the runs give no law
        yet (fewer than three FLOP bins hold a usable run), so a sweep can ask after its first round.
    """
    try:
        runs = usable_runs(table, metric, min_acc)
        law = ScalingLaw(bins=bins, bootstrap=bootstrap, seed=seed).fit(runs.flops, runs.accuracy)
    except UserError:
        return {"alpha": None, "alpha_ci": None, "ci_width": None, "law_points": None}
    ci = law.ci_["alpha"] if law.ci_ and np.all(np.isfinite(law.ci_["alpha"])) else None
    return {"alpha": law.alpha_, "alpha_ci": ci, "ci_width": None if ci is None else ci[1] - ci[0],
            "law_points": law.n_}


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
