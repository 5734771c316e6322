"""The paper's figures (1a, 1b, 1c, 2, 3a, 3b, 3c), drawn from a results table and the fitted laws, and the N-D
law's frontier beyond the paper.

Each ``figure_*`` function returns a matplotlib :class:`~matplotlib.figure.Figure` built without pyplot, so nothing
is kept in global state and a report can draw many figures in one process. When a figure cannot be drawn (no cost
column, too few runs for the predictor) it becomes a placeholder that says why: a report always shows all seven.
Every figure draws runs the same way (colour: synthetic data; marker: loss), labels only a few ticks of a log axis,
and puts its legend outside the axes, where it cannot cover a point.
"""

from __future__ import annotations

import io
from typing import Any

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter  # noqa: E402

from robustscale.analysis._table import Runs  # noqa: E402
from robustscale.analysis.ndlaw import NDLaw  # noqa: E402
from robustscale.analysis.predictor import RobustnessPredictor  # noqa: E402
from robustscale.analysis.scaling import FittedLaws, ScalingLaw  # noqa: E402

FIGURES = {
    "fig1a": "Training FLOPs against robust accuracy for every run (log-log): how far the sweep spreads. Colour: "
             "synthetic data; marker: training loss.",
    "fig1b": "The recipe predictor's accuracy on held-out runs: points on the diagonal are recipes whose robust "
             "accuracy was predicted without training them.",
    "fig1c": "Which recipe knobs the predictor leans on: impurity importance (share of the trees' gain) and "
             "permutation importance (drop in held-out R² when the knob is shuffled).",
    "fig2": "Robust accuracy for each value of each knob, with and without synthetic data: the spread a choice "
            "leaves, and where synthetic data moves it.",
    "fig3a": "The best run per FLOP bin (the envelope, large markers) with the power law fitted to it and its 95% "
             "bootstrap band, and the saturating law, drawn a decade past the largest run.",
    "fig3b": "Electricity cost against training FLOPs for the envelope's runs (other runs pale), with the fitted power "
             "law and its band.",
    "fig3c": "CO2 emissions against training FLOPs for the envelope's runs (other runs pale), with the fitted power "
             "law and its band.",
}
CHOICES = ("loss", "activation", "ema", "attack_steps", "model", "epochs")
CHOICE_TITLES = {"loss": "loss", "activation": "activation", "ema": "EMA", "attack_steps": "attack steps",
                 "model": "model", "epochs": "epochs"}
# One colour per synthetic-data flag and one marker per loss in every figure, so a reader learns them once.
SYNTHETIC_COLOURS = {False: "tab:blue", True: "tab:orange"}
LOSS_MARKERS = {"at": "o", "trades": "s", "standard": "^"}
LOSS_NAMES = {"at": "PGD-AT", "trades": "TRADES", "standard": "standard training"}
_OTHER_MARKERS = "Dv<>P*X"
LAW_COLOUR, SATURATING_COLOUR = "tab:red", "tab:purple"
_METRIC_NAMES = {"autoattack_acc": "AutoAttack accuracy", "pgd40_acc": "PGD-40 accuracy", "clean_acc": "clean accuracy"}


def _accuracy_label(runs: Runs) -> str:
    return _METRIC_NAMES.get(runs.metric, runs.metric)


def _percent_formatter(runs: Runs) -> FuncFormatter:
    """Accuracy ticks as percentages whatever the table's unit (0.45 or 45 both read 45%)."""
    scale = 100.0 if runs.accuracy_unit == "fraction" else 1.0
    return FuncFormatter(lambda value, _: f"{value * scale:.3g}%")


def _points(runs: Runs, difference: float) -> str:
    """An accuracy difference in percentage points, whatever the table's unit."""
    return f"{difference * (100.0 if runs.accuracy_unit == 'fraction' else 1.0):.2g} points"


def _log_ticks(axis: Any, low: float, high: float, formatter: Any = None) -> None:
    """A few labelled ticks on a log axis, whatever its span: decades beyond two decades; 1, 2, 5 within them over one
    to two; 1, 2, 3, 5, 7 over half a decade to one; every integer mantissa (40%, 50%, 60%) below that, and halves
    too below a sixth of a decade. The other minor ticks are unlabelled (matplotlib labels them all on short axes)."""
    span = np.log10(high / low) if low > 0 and high > low else 1.0
    subs = (1.0,) if span > 2.2 else (1.0, 2.0, 5.0) if span > 1.0 else (1.0, 2.0, 3.0, 5.0, 7.0) if span > 0.5 \
        else tuple(np.arange(1.0, 10.0)) if span > 0.17 else tuple(np.arange(1.0, 10.0, 0.5))
    axis.set_major_locator(LogLocator(base=10.0, subs=subs))
    axis.set_minor_locator(LogLocator(base=10.0, subs=np.arange(1.0, 10.0)))
    axis.set_minor_formatter(NullFormatter())
    axis.set_major_formatter(formatter if formatter is not None else FuncFormatter(_power_of_ten))


_SUPERSCRIPT = str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹")


def _power_of_ten(value: float, _: Any = None) -> str:
    """``2×10¹¹`` (plain text with superscript digits: mathtext costs ~3 ms a label to lay out, and a report lays
    out hundreds), the mantissa kept only where it is not 1; plain numbers (0.5, 20, 1000) between a thousandth and
    ten thousand, where a reader of dollars or kilograms expects them."""
    if value <= 0:
        return ""
    exponent = int(np.floor(np.log10(value) + 1e-9))
    if -3 <= exponent <= 4:
        return f"{value:g}"
    mantissa = value / 10.0**exponent
    power = f"10{str(exponent).translate(_SUPERSCRIPT)}"
    return power if abs(mantissa - 1.0) < 1e-6 else f"{mantissa:.2g}×{power}"


def _new(width: float = 6.0, height: float = 4.5) -> Figure:
    return Figure(figsize=(width, height), layout="constrained")


def _legend_below(fig: Figure, ax: Any, runs: pd.DataFrame | None = None, ncols: int = 3) -> None:
    """The legend under the axes, outside them, where it never covers a point: the run styles of ``runs`` (one
    entry per loss marker and one per synthetic-data colour), then the axes' own labelled artists (laws, bands)."""
    handles, labels = ax.get_legend_handles_labels()
    if runs is not None:
        styles = _run_handles(runs)
        handles, labels = [*styles, *handles], [*(h.get_label() for h in styles), *labels]
    if handles:
        fig.legend(handles, labels, loc="outside lower center", ncols=ncols, fontsize=8, frameon=False)


def _run_handles(frame: pd.DataFrame) -> list[Line2D]:
    """Legend entries for the run styles present in ``frame``: grey markers name the losses, coloured dots the
    synthetic-data flag (factored, so four combinations need four entries, not their product)."""
    handles = [Line2D([], [], linestyle="none", marker=marker, color="dimgrey", label=LOSS_NAMES.get(loss, loss))
               for loss, marker in _loss_markers(frame).items()] if "loss" in frame else []
    flags = _flag(frame, "synthetic")
    handles += [Line2D([], [], linestyle="none", marker="o", color=SYNTHETIC_COLOURS[flag],
                       label="synthetic data" if flag else "real data only") for flag in (False, True)
                if (flags == flag).any()]
    return handles


def placeholder(title: str, message: str) -> Figure:
    """A figure that states why the real one could not be drawn."""
    fig = _new()
    ax = fig.add_subplot()
    ax.set_axis_off()
    ax.set_title(title)
    ax.text(0.5, 0.5, message, ha="center", va="center", wrap=True, fontsize=11, transform=ax.transAxes)
    return fig


def _flag(frame: pd.DataFrame, column: str) -> pd.Series:
    if column not in frame:
        return pd.Series(False, index=frame.index)
    return frame[column].astype("boolean").fillna(False).astype(bool)


def _loss_markers(frame: pd.DataFrame) -> dict[str, str]:
    """The marker of every loss in the table: the fixed ones for at / trades / standard, then the others in order."""
    losses = sorted(frame["loss"].astype(str).unique()) if "loss" in frame else ["all runs"]
    others = iter(_OTHER_MARKERS)
    return {loss: LOSS_MARKERS.get(loss) or next(others, "o") for loss in losses}


def _scatter_runs(ax: Any, frame: pd.DataFrame, x: Any, y: Any, **style: Any) -> None:
    """Runs as points: colour = synthetic data, marker = loss, the same in every figure (their legend entries come
    from :func:`_legend_below`)."""
    synthetic = _flag(frame, "synthetic")
    loss = frame["loss"].astype(str) if "loss" in frame else pd.Series("all runs", index=frame.index)
    for name, marker in _loss_markers(frame).items():
        for flag in (False, True):
            rows = ((loss == name) & (synthetic == flag)).to_numpy()
            if rows.any():
                ax.scatter(np.asarray(x)[rows], np.asarray(y)[rows], marker=marker, color=SYNTHETIC_COLOURS[flag],
                           **style)


def figure_1a(runs: Runs) -> Figure:
    """FLOPs vs accuracy for every run: the paper's overview of how diverse the sweep is."""
    fig = _new()
    ax = fig.add_subplot()
    frame = runs.frame
    _scatter_runs(ax, frame, runs.flops, runs.accuracy, alpha=0.75, edgecolor="none", s=28)
    ax.set(xscale="log", yscale="log", xlabel="training FLOPs (train_flops)", ylabel=_accuracy_label(runs),
           title="Training FLOPs vs robust accuracy")
    _log_ticks(ax.xaxis, runs.flops.min(), runs.flops.max())
    _log_ticks(ax.yaxis, runs.accuracy.min(), runs.accuracy.max(), _percent_formatter(runs))
    _legend_below(fig, ax, frame)
    return fig


def figure_1b(predictor: RobustnessPredictor, runs: Runs, held_out: pd.DataFrame | None = None) -> Figure:
    """Held-out predictions against truth: points on the diagonal are recipes predicted without training.

    ``held_out`` (the held-out runs' rows, in the predictor's order) colours the points like every other figure.
    """
    fig = _new(5.0, 5.0)
    ax = fig.add_subplot()
    truth, predicted = np.asarray(predictor.test_true_), np.asarray(predictor.test_pred_)
    styled = held_out is not None and len(held_out) == len(truth)
    if styled:
        _scatter_runs(ax, held_out, truth, predicted, alpha=0.8, edgecolor="none", s=30)
    else:
        ax.scatter(truth, predicted, alpha=0.8, edgecolor="none", s=30, label="held-out runs")
    low, high = float(min(truth.min(), predicted.min())), float(max(truth.max(), predicted.max()))
    ax.plot([low, high], [low, high], color="grey", linestyle="--", label="y = x")
    ax.set(xlabel=f"true {_accuracy_label(runs)}", ylabel=f"predicted {_accuracy_label(runs)}",
           title=f"Held-out runs: R² = {predictor.r2_:.2f}, mean error {_points(runs, predictor.mae_)}")
    ax.xaxis.set_major_formatter(_percent_formatter(runs))
    ax.yaxis.set_major_formatter(_percent_formatter(runs))
    _legend_below(fig, ax, held_out if styled else None)
    return fig


def figure_1c(predictor: RobustnessPredictor) -> Figure:
    """Which recipe choices the predictor leans on, by impurity and by permutation (ranked by impurity, as the
    summary ranks them)."""
    fig = _new()
    ax = fig.add_subplot()
    features = predictor.features_
    order = np.argsort([predictor.importance_["impurity"][f] for f in features])
    y = np.arange(len(features))
    bars = ((0.2, "impurity", "tab:gray", "impurity: share of the trees' gain"),
            (-0.2, "permutation", "tab:green", "permutation: drop in held-out R² when shuffled"))
    for offset, kind, colour, label in bars:
        values = [predictor.importance_[kind][features[i]] for i in order]
        ax.barh(y + offset, values, height=0.4, label=label, color=colour)
    ax.set_yticks(y, [features[i] for i in order])
    ax.set(xlabel="importance", title="Feature importance of the predictor")
    _legend_below(fig, ax, ncols=1)
    return fig


def figure_2(runs: Runs) -> Figure:
    """Accuracy per algorithmic choice, split by synthetic data, to show the spread each choice leaves."""
    choices = [c for c in CHOICES if c in runs.frame and runs.frame[c].nunique(dropna=True) > 1]
    if not choices:
        return placeholder("Accuracy by algorithmic choice", "no recipe column varies across runs")
    ncols = min(3, len(choices))
    nrows = -(-len(choices) // ncols)
    fig = _new(3.6 * ncols, 3.2 * nrows + 0.6)
    axes = fig.subplots(nrows, ncols, sharey=True, squeeze=False).ravel()
    synthetic = _flag(runs.frame, "synthetic")
    for ax, choice in zip(axes, choices):
        _boxes_by_synthetic(ax, runs, choice, synthetic)
    for ax in axes[len(choices):]:
        ax.set_axis_off()
    for ax in axes[::ncols]:
        ax.set_ylabel(_accuracy_label(runs))
    axes[0].yaxis.set_major_formatter(_percent_formatter(runs))
    fig.legend(handles=[Patch(color=c, alpha=0.6, label="synthetic" if f else "real only")
                        for f, c in SYNTHETIC_COLOURS.items()], loc="outside lower center", ncols=2, fontsize=8,
               frameon=False)
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
            box = ax.boxplot(acc, positions=[i + shift], widths=0.35, patch_artist=True, showfliers=False,
                             medianprops={"color": "black"})  # not orange: orange means synthetic here
            box["boxes"][0].set(facecolor=SYNTHETIC_COLOURS[flag], alpha=0.35)
            ax.scatter(i + shift + rng.uniform(-0.08, 0.08, acc.size), acc, s=8, color=SYNTHETIC_COLOURS[flag])
    ax.set_xticks(range(len(values)), [_value_label(choice, v) for v in values], rotation=30)
    ax.set_title(CHOICE_TITLES.get(choice, choice))


def _value_label(choice: str, value: Any) -> str:
    if choice == "ema":
        return "EMA" if bool(value) else "no EMA"
    return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)


def _natural(value: Any) -> tuple:
    """Sort numbers numerically (attack steps 1, 2, 10) and everything else by its text."""
    try:
        return (0, float(value), "")
    except (TypeError, ValueError):
        return (1, 0.0, str(value))


def figure_3a(laws: FittedLaws) -> Figure:
    """The envelope and the law fitted to it, extended a decade past the largest run to show the extrapolation.

    The y axis covers the envelope and the laws, not collapsed runs far below them (the paper's table has runs at
    0.01% AutoAttack accuracy): how many fall below is written on the plot.
    """
    runs, law, saturating = laws.runs, laws.accuracy, laws.saturating
    fig = _new()
    ax = fig.add_subplot()
    frame = runs.frame
    envelope = frame.iloc[law.support_]
    _scatter_runs(ax, frame, runs.flops, runs.accuracy, alpha=0.3, edgecolor="none", s=14)
    _scatter_runs(ax, envelope, law.points_[:, 0], law.points_[:, 1], alpha=0.95, edgecolor="black",
                  linewidth=0.8, s=46, zorder=3)
    grid = np.logspace(np.log10(runs.flops.min()), np.log10(runs.flops.max()) + 1, 200)
    low, high = law.predict_interval(grid)
    ax.fill_between(grid, low, high, color=LAW_COLOUR, alpha=0.15, label=f"{law.level:.0%} bootstrap band")
    ax.plot(grid, law.predict(grid), color=LAW_COLOUR,
            label=f"power law: α = {law.alpha_:.3g} (R² {law.r2_:.2f})")
    ax.plot(grid, saturating.predict(grid), color=SATURATING_COLOUR, linestyle="--",
            label=f"saturating law: plateau {_percent_formatter(runs)(saturating.A_)}")
    ax.axvline(runs.flops.max(), color="grey", linewidth=0.8, linestyle=":", label="largest run")
    ax.plot([], [], linestyle="none", marker="o", markerfacecolor="white", markeredgecolor="black",
            label="envelope (outlined): best run per FLOP bin")
    bottom = float(law.points_[:, 1].min()) / 1.6
    # up to where the laws go within a decade past the data (never far above 100%: a power law grows past it)
    reach = max(float(law.points_[:, 1].max()), float(np.nanmax(law.predict(grid))),
                float(np.nanmax(saturating.predict(grid))))
    top = min(runs.ceiling * 1.1, reach * 1.3)
    ax.set(xscale="log", yscale="log", xlabel="training FLOPs (train_flops)", ylabel=_accuracy_label(runs),
           title="Scaling law of robust accuracy", ylim=(bottom, top))
    below = int((runs.accuracy < bottom).sum())
    if below:
        ax.text(0.01, 0.01, f"{below} run{'s' if below > 1 else ''} below the axis", transform=ax.transAxes,
                fontsize=8, color="grey")
    _log_ticks(ax.xaxis, grid.min(), grid.max())
    _log_ticks(ax.yaxis, bottom, top, _percent_formatter(runs))
    _legend_below(fig, ax, frame, ncols=2)
    return fig


def figure_cost(laws: FittedLaws, law_name: str, column: str, label: str) -> Figure:
    """A cost (electricity $, CO2) against FLOPs with its power law: figures 3b and 3c. The runs the law is fitted
    on (the envelope's, by default) in the run colours; the others pale, for context."""
    law: ScalingLaw | None = laws.costs.get(law_name)
    title = f"{label} vs training FLOPs"
    if law is None:
        return placeholder(title, f"no usable '{column}' column in the table")
    fig = _new()
    ax = fig.add_subplot()
    frame = laws.runs.frame
    values = pd.to_numeric(frame[column], errors="coerce").to_numpy(dtype=float)
    fitted = np.zeros(len(frame), dtype=bool)
    fitted[law_rows(laws)] = True
    fitted &= np.isfinite(values) & (values > 0)
    others = ~fitted & np.isfinite(values) & (values > 0)
    if others.any():
        ax.scatter(laws.runs.flops[others], values[others], s=10, color="lightgrey", edgecolor="none",
                   label="other runs")
    _scatter_runs(ax, frame[fitted], laws.runs.flops[fitted], values[fitted], alpha=0.9, edgecolor="none", s=28)
    grid = np.logspace(np.log10(law.points_[:, 0].min()), np.log10(law.points_[:, 0].max()), 100)
    low, high = law.predict_interval(grid)
    ax.fill_between(grid, low, high, color="black", alpha=0.12, label=f"{law.level:.0%} bootstrap band")
    ax.plot(grid, law.predict(grid), color="black", label=f"power law: exponent {law.alpha_:.3g} (R² {law.r2_:.2f})")
    ax.set(xscale="log", yscale="log", xlabel="training FLOPs (train_flops)", ylabel=label, title=title)
    _log_ticks(ax.xaxis, grid.min(), grid.max())
    shown = values[fitted | others]
    _log_ticks(ax.yaxis, shown.min(), shown.max())
    _legend_below(fig, ax, frame[fitted], ncols=2)
    return fig


def law_rows(laws: FittedLaws) -> np.ndarray:
    """Positions (in ``laws.runs.frame``) of the runs the cost laws are fitted on."""
    if laws.cost_runs == "envelope":
        return np.asarray(laws.accuracy.support_)
    return np.arange(len(laws.runs.frame))


def figure_nd(law: NDLaw, budgets: list[float]) -> Figure:
    """Beyond the paper: the runs in the plane of model size N and samples seen D, coloured by their loss, with the
    compute-optimal frontier (N*(C), D*(C)) of the fitted ``L(N, D)``; and the loss on that frontier against compute,
    with the runs at their own compute. The crosses are the budgets the report's table prices."""
    runs = law.runs_
    fig = _new(10.0, 4.4)
    left, right = fig.subplots(1, 2)
    flops_runs = law.k_ * runs.n * runs.d
    grid = np.logspace(np.log10(flops_runs.min()), np.log10(max(max(budgets), flops_runs.max())), 100)
    points = left.scatter(runs.n, runs.d, c=runs.loss, cmap="viridis", s=28, edgecolor="none")
    fig.colorbar(points, ax=left, label=runs.metric)
    left.plot(law.optimal_params(grid), law.optimal_samples(grid), color=LAW_COLOUR, label="compute-optimal frontier")
    left.scatter(law.optimal_params(budgets), law.optimal_samples(budgets), marker="X", s=70, color=LAW_COLOUR,
                 edgecolor="black", zorder=3, label="priced budgets")
    left.set(xscale="log", yscale="log", xlabel="parameters N", ylabel="samples seen D",
             title="Runs and the compute-optimal frontier")
    right.scatter(flops_runs, runs.loss, s=20, color="tab:gray", edgecolor="none", label="runs")
    right.plot(grid, law.optimal_loss(grid), color=LAW_COLOUR, label="L at N*(C), D*(C)")
    right.scatter(budgets, law.optimal_loss(budgets), marker="X", s=70, color=LAW_COLOUR, edgecolor="black", zorder=3)
    right.set(xscale="log", yscale="log", xlabel="training FLOPs C = k·N·D (train_flops)", ylabel=runs.metric,
              title="Loss on the frontier")
    for ax, (low, high) in ((left, (runs.n.min(), runs.n.max())), (right, (grid.min(), grid.max()))):
        _log_ticks(ax.xaxis, low, high)
    left.legend(fontsize=8, loc="upper left", bbox_to_anchor=(0.0, -0.15), ncols=2, frameon=False)
    right.legend(fontsize=8, loc="upper left", bbox_to_anchor=(0.0, -0.15), ncols=2, frameon=False)
    return fig


def all_figures(laws: FittedLaws, predictor: RobustnessPredictor | None, why_no_predictor: str = "", *,
                held_out: pd.DataFrame | None = None) -> dict:
    """The seven figures of the paper, keyed as in :data:`FIGURES` (``held_out``: see :func:`figure_1b`)."""
    def predictor_figure(draw: Any, title: str) -> Figure:
        return draw() if predictor is not None else placeholder(title, why_no_predictor or "no predictor")

    return {
        "fig1a": figure_1a(laws.runs),
        "fig1b": predictor_figure(lambda: figure_1b(predictor, laws.runs, held_out), "Predicted vs true"),
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
