"""The paper's figures (1a, 1b, 1c, 2, 3a, 3b, 3c), drawn from a results table and the fitted laws.

Each ``figure_*`` function returns a matplotlib :class:`~matplotlib.figure.Figure` built without pyplot, so nothing
is kept in global state and a report can draw many figures in one process. When a figure cannot be drawn (no cost
column, too few runs for the predictor) it becomes a placeholder that says why: a report always shows all seven.
"""

from __future__ import annotations

import io
from typing import Any

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402
from matplotlib.ticker import FuncFormatter  # noqa: E402

from robustscale.analysis._table import Runs  # noqa: E402
from robustscale.analysis.predictor import RobustnessPredictor  # noqa: E402
from robustscale.analysis.scaling import FittedLaws, ScalingLaw  # noqa: E402

FIGURES = {
    "fig1a": "Training FLOPs vs robust accuracy (log-log); colour = synthetic data, marker = loss.",
    "fig1b": "Predicted vs true robust accuracy on held-out recipes (gradient boosting).",
    "fig1c": "Feature importance of the predictor (impurity and permutation).",
    "fig2": "Robust accuracy by algorithmic choice, with and without synthetic data (boxes show the spread).",
    "fig3a": "Best-run envelope with the fitted power law, its bootstrap band, and the saturating alternative.",
    "fig3b": "Electricity cost vs training FLOPs with the fitted power law.",
    "fig3c": "CO2 emissions vs training FLOPs with the fitted power law.",
}
CHOICES = ("loss", "activation", "ema", "attack_steps", "model", "epochs")
_MARKERS = "osD^vP*X"
_SYNTHETIC_COLOURS = {True: "tab:orange", False: "tab:blue"}


def _accuracy_label(runs: Runs) -> str:
    return f"{runs.metric} ({runs.accuracy_unit})"


def _plain_log_ticks(axis: Any) -> None:
    """Accuracies span less than a decade: label log ticks as plain numbers, not powers of ten."""
    formatter = FuncFormatter(lambda value, _: f"{value:g}")
    axis.set_major_formatter(formatter)
    axis.set_minor_formatter(formatter)


def _new(width: float = 6.0, height: float = 4.5) -> Figure:
    return Figure(figsize=(width, height), layout="constrained")


def placeholder(title: str, message: str) -> Figure:
    """A figure that states why the real one could not be drawn."""
    fig = _new()
    ax = fig.add_subplot()
    ax.set_axis_off()
    ax.set_title(title)
    ax.text(0.5, 0.5, message, ha="center", va="center", wrap=True, fontsize=11, transform=ax.transAxes)
    return fig


def figure_1a(runs: Runs) -> Figure:
    """FLOPs vs accuracy for every run: the paper's overview of how diverse the sweep is."""
    fig = _new()
    ax = fig.add_subplot()
    frame = runs.frame
    synthetic = _flag(frame, "synthetic")
    losses = sorted(frame["loss"].astype(str).unique()) if "loss" in frame else ["all runs"]
    for i, loss in enumerate(losses):
        of_loss = frame["loss"].astype(str) == loss if "loss" in frame else pd.Series(True, index=frame.index)
        for flag in (False, True):
            rows = of_loss & (synthetic == flag)
            if rows.any():
                ax.scatter(frame.loc[rows, "train_flops"], frame.loc[rows, runs.metric], marker=_MARKERS[i % 8],
                           color=_SYNTHETIC_COLOURS[flag], alpha=0.7, edgecolor="none",
                           label=f"{loss}, {'synthetic' if flag else 'no synthetic'}")
    ax.set(xscale="log", yscale="log", xlabel="training FLOPs", ylabel=_accuracy_label(runs),
           title="Training FLOPs vs robust accuracy")
    _plain_log_ticks(ax.yaxis)
    ax.legend(fontsize=8)
    return fig


def _flag(frame: pd.DataFrame, column: str) -> pd.Series:
    if column not in frame:
        return pd.Series(False, index=frame.index)
    return frame[column].astype("boolean").fillna(False).astype(bool)


def figure_1b(predictor: RobustnessPredictor, runs: Runs) -> Figure:
    """Held-out predictions against truth: points on the diagonal are recipes predicted without training."""
    fig = _new(5.0, 5.0)
    ax = fig.add_subplot()
    truth, predicted = predictor.test_true_, predictor.test_pred_
    ax.scatter(truth, predicted, alpha=0.7, edgecolor="none")
    low, high = float(min(truth.min(), predicted.min())), float(max(truth.max(), predicted.max()))
    ax.plot([low, high], [low, high], color="grey", linestyle="--", label="y = x")
    ax.set(xlabel=f"true {_accuracy_label(runs)}", ylabel=f"predicted {_accuracy_label(runs)}",
           title=f"Held-out recipes: R² = {predictor.r2_:.3f}, MAE = {predictor.mae_:.3g}")
    ax.legend(fontsize=8)
    return fig


def figure_1c(predictor: RobustnessPredictor) -> Figure:
    """Which recipe choices the predictor leans on, by impurity and by permutation."""
    fig = _new()
    ax = fig.add_subplot()
    features = predictor.features_
    order = np.argsort([predictor.importance_["permutation"][f] for f in features])
    y = np.arange(len(features))
    for offset, kind, colour in ((-0.2, "impurity", "tab:blue"), (0.2, "permutation", "tab:green")):
        values = [predictor.importance_[kind][features[i]] for i in order]
        ax.barh(y + offset, values, height=0.4, label=kind, color=colour)
    ax.set_yticks(y, [features[i] for i in order])
    ax.set(xlabel="importance\n(impurity: share of the splits' gain; permutation: drop in held-out R²)",
           title="Feature importance of the predictor")
    ax.legend(fontsize=8)
    return fig


def figure_2(runs: Runs) -> Figure:
    """Accuracy per algorithmic choice, split by synthetic data, to show the spread each choice leaves."""
    choices = [c for c in CHOICES if c in runs.frame and runs.frame[c].nunique(dropna=True) > 1]
    if not choices:
        return placeholder("Accuracy by algorithmic choice", "no recipe column varies across runs")
    ncols = min(3, len(choices))
    nrows = -(-len(choices) // ncols)
    fig = _new(3.6 * ncols, 3.6 * nrows)
    axes = fig.subplots(nrows, ncols, sharey=True, squeeze=False).ravel()
    synthetic = _flag(runs.frame, "synthetic")
    for ax, choice in zip(axes, choices):
        _boxes_by_synthetic(ax, runs, choice, synthetic)
    for ax in axes[len(choices):]:
        ax.set_axis_off()
    for ax in axes[::ncols]:
        ax.set_ylabel(_accuracy_label(runs))
    axes[ncols - 1].legend(handles=[Patch(color=c, label="synthetic" if f else "no synthetic")
                             for f, c in _SYNTHETIC_COLOURS.items()], fontsize=8)
    fig.suptitle("Robust accuracy by algorithmic choice, with and without synthetic data")
    return fig


def _boxes_by_synthetic(ax: Any, runs: Runs, choice: str, synthetic: pd.Series) -> None:
    frame = runs.frame
    values = sorted(frame[choice].dropna().unique(), key=_natural)
    rng = np.random.default_rng(0)
    for i, value in enumerate(values):
        for flag, shift in ((False, -0.2), (True, 0.2)):
            acc = frame.loc[(frame[choice] == value) & (synthetic == flag), runs.metric].to_numpy(dtype=float)
            if not acc.size:
                continue
            box = ax.boxplot(acc, positions=[i + shift], widths=0.35, patch_artist=True, showfliers=False)
            box["boxes"][0].set(facecolor=_SYNTHETIC_COLOURS[flag], alpha=0.35)
            ax.scatter(i + shift + rng.uniform(-0.08, 0.08, acc.size), acc, s=8, color=_SYNTHETIC_COLOURS[flag])
    ax.set_xticks(range(len(values)), [str(v) for v in values], rotation=30)
    ax.set_title(choice)


def _natural(value: Any) -> tuple:
    """Sort numbers numerically (attack steps 1, 2, 10) and everything else by its text."""
    try:
        return (0, float(value), "")
    except (TypeError, ValueError):
        return (1, 0.0, str(value))


def figure_3a(laws: FittedLaws) -> Figure:
    """The envelope and the law fitted to it, extended a decade past the largest run to show the extrapolation."""
    runs, law, saturating = laws.runs, laws.accuracy, laws.saturating
    fig = _new()
    ax = fig.add_subplot()
    ax.scatter(runs.flops, runs.accuracy, s=10, color="lightgrey", label="all runs")
    ax.scatter(law.points_[:, 0], law.points_[:, 1], color="tab:red", zorder=3, label="best run per FLOP bin")
    grid = np.logspace(np.log10(runs.flops.min()), np.log10(runs.flops.max()) + 1, 200)
    low, high = law.predict_interval(grid)
    ax.fill_between(grid, low, high, color="tab:red", alpha=0.15, label=f"{law.level:.0%} bootstrap band")
    ax.plot(grid, law.predict(grid), color="tab:red",
            label=f"{law.C_:.3g}·FLOPs^{law.alpha_:.3g} (R²={law.r2_:.2f})")
    ax.plot(grid, saturating.predict(grid), color="tab:purple", linestyle="--",
            label=f"{saturating.A_:.3g} − B·FLOPs^−{saturating.gamma_:.3g}")
    ax.axhline(runs.ceiling, color="black", linewidth=0.8, linestyle=":", label="perfect accuracy")
    ax.set(xscale="log", yscale="log", xlabel="training FLOPs", ylabel=_accuracy_label(runs),
           title="Scaling law of robust accuracy")
    ax.set_ylim(top=runs.ceiling * 1.15)  # a power law grows past 100%: show where it does, not how far
    _plain_log_ticks(ax.yaxis)
    ax.legend(fontsize=7)
    return fig


def figure_cost(laws: FittedLaws, law_name: str, column: str, label: str) -> Figure:
    """A cost (electricity $, CO2) against FLOPs over all runs, with its power law: figures 3b and 3c."""
    law: ScalingLaw | None = laws.costs.get(law_name)
    title = f"{label} vs training FLOPs"
    if law is None:
        return placeholder(title, f"no usable '{column}' column in the table")
    fig = _new()
    ax = fig.add_subplot()
    ax.scatter(law.points_[:, 0], law.points_[:, 1], s=10, alpha=0.7, edgecolor="none", label="runs")
    grid = np.logspace(np.log10(law.points_[:, 0].min()), np.log10(law.points_[:, 0].max()), 100)
    low, high = law.predict_interval(grid)
    ax.fill_between(grid, low, high, alpha=0.2, label=f"{law.level:.0%} bootstrap band")
    ax.plot(grid, law.predict(grid), color="black", label=f"{law.C_:.3g}·FLOPs^{law.alpha_:.3g} (R²={law.r2_:.2f})")
    ax.set(xscale="log", yscale="log", xlabel="training FLOPs", ylabel=label, title=title)
    ax.legend(fontsize=8)
    return fig


def all_figures(laws: FittedLaws, predictor: RobustnessPredictor | None, why_no_predictor: str = "") -> dict:
    """The seven figures of the paper, keyed as in :data:`FIGURES`."""
    def predictor_figure(draw: Any, title: str) -> Figure:
        return draw() if predictor is not None else placeholder(title, why_no_predictor or "no predictor")

    return {
        "fig1a": figure_1a(laws.runs),
        "fig1b": predictor_figure(lambda: figure_1b(predictor, laws.runs), "Predicted vs true"),
        "fig1c": predictor_figure(lambda: figure_1c(predictor), "Feature importance"),
        "fig2": figure_2(laws.runs),
        "fig3a": figure_3a(laws),
        "fig3b": figure_cost(laws, "cost_law", "cost_usd", "electricity cost (USD)"),
        "fig3c": figure_cost(laws, "co2_law", "co2_kg", "CO2 (kg)"),
    }


def render(fig: Figure, dpi: int = 120) -> dict[str, bytes]:
    """The figure as PNG and SVG bytes (the report embeds the PNG and writes both next to itself)."""
    out = {}
    for fmt in ("png", "svg"):
        buffer = io.BytesIO()
        fig.savefig(buffer, format=fmt, dpi=dpi)
        out[fmt] = buffer.getvalue()
    return out
