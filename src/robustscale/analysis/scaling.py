"""Scaling laws of adversarial robustness against compute (paper section IV-B), with the intervals it lacked.

The paper splits the FLOP range into 19 equal-width bins in log10(FLOPs), keeps the best AutoAttack accuracy in each
bin (the performance envelope) and fits ``accuracy = C * FLOPs**alpha`` by least squares in log-log space; the same
power law describes electricity cost, energy and CO2 against FLOPs, fitted on the envelope's runs (the paper's
Fig. 3b/c uses its best-AutoAttack configurations). Beyond the paper this module adds bootstrap
intervals, a saturating alternative ``accuracy = A - B * FLOPs**(-gamma)`` (robust accuracy cannot exceed 100%, so a
power law must bend eventually), a held-out check of which law extrapolates better, and the compute, energy, money,
CO2 and GPU-years a target accuracy would need under each law.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy.optimize import least_squares
from sklearn.base import BaseEstimator, clone

from robustscale.analysis._table import MIN_POINTS, Runs, usable_runs
from robustscale.accounting.cost import PAPER_PUE, CostModel
from robustscale.accounting.hardware import DEFAULT_UTILIZATION, check_utilization, get_gpu, gpu_energy_kwh
from robustscale.analysis.replicates import has_replicates, recipe_codes, resample_within_recipes
from robustscale.config_checks import MAX_BINS
from robustscale.enums import CostRuns, Precision, choice
from robustscale.errors import ParameterError, UserError, shown

COST_LAWS = {"cost_law": "cost_usd", "energy_law": "energy_kwh", "co2_law": "co2_kg"}
PUE = PAPER_PUE  # the paper's Power Usage Effectiveness, extrapolate's default (its ``cost`` says otherwise)
SECONDS_PER_YEAR = 3600 * 24 * 365
_GAMMA_GRID = np.logspace(-3, 1, 41)


def check_bins(bins: int) -> int:
    """``bins`` as given, or a one-line :class:`ParameterError` unless it is an integer from 2 to ``MAX_BINS``."""
    if isinstance(bins, bool) or not isinstance(bins, (int, np.integer)) or not 2 <= bins <= MAX_BINS:
        raise ParameterError(f"bins {shown(bins)}: use an integer from 2 to {MAX_BINS} (the paper: 19)", "bins")
    return int(bins)


def envelope_indices(x_flops: np.ndarray, y: np.ndarray, bins: int = 19) -> np.ndarray:
    """Indices of the best run in each non-empty bin of equal width in log10(FLOPs): the performance envelope.

    A law fitted to every run would describe the average recipe; the envelope asks what the *best* recipe reaches at
    a given compute, which is the question a scaling law answers.
    """
    check_bins(bins)
    log_flops = np.log10(np.asarray(x_flops, dtype=float))
    y = np.asarray(y, dtype=float)
    edges = np.linspace(log_flops.min(), log_flops.max(), bins + 1)
    which = np.digitize(log_flops, edges[1:-1])
    best = [np.flatnonzero(which == b)[np.argmax(y[which == b])] for b in np.unique(which)]
    return np.sort(np.asarray(best, dtype=int))


def _check_xy(x_flops: Any, y: Any) -> tuple[np.ndarray, np.ndarray]:
    flops, values = np.asarray(x_flops, dtype=float).ravel(), np.asarray(y, dtype=float).ravel()
    if flops.shape != values.shape:
        raise ValueError(f"x_flops and y differ in length ({flops.size} vs {values.size})")
    if not (np.all(np.isfinite(flops)) and np.all(flops > 0) and np.all(np.isfinite(values))):
        raise ValueError("x_flops must be finite and positive, y finite")
    return flops, values


def _select(flops: np.ndarray, y: np.ndarray, bins: int, envelope: bool, what: str) -> np.ndarray:
    support = envelope_indices(flops, y, bins) if envelope else np.arange(flops.size)
    support = support[np.argsort(flops[support], kind="stable")]  # points in order of compute, as plotted
    if support.size < MIN_POINTS:
        where = f"{support.size} non-empty FLOP bins" if envelope else f"{support.size} runs"
        raise UserError(f"{what}: only {where}; a law needs at least {MIN_POINTS} points spread over FLOPs")
    return support


def _power_of_ten(log_c: float, flops: np.ndarray, y: np.ndarray) -> float:
    """``10 ** log_c``, the law's C; a :class:`UserError` where it is out of a float's reach with room to compute
    with (accuracies of 1e-150 and 1e-300 over FLOPs of 1e301 and 1e302 fit C = 10^45000), rather than a law whose
    C is infinite or zero."""
    if not -300.0 < log_c < 300.0:
        raise UserError(f"power law: its fit puts C at 10^{log_c:.4g}, outside 10^-300..10^300, from y "
                        f"{y.min():.3g}..{y.max():.3g} over FLOPs {flops.min():.3g}..{flops.max():.3g}: check the "
                        "table's accuracy and FLOP columns")
    return float(10.0**log_c)


def _r2(y: np.ndarray, fitted: np.ndarray) -> float:
    total = float(np.sum((y - y.mean()) ** 2))
    return float(1.0 - np.sum((y - fitted) ** 2) / total) if total > 0 else float("nan")


def _interval(values: np.ndarray, level: float) -> list[float]:
    """Percentile interval that tolerates inf (a bootstrap draw whose law never reaches a target)."""
    values = np.asarray(values, dtype=float)
    values = values[~np.isnan(values)]
    if values.size == 0:
        return [float("nan"), float("nan")]
    tail = (1.0 - level) / 2.0
    return [float(v) for v in np.quantile(values, [tail, 1.0 - tail], method="inverted_cdf")]


def _band(draws: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray]:
    tail = 100 * (1.0 - level) / 2.0
    return np.nanpercentile(draws, tail, axis=0), np.nanpercentile(draws, 100 - tail, axis=0)


class ScalingLaw(BaseEstimator):
    """``y = C * FLOPs**alpha`` fitted by least squares in log-log space (paper eq. 4), with bootstrap intervals.

    Args:
        bins: equal-width bins in log10(FLOPs) for the envelope (the paper uses 19).
        bootstrap: resamples of the fitted points for the intervals; 0 skips them.
        seed: seed of the bootstrap, so a report is reproducible.
        envelope: fit the best run per bin (accuracy) rather than every run (costs).
        level: coverage of the intervals.
    """

    def __init__(self, bins: int = 19, bootstrap: int = 1000, seed: int = 0, envelope: bool = True,
                 level: float = 0.95):
        self.bins = bins
        self.bootstrap = bootstrap
        self.seed = seed
        self.envelope = envelope
        self.level = level

    def fit(self, x_flops: Any, y: Any, groups: Any = None) -> ScalingLaw:
        """Fit the law; ``y`` must be positive (log space).

        ``groups`` (one recipe code per run, see :mod:`robustscale.analysis.replicates`): when some recipe has several
        seeds, each bootstrap draw first redraws every recipe's seeds, then takes the envelope again, so the
        intervals include seed noise; the point estimate is unchanged.
        """
        flops, values = _check_xy(x_flops, y)
        if np.any(values <= 0):
            raise ValueError("a power law is fitted in log space: y must be positive")
        self.support_ = _select(flops, values, self.bins, self.envelope, "power law")
        px, py = flops[self.support_], values[self.support_]
        self.alpha_, log_c = np.polyfit(np.log10(px), np.log10(py), 1)
        self.C_, self.alpha_ = _power_of_ten(log_c, px, py), float(self.alpha_)
        self.r2_ = _r2(np.log10(py), log_c + self.alpha_ * np.log10(px))
        self.n_ = int(px.size)
        self.points_ = np.column_stack([px, py])
        self.seed_resampled_ = groups is not None and has_replicates(groups) and bool(self.bootstrap)
        if self.seed_resampled_:
            self.draws_ = self._bootstrap_seeds(flops, values, np.asarray(groups))
        else:
            self.draws_ = self._bootstrap(np.log10(px), np.log10(py))
        self.ci_ = None if not len(self.draws_) else {
            "C": _interval(10.0 ** self.draws_[:, 0], self.level), "alpha": _interval(self.draws_[:, 1], self.level)}
        return self

    def _bootstrap(self, log_x: np.ndarray, log_y: np.ndarray) -> np.ndarray:
        """Pairs bootstrap of the log-log least-squares line, vectorised: rows of (log10 C, alpha)."""
        if not self.bootstrap:
            return np.empty((0, 2))
        rng = np.random.default_rng(self.seed)
        pick = rng.integers(0, log_x.size, size=(int(self.bootstrap), log_x.size))
        xs, ys = log_x[pick], log_y[pick]
        dx, dy = xs - xs.mean(axis=1, keepdims=True), ys - ys.mean(axis=1, keepdims=True)
        sxx = np.sum(dx * dx, axis=1)
        ok = sxx > 1e-12
        alpha = np.sum(dx * dy, axis=1)[ok] / sxx[ok]
        return np.column_stack([ys.mean(axis=1)[ok] - alpha * xs.mean(axis=1)[ok], alpha])

    def _bootstrap_seeds(self, flops: np.ndarray, values: np.ndarray, groups: np.ndarray) -> np.ndarray:
        """Two-level bootstrap: seeds within recipes, then the envelope's points; rows of (log10 C, alpha)."""
        rng = np.random.default_rng(self.seed)
        draws = []
        for _ in range(int(self.bootstrap)):
            rows = resample_within_recipes(groups, rng)
            f, v = flops[rows], values[rows]
            support = envelope_indices(f, v, self.bins) if self.envelope else np.arange(f.size)
            pick = support[rng.integers(0, support.size, support.size)]
            log_x, log_y = np.log10(f[pick]), np.log10(v[pick])
            if np.ptp(log_x) > 1e-6:
                alpha, log_c = np.polyfit(log_x, log_y, 1)
                draws.append((log_c, alpha))
        return np.asarray(draws, dtype=float).reshape(-1, 2)

    def predict(self, flops: Any) -> np.ndarray:
        return self.C_ * np.asarray(flops, dtype=float) ** self.alpha_

    def predict_interval(self, flops: Any) -> tuple[np.ndarray, np.ndarray]:
        """Pointwise bootstrap band of the law (the shaded band of figure 3a)."""
        log_x = np.log10(np.atleast_1d(np.asarray(flops, dtype=float)))
        if not len(self.draws_):
            fitted = self.predict(10.0**log_x)
            return fitted, fitted
        return _band(10.0 ** (self.draws_[:, :1] + self.draws_[:, 1:] * log_x[None, :]), self.level)

    def flops_for(self, target: float) -> float:
        """Compute at which the law reaches ``target``; inf when the law does not grow with compute."""
        return float(_power_flops_for(math.log10(self.C_), self.alpha_, target))

    def flops_for_interval(self, target: float) -> list[float]:
        if not len(self.draws_):
            return [self.flops_for(target)] * 2
        return _interval(_power_flops_for(self.draws_[:, 0], self.draws_[:, 1], target), self.level)


def _power_flops_for(log_c: Any, alpha: Any, target: float) -> np.ndarray:
    log_c, alpha = np.asarray(log_c, dtype=float), np.asarray(alpha, dtype=float)
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        exponent = (math.log10(target) - log_c) / alpha
        flops = np.where(exponent > 308, np.inf, 10.0 ** np.minimum(exponent, 308))
    return np.where(alpha > 0, flops, np.inf)


class SaturatingLaw(BaseEstimator):
    """``y = A - B * FLOPs**(-gamma)``: accuracy that approaches a ceiling ``A`` as compute grows.

    Fitted by least squares in accuracy space: a grid over ``gamma`` with the linear ``(A, B)`` solved exactly, then
    refined jointly. FLOPs are scaled by their median inside the fit so the optimiser sees numbers near one; ``B_``
    is reported in the table's own FLOP unit.

    Args:
        bins: equal-width bins in log10(FLOPs) for the envelope.
        bootstrap: resamples for the intervals (each is a non-linear fit, so fewer than for the power law).
        seed: seed of the bootstrap.
        envelope: fit the best run per bin, as for the power law.
        ceiling: largest allowed plateau, 1.0 for fractions and 100 for percent (no accuracy exceeds it).
        level: coverage of the intervals.
    """

    def __init__(self, bins: int = 19, bootstrap: int = 200, seed: int = 0, envelope: bool = True,
                 ceiling: float | None = None, level: float = 0.95):
        self.bins = bins
        self.bootstrap = bootstrap
        self.seed = seed
        self.envelope = envelope
        self.ceiling = ceiling
        self.level = level

    def fit(self, x_flops: Any, y: Any) -> SaturatingLaw:
        flops, values = _check_xy(x_flops, y)
        self.support_ = _select(flops, values, self.bins, self.envelope, "saturating law")
        px, py = flops[self.support_], values[self.support_]
        self.flops_ref_ = float(10.0 ** np.median(np.log10(px)))
        self.A_, self.b_, self.gamma_ = _fit_saturating(px / self.flops_ref_, py, self.ceiling)
        self.B_ = float(self.b_ * self.flops_ref_**self.gamma_)
        self.r2_ = _r2(py, self.predict(px))
        self.n_ = int(px.size)
        self.points_ = np.column_stack([px, py])
        self.draws_ = self._bootstrap(px / self.flops_ref_, py)
        self.ci_ = None if not len(self.draws_) else {
            "A": _interval(self.draws_[:, 0], self.level),
            "B": _interval(self.draws_[:, 1] * self.flops_ref_ ** self.draws_[:, 2], self.level),
            "gamma": _interval(self.draws_[:, 2], self.level)}
        return self

    def _bootstrap(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        rng = np.random.default_rng(self.seed)
        draws = []
        for _ in range(int(self.bootstrap)):
            pick = rng.integers(0, x.size, size=x.size)
            if np.unique(x[pick]).size >= 3:
                draws.append(_fit_saturating(x[pick], y[pick], self.ceiling))
        return np.asarray(draws, dtype=float).reshape(-1, 3)

    def predict(self, flops: Any) -> np.ndarray:
        return self.A_ - self.b_ * (np.asarray(flops, dtype=float) / self.flops_ref_) ** (-self.gamma_)

    def predict_interval(self, flops: Any) -> tuple[np.ndarray, np.ndarray]:
        x = np.atleast_1d(np.asarray(flops, dtype=float)) / self.flops_ref_
        if not len(self.draws_):
            fitted = self.predict(x * self.flops_ref_)
            return fitted, fitted
        a, b, g = (self.draws_[:, i : i + 1] for i in range(3))
        return _band(a - b * x[None, :] ** (-g), self.level)

    def flops_for(self, target: float) -> float:
        """Compute at which the law reaches ``target``; inf when the target lies at or above the ceiling ``A_``."""
        return float(_saturating_flops_for(self.A_, self.b_, self.gamma_, target) * self.flops_ref_)

    def flops_for_interval(self, target: float) -> list[float]:
        if not len(self.draws_):
            return [self.flops_for(target)] * 2
        flops = _saturating_flops_for(self.draws_[:, 0], self.draws_[:, 1], self.draws_[:, 2], target)
        with np.errstate(over="ignore"):  # a draw that barely reaches the target needs more FLOPs than a float holds
            return _interval(flops * self.flops_ref_, self.level)


def _saturating_flops_for(a: Any, b: Any, gamma: Any, target: float) -> np.ndarray:
    a, b, gamma = (np.asarray(v, dtype=float) for v in (a, b, gamma))
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        x = ((a - target) / b) ** (-1.0 / gamma)
    x = np.where(b <= 0, 0.0, x)
    return np.where(target >= a, np.inf, x)


def _fit_saturating(x: np.ndarray, y: np.ndarray, ceiling: float | None) -> tuple[float, float, float]:
    """Least-squares ``(A, b, gamma)`` of ``y = A - b * x**(-gamma)`` with ``b >= 0`` and ``A <= ceiling``."""
    best = min((_linear_ab(x ** (-g), y, ceiling) + (g,) for g in _GAMMA_GRID),
               key=lambda p: np.sum((p[0] - p[1] * x ** (-p[2]) - y) ** 2))
    upper_a = np.inf if ceiling is None else float(ceiling)
    lower, upper = np.array([-np.inf, 0.0, 1e-4]), np.array([upper_a, np.inf, 20.0])
    start = np.clip(np.asarray(best, dtype=float), lower, upper)
    result = least_squares(lambda p: p[0] - p[1] * x ** (-p[2]) - y, start, bounds=(lower, upper), method="trf")
    return float(result.x[0]), float(result.x[1]), float(result.x[2])


def _linear_ab(z: np.ndarray, y: np.ndarray, ceiling: float | None) -> tuple[float, float]:
    """For a fixed gamma the law is linear in (A, b): solve it exactly, then respect ``b >= 0`` and the ceiling."""
    a, minus_b = np.linalg.lstsq(np.column_stack([np.ones_like(z), -z]), y, rcond=None)[0]
    a, b = float(a), float(minus_b)
    if b < 0:
        a, b = float(y.mean()), 0.0
    if ceiling is not None and a > ceiling:
        a = float(ceiling)
        b = max(0.0, float(np.sum((a - y) * z) / np.sum(z * z)))
    return a, b


def holdout_error(law: ScalingLaw | SaturatingLaw, x_flops: Any, y: Any, holdout_fraction: float = 0.25) -> dict:
    """Fit ``law`` on the lower-compute points and measure its error on the highest-compute ones.

    A law is only useful if it extrapolates; this is the check the paper could not make. The points are those the law
    fits (the envelope, or all runs); the top ``holdout_fraction`` of the log10(FLOPs) range is held out, and the error
    is in accuracy units so the power and saturating laws are compared on the same scale.

    Returns:
        ``{"rmse", "mae", "n_train", "n_test", "flops_threshold"}``; ``rmse`` is None (with a ``reason``) when too few
        points fall on either side.
    """
    flops, values = _check_xy(x_flops, y)
    support = envelope_indices(flops, values, law.bins) if law.envelope else np.arange(flops.size)
    px, py = flops[support], values[support]
    log_x = np.log10(px)
    cut = log_x.min() + (1.0 - holdout_fraction) * (log_x.max() - log_x.min())
    train, test = log_x < cut, log_x >= cut
    result: dict[str, Any] = {"n_train": int(train.sum()), "n_test": int(test.sum()), "flops_threshold": 10.0**cut}
    if train.sum() < MIN_POINTS + 1 or test.sum() < 1:
        return {"rmse": None, "mae": None, **result, "reason": "too few points on one side of the FLOP threshold"}
    fitted = clone(law).set_params(envelope=False, bootstrap=0).fit(px[train], py[train])
    error = fitted.predict(px[test]) - py[test]
    return {"rmse": float(np.sqrt(np.mean(error**2))), "mae": float(np.mean(np.abs(error))), **result}


@dataclass
class FittedLaws:
    """Every law fitted on one table, shared by ``fit``, ``extrapolate``, the figures and the report."""

    runs: Runs
    accuracy: ScalingLaw
    saturating: SaturatingLaw
    power_holdout: dict
    saturating_holdout: dict
    costs: dict[str, ScalingLaw | None] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    cost_runs: CostRuns = CostRuns.envelope


def fit_laws(runs: Runs, *, bins: int = 19, bootstrap: int = 1000, seed: int = 0,
             cost_runs: CostRuns | str = CostRuns.envelope,
             holdout_fraction: float = 0.25, resample_seeds: bool = True) -> FittedLaws:
    """Fit the accuracy envelope law, its saturating alternative, the held-out check and the cost laws.

    ``cost_runs="envelope"`` fits electricity cost, energy and CO2 against FLOPs on the runs of the accuracy
    envelope (the best run of each FLOP bin), as the paper's Fig. 3b/c does for its best-AutoAttack configurations:
    the cost of the compute that buys the accuracy law. ``"all"`` fits them on every run. With ``resample_seeds``
    and replicates in the table, the accuracy law's bootstrap resamples seeds within recipes.
    """
    cost_runs = choice(CostRuns, cost_runs, "cost_runs")
    flops, acc = runs.flops, runs.accuracy
    groups = recipe_codes(runs.frame) if resample_seeds else None
    power = ScalingLaw(bins=bins, bootstrap=bootstrap, seed=seed).fit(flops, acc, groups=groups)
    saturating = SaturatingLaw(bins=bins, bootstrap=min(bootstrap, 200), seed=seed, ceiling=runs.ceiling)
    saturating.fit(flops, acc)
    laws = FittedLaws(runs, power, saturating, holdout_error(power, flops, acc, holdout_fraction),
                      holdout_error(saturating, flops, acc, holdout_fraction))
    rows = power.support_ if cost_runs is CostRuns.envelope else np.arange(len(runs.frame))
    laws.cost_runs = cost_runs
    for name, column in COST_LAWS.items():
        laws.costs[name] = _fit_cost_law(runs, column, rows, bins, bootstrap, seed, laws.notes)
    return laws


def _fit_cost_law(runs: Runs, column: str, rows: np.ndarray, bins: int, bootstrap: int, seed: int,
                  notes: list[str]) -> ScalingLaw | None:
    """A power law of ``column`` against FLOPs over ``rows`` of the runs (those with a positive value)."""
    if column not in runs.frame:
        return None
    values = pd.to_numeric(runs.frame[column], errors="coerce").to_numpy(dtype=float)[rows]
    keep = np.isfinite(values) & (values > 0)
    if not keep.all():
        notes.append(f"{column}: {int((~keep).sum())} of the {len(rows)} runs have no positive value; left out")
    if keep.sum() < MIN_POINTS:
        notes.append(f"{column}: only {int(keep.sum())} runs with a positive value; no law fitted")
        return None
    try:
        return ScalingLaw(bins=bins, bootstrap=bootstrap, seed=seed, envelope=False).fit(runs.flops[rows][keep],
                                                                                         values[keep])
    except UserError as err:
        notes.append(f"{column}: {err}")
        return None


def law_summary(law: ScalingLaw | None) -> dict | None:
    """The ``{"C", "alpha", "r2", "n", "ci"}`` object of the ``fit --json`` contract."""
    if law is None:
        return None
    return {"C": law.C_, "alpha": law.alpha_, "r2": law.r2_, "n": law.n_, "ci": law.ci_}


def _points(laws: FittedLaws) -> list[dict]:
    frame = laws.runs.frame.iloc[laws.accuracy.support_]
    ids = frame["run_id"].tolist() if "run_id" in frame else [None] * len(frame)
    return [{"run_id": run_id, "train_flops": float(x), "accuracy": float(y)}
            for run_id, (x, y) in zip(ids, laws.accuracy.points_)]


def _resampled(law: ScalingLaw) -> str:
    if getattr(law, "seed_resampled_", False):
        return "seeds within recipes, then envelope points"
    return "envelope points" if law.envelope else "runs"


def summarize_laws(laws: FittedLaws) -> dict:
    """The ``fit --json`` object for already fitted laws."""
    power_error, saturating_error = laws.power_holdout["rmse"], laws.saturating_holdout["rmse"]
    better = None
    if power_error is not None and saturating_error is not None:
        better = "power_law" if power_error <= saturating_error else "saturating_law"
    sat = laws.saturating
    return {
        "metric": laws.runs.metric, "units": laws.runs.units(), "source": laws.runs.source,
        "n_runs": len(laws.runs.frame), "dropped": laws.runs.dropped,
        "accuracy_law": {**law_summary(laws.accuracy), "points": _points(laws), "bins": laws.accuracy.bins,
                         "bootstrap": _resampled(laws.accuracy),
                         "fit": "log-log least squares on the best run per log10(FLOPs) bin; r2 in log-log space"},
        "saturating_law": {"A": sat.A_, "B": sat.B_, "gamma": sat.gamma_, "r2": sat.r2_, "n": sat.n_, "ci": sat.ci_,
                           "holdout_error": saturating_error},
        "power_law_holdout_error": power_error,
        "holdout": {"error": "rmse in accuracy units", "better": better, "power_law": laws.power_holdout,
                    "saturating_law": laws.saturating_holdout},
        **{name: law_summary(law) for name, law in laws.costs.items()},
        "cost_runs": laws.cost_runs.value,
        "notes": laws.notes,
    }


def fit_all(table: pd.DataFrame, *, metric: str = "autoattack_acc", bins: int = 19, min_acc: float | None = None,
            bootstrap: int = 1000, seed: int = 0, cost_runs: CostRuns | str = CostRuns.envelope,
            resample_seeds: bool = True) -> dict:
    """Fit every law on a results table and return exactly the ``robustscale fit --json`` object.

    Args:
        table: a results table under robustscale's column names (see :func:`read_table`).
        metric: the accuracy column (``autoattack_acc``; ``pgd40_acc`` when AutoAttack was not run).
        bins: envelope bins in log10(FLOPs).
        min_acc: drop runs below this accuracy first (collapsed runs), in the table's unit.
        bootstrap: resamples for the intervals.
        seed: seed of the bootstrap.
        cost_runs: ``envelope`` (default): cost, energy and CO2 laws on the accuracy envelope's runs, so
            ``cost_law.n == accuracy_law.n``; ``all``: on every run.
        resample_seeds: with replicates in the table, resample seeds within recipes in the accuracy law's bootstrap.
    """
    runs = usable_runs(table, metric, min_acc)
    return summarize_laws(fit_laws(runs, bins=bins, bootstrap=bootstrap, seed=seed, cost_runs=cost_runs,
                                   resample_seeds=resample_seeds))


def extrapolate(table: pd.DataFrame, target: float, *, gpu: str = "h100", metric: str = "autoattack_acc",
                min_acc: float | None = None, bins: int = 19, bootstrap: int = 1000, seed: int = 0,
                utilization: float | None = None, precision: Precision | str = Precision.bf16,
                cost: CostModel | None = None) -> dict:
    """How much compute, energy, money, CO2 and GPU time ``target`` accuracy needs under each law.

    Args:
        table: a results table.
        target: the robust accuracy wanted, in the table's unit (fraction or percent).
        gpu: GPU short name from the accounting tables, for GPU-years and the TDP-based energy estimate.
        utilization: model-FLOPs utilisation assumed on that GPU (default: the accounting default).
        precision: the GPU precision whose peak is assumed.
        cost: the PUE (and price and carbon intensity) of the TDP-based estimate: the user's cost model (a config's
            ``accounting`` section, ``CostModel.from_config``); default the paper's.
    """
    check_utilization(utilization)  # before the fit, which takes the time
    runs = usable_runs(table, metric, min_acc)
    laws = fit_laws(runs, bins=bins, bootstrap=bootstrap, seed=seed)
    return extrapolate_laws(laws, target, gpu=gpu, utilization=utilization, precision=precision, cost=cost)


def extrapolate_laws(laws: FittedLaws, target: float, *, gpu: str = "h100", utilization: float | None = None,
                     precision: Precision | str = Precision.bf16, cost: CostModel | None = None) -> dict:
    """:func:`extrapolate` for already fitted laws (the report extrapolates to several targets from one fit)."""
    _check_target(laws.runs, target)
    spec, cost = get_gpu(gpu), cost or CostModel()
    precision = choice(Precision, precision, "precision")
    utilization = DEFAULT_UTILIZATION if utilization is None else check_utilization(utilization)
    throughput = spec.peak(precision) * 1e12 * utilization  # FLOP/s actually achieved
    gpu_time = _GpuTime(throughput, spec.tdp_w, cost)
    best = float(laws.runs.accuracy.max())
    return {
        "target": target, "metric": laws.runs.metric, "units": laws.runs.units(), "observed_best": best,
        "assumptions": {
            "gpu": spec.name, "precision": precision.value, "peak_tflops": spec.peak(precision),
            "utilization": utilization, "tdp_w": spec.tdp_w, "pue": cost.pue,
            "flops_unit": "train_flops taken as FLOPs for GPU time",
            "energy_kwh, cost_usd, co2_kg": "the fitted energy, cost and CO2 laws evaluated at the target FLOPs",
            "tdp_energy_kwh": f"GPU-hours x TDP x PUE {cost.pue:g}: an upper-bound estimate, not a measurement"},
        "power_law": _at_target(laws, laws.accuracy, target, gpu_time, "power law"),
        "saturating_law": {**_at_target(laws, laws.saturating, target, gpu_time, "saturating law"),
                           "ceiling": laws.saturating.A_},
    }


def _check_target(runs: Runs, target: float) -> None:
    if not target > 0:
        raise ParameterError(f"target {target}: an accuracy to reach must be positive", "target")
    if runs.accuracy_unit == "fraction" and target > 1:
        raise ParameterError(f"target {target}: {runs.source} holds {runs.metric} as a fraction; pass e.g. target "
                             f"{target / 100:g}", "target")
    if runs.accuracy_unit == "percent" and target >= 100:
        raise ParameterError(f"target {target}: accuracy is in percent, so it must be below 100", "target")


@dataclass(frozen=True)
class _GpuTime:
    flops_per_s: float
    tdp_w: float
    cost: CostModel

    def hours(self, flops: float) -> float:
        return flops / self.flops_per_s / 3600.0

    def energy_kwh(self, flops: float) -> float:
        """Facility energy of ``flops`` at the GPU's TDP (an upper bound), after the cost model's PUE."""
        return self.cost.cost(gpu_energy_kwh(self.hours(flops), self.tdp_w)).energy_kwh


def _at_target(laws: FittedLaws, law: ScalingLaw | SaturatingLaw, target: float, gpu: _GpuTime, name: str) -> dict:
    flops, interval = law.flops_for(target), law.flops_for_interval(target)
    reachable = math.isfinite(flops)
    out: dict[str, Any] = {"train_flops": flops, "interval": interval, "reachable": reachable,
                           "note": _reach_note(laws, law, target, name)}
    both = [flops, *interval]
    out["gpu_hours"] = _quantity([gpu.hours(f) for f in both])
    out["gpu_years"] = _quantity([gpu.hours(f) / (24 * 365) for f in both])
    out["tdp_energy_kwh"] = _quantity([gpu.energy_kwh(f) for f in both])
    for name_, column in (("energy_law", "energy_kwh"), ("cost_law", "cost_usd"), ("co2_law", "co2_kg")):
        cost = laws.costs.get(name_)
        out[column] = None if cost is None else _quantity([_predict_finite(cost, f) for f in both])
    return out


def _predict_finite(law: ScalingLaw, flops: float) -> float:
    return float(law.predict(flops)) if math.isfinite(flops) else math.inf


def _quantity(values: list[float]) -> dict:
    return {"value": values[0], "interval": values[1:]}


def _reach_note(laws: FittedLaws, law: ScalingLaw | SaturatingLaw, target: float, name: str) -> str:
    if isinstance(law, SaturatingLaw) and target >= law.A_:
        return (f"target {target:g} lies above the saturating law's ceiling A = {law.A_:.4g}: "
                "no amount of compute reaches it under this law")
    if isinstance(law, ScalingLaw) and law.alpha_ <= 0:
        return "the fitted power law does not grow with compute (alpha <= 0): no amount of compute reaches the target"
    if target <= laws.runs.accuracy.max():
        return f"target already reached by runs in the table (best {laws.runs.accuracy.max():.4g}); {name} shown"
    return f"{name} extrapolated beyond the largest run ({laws.runs.flops.max():.3g} FLOPs)"
