"""The report's figure of an adaptive sweep: alpha and its 95% interval after each round, against compute spent.

It answers the question an adaptive sweep exists for: how fast the law settled, and how much compute a narrower
interval would cost. The numbers come from :func:`robustscale.analysis.adaptive_law.rounds_of_table`, the same fits
the sweep stopped on; the report adds the figure (and the rounds, under ``adaptive`` in its JSON) only when the table
has an ``adaptive_round`` column (:func:`adaptive_report`).
"""

from __future__ import annotations

from typing import Any

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from robustscale.analysis.adaptive_law import is_adaptive, rounds_of_table  # noqa: E402
from robustscale.analysis.figures import placeholder, render  # noqa: E402

__all__ = ["ADAPTIVE_FIGURES", "figure_adaptive", "adaptive_report"]

ADAPTIVE_FIGURES = {
    "adaptive": "Adaptive sweep: alpha of the envelope law and its 95% bootstrap interval after each round, against "
                "the training FLOPs spent so far (numbers: round).",
}


def figure_adaptive(rounds: list[dict[str, Any]]) -> Figure:
    """Alpha with its interval per round (x: cumulative train FLOPs, log scale); rounds before a law are listed."""
    fitted = [r for r in rounds if r["alpha"] is not None and r["compute_flops"]]
    if not fitted:
        why = f"{len(rounds)} rounds, none with a law yet (a law needs three FLOP bins holding a usable run)"
        return placeholder("Adaptive sweep", why)
    fig = Figure(figsize=(6.0, 4.5), layout="constrained")
    ax = fig.add_subplot()
    x = [r["compute_flops"] for r in fitted]
    alpha = [r["alpha"] for r in fitted]
    with_ci = [r for r in fitted if r["alpha_ci"] is not None]
    if with_ci:
        # a percentile interval need not contain the point estimate: drawn from its ends, not as +- errors
        spent, low, high = ([r["compute_flops"] for r in with_ci], [r["alpha_ci"][0] for r in with_ci],
                            [r["alpha_ci"][1] for r in with_ci])
        ax.fill_between(spent, low, high, color="tab:blue", alpha=0.15, label="95% bootstrap interval")
        ax.vlines(spent, low, high, color="tab:blue", linewidth=1.2)
    ax.plot(x, alpha, "o-", color="tab:blue", label="alpha after the round")
    for r in fitted:
        ax.annotate(str(r["round"]), (r["compute_flops"], r["alpha"]), textcoords="offset points", xytext=(4, 4),
                    fontsize=7)
    ax.axhline(fitted[-1]["alpha"], color="grey", linewidth=0.8, linestyle=":", label="last alpha")
    waiting = len(rounds) - len(fitted)
    note = f" ({waiting} earlier round{'s' if waiting != 1 else ''} without a law)" if waiting else ""
    if _fit_y(ax, alpha, with_ci):
        ax.text(0.01, 0.01, "intervals far wider than the typical one are cut at the axes", fontsize=7,
                color="grey", transform=ax.transAxes)
    ax.set(xscale="log", xlabel="training FLOPs spent (cumulative)", ylabel="alpha (envelope law)",
           title=f"Adaptive sweep: {len(rounds)} rounds{note}")
    ax.legend(fontsize=7)
    return fig


def _fit_y(ax, alpha: list[float], with_ci: list[dict[str, Any]]) -> bool:
    """Scale the y axis to the alphas and the intervals of typical width, so that one early round's huge interval
    (three points can give a slope of almost anything) does not flatten the rest; True when some interval is cut."""
    widths = np.array([r["alpha_ci"][1] - r["alpha_ci"][0] for r in with_ci])
    if widths.size == 0:
        return False
    typical = with_ci if widths.max() <= 0 else [r for r, w in zip(with_ci, widths) if w <= 3 * np.median(widths)]
    low = min(alpha + [r["alpha_ci"][0] for r in typical])
    high = max(alpha + [r["alpha_ci"][1] for r in typical])
    pad = 0.1 * (high - low) or 0.1 * abs(high) or 0.01
    ax.set_ylim(low - pad, high + pad)
    return len(typical) < len(with_ci)


def adaptive_report(table: pd.DataFrame, *, metric: str = "autoattack_acc", bins: int = 19, bootstrap: int = 1000,
                    seed: int = 0, min_acc: float | None = None) -> tuple[dict[str, Any] | None, dict[str, dict]]:
    """The report's adaptive part: ``({"rounds": [...]}, {"adaptive": rendered figure})``, or ``(None, {})`` for a
    table that did not come from an adaptive sweep."""
    if not is_adaptive(table):
        return None, {}
    rounds = rounds_of_table(table, metric=metric, bins=bins, bootstrap=bootstrap, seed=seed, min_acc=min_acc)
    return {"rounds": rounds}, {"adaptive": render(figure_adaptive(rounds))}
