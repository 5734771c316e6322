"""Beyond the paper: the robust loss as a law of model size and data, ``L(N, D) = E + A / N**alpha + B / D**beta``.

The paper fits accuracy against FLOPs only, so it cannot say how a budget should be split between a bigger model
and more data. Bartoldson et al. (ICML 2024, "Adversarial Robustness Limits via Scaling-Law and Human-Alignment
Studies"; code: github.com/bbartoldson/Adversarial-Robustness-Limits, ``scaling_law_utils.py``: ``approach_3``,
``approach_3_loss``, ``grid_search_lbfgs_minimize``, ``N_star``, ``D_star``) fit Hoffmann et al.'s (2022, "Training
Compute-Optimal Large Language Models") approach 3 to the adversarial test loss of WRNs of ``N`` parameters trained
on ``D`` samples (E 0.560, alpha 0.244, beta 0.228, so N* ~ C^0.48), and derive the compute-optimal split from
it. This module is our own implementation of that fit:

- the law in log-sum-exp form, ``log L = LSE(a - alpha log N, b - beta log D, e)`` with ``A, B, E = exp(a, b, e)``,
  so every coefficient stays positive without constraints;
- the Huber loss (delta 1e-3, Hoffmann et al.) of the log residuals, averaged over runs (Bartoldson et al.);
- L-BFGS-B from a grid of starting points, the best fit kept.

Where we differ, and why: Bartoldson et al. start L-BFGS-B from every point of a 5^5 grid over ``(a, b, e, alpha,
beta)``. For a fixed ``(alpha, beta)`` the law is linear in ``(E, A, B)``, so we grid the exponents only, solve the
three coefficients exactly by non-negative least squares on relative errors, and start L-BFGS-B from the best few
of those points: the same search a hundred times cheaper, which the bootstrap (hundreds of refits) needs. ``N`` and
``D`` are divided by their geometric means inside the fit (coefficients near one whatever the units) and reported in
the table's raw units. They fit each configuration's best evaluation over its training
(``get_LNDFlopsFID_at_optimum``); a robustscale run records one final evaluation, so each run is one point.
Exponents are bounded to ``[0, 4]``: a law whose loss grows with N or D is not one. Their code has no intervals; we
add a bootstrap that can resample seeds within recipes, and say which parameters the table cannot pin down (E and B
trade off when the loss has not levelled off in D, for example).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy.optimize import minimize, nnls
from scipy.stats import rankdata
from sklearn.base import BaseEstimator

from robustscale.analysis._table import ACCURACY_METRICS, _numeric, _require_columns
from robustscale.analysis.replicates import has_replicates, recipe_codes, resample_recipes
from robustscale.errors import ParameterError, UserError

__all__ = ["HUBER_DELTA", "LOSS_METRIC", "NDLaw", "PARAMS", "fit_nd", "nd_summary"]

PARAMS = ("E", "A", "B", "alpha", "beta")
HUBER_DELTA = 1e-3  # Hoffmann et al. (2022) approach 3; Bartoldson et al., scaling_law_utils.py approach_3_loss
LOSS_METRIC = "adv_loss"  # the adversarial test loss a run records; robust error 1 - accuracy when a table lacks it
EXPONENT_MAX = 4.0
MIN_RUNS = 6  # five parameters: fewer runs than that interpolate, they do not fit
BOOTSTRAP_MAX = 200  # each draw is a non-linear refit; 200 draws give 95% percentiles to about a tenth of their width
_EXPONENT_GRID = (0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.6, 0.8, 1.0, 1.5)
_SPAN_FACTOR = 10.0  # a coefficient whose interval spans more than a factor of ten is not pinned down
_CORRELATED = 0.9  # |correlation| from which two parameters are reported as trading off
_LBFGS = {"ftol": 1e-11, "gtol": 1e-9, "maxiter": 2000}


# ------------------------------------------------------------------------------------------------ the table


@dataclass(frozen=True)
class NDRuns:
    """The runs an N-D law is fitted on: ``N`` (params), ``D`` (samples_seen) and the loss-type metric ``L``.

    Attributes:
        frame: the usable rows.
        metric: what ``L`` is: ``adv_loss`` (or another loss column), or ``1 - <accuracy column>``.
        kind: ``"loss"`` (a loss column as given) or ``"robust_error"`` (ceiling minus an accuracy column).
        column: the table column ``L`` comes from.
        ceiling: 1 or 100 for robust error (the accuracy's unit), None for a loss.
        source: the file the table came from, for messages.
        dropped: rows set aside and why.
    """

    frame: pd.DataFrame
    metric: str
    kind: str
    column: str
    ceiling: float | None
    source: str
    dropped: dict[str, int]

    @property
    def n(self) -> np.ndarray:
        return self.frame["params"].to_numpy(dtype=float)

    @property
    def d(self) -> np.ndarray:
        return self.frame["samples_seen"].to_numpy(dtype=float)

    @property
    def loss(self) -> np.ndarray:
        return self.frame["_nd_loss"].to_numpy(dtype=float)


def _choose_metric(table: pd.DataFrame, metric: str | None, source: str) -> tuple[str, str]:
    """``(column, kind)``: the loss column as given, or an accuracy column to turn into robust error."""
    if metric is None:
        if LOSS_METRIC in table and pd.to_numeric(table[LOSS_METRIC], errors="coerce").notna().any():
            return LOSS_METRIC, "loss"
        for column in ACCURACY_METRICS[:2]:
            if column in table and pd.to_numeric(table[column], errors="coerce").notna().any():
                return column, "robust_error"
        raise ParameterError(f"{source}: no '{LOSS_METRIC}' or accuracy column with values; pass a metric column "
                             "(a loss column, or an accuracy column to fit robust error 1 - accuracy)", "metric")
    _require_columns(table, (metric,), source)
    is_accuracy = metric in ACCURACY_METRICS or metric.endswith("_acc")
    return metric, "robust_error" if is_accuracy else "loss"


def nd_runs(table: pd.DataFrame, metric: str | None = None) -> NDRuns:
    """Select the runs an N-D law may use, or say in one line why the table cannot be used.

    Needs ``params`` (N, a count), ``samples_seen`` (D, training samples seen, a count) and a loss-type metric: the
    ``adv_loss`` column when the table has one, else robust error from ``autoattack_acc`` (``pgd40_acc`` when
    AutoAttack was not run); ``metric`` chooses (an ``*_acc`` column becomes robust error). Only ``done`` runs count;
    rows with a missing or non-positive N, D or metric are dropped and counted.
    """
    source = str(table.attrs.get("source", "table"))
    _require_columns(table, ("params", "samples_seen"), source)
    column, kind = _choose_metric(table, metric, source)
    frame, dropped = table, {}
    if "status" in frame:
        done = frame["status"].astype(str).str.strip().str.lower() == "done"
        dropped["not_done"] = int((~done).sum())
        frame = frame[done]
    values = {c: _numeric(frame, c, source) for c in ("params", "samples_seen", column)}
    ceiling = None
    if kind == "robust_error":
        ceiling = 100.0 if float(values[column].max()) > 1.5 else 1.0
        values["_nd_loss"] = ceiling - values[column]
    else:
        values["_nd_loss"] = values[column]
    frame = frame.assign(**values)
    keep = np.ones(len(frame), dtype=bool)
    for name, col in (("params", "params"), ("samples_seen", "samples_seen"), ("metric", "_nd_loss")):
        ok = (frame[col] > 0).to_numpy() & np.isfinite(frame[col].to_numpy(dtype=float))
        dropped[f"missing_or_non_positive_{name}"] = int((keep & ~ok).sum())
        keep &= ok
    frame = frame[keep].reset_index(drop=True)
    name = column if kind == "loss" else f"1 - {column}" if ceiling == 1.0 else f"100 - {column}"
    _check_spread(frame, source, name)
    return NDRuns(frame, name, kind, column, ceiling, source, {k: v for k, v in dropped.items() if v})


def _check_spread(frame: pd.DataFrame, source: str, metric: str) -> None:
    if len(frame) < MIN_RUNS:
        raise UserError(f"{source}: only {len(frame)} usable runs (done, params > 0, samples_seen > 0, {metric} > 0); "
                        f"an N-D law has five parameters and needs at least {MIN_RUNS}")
    for column, what in (("params", "model sizes"), ("samples_seen", "data amounts")):
        if frame[column].nunique() < 2:
            raise UserError(f"{source}: every usable run has the same {column} ({frame[column].iloc[0]:.4g}); an N-D "
                            f"law needs at least two {what} (three or more to say anything)")


# ------------------------------------------------------------------------------------------------ the fit


@dataclass(frozen=True)
class _Data:
    """Log inputs of one fit, N and D already divided by their reference values."""

    log_n: np.ndarray
    log_d: np.ndarray
    log_l: np.ndarray

    def take(self, index: np.ndarray) -> _Data:
        return _Data(self.log_n[index], self.log_d[index], self.log_l[index])


def _terms(theta: np.ndarray, data: _Data) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Log-sum-exp of the three terms and each term's share of the predicted loss (the softmax weights)."""
    a, b, e, alpha, beta = theta
    t_n, t_d = a - alpha * data.log_n, b - beta * data.log_d
    top = np.maximum(np.maximum(t_n, t_d), e)
    w_n, w_d, w_e = np.exp(t_n - top), np.exp(t_d - top), np.exp(e - top)
    total = w_n + w_d + w_e
    return top + np.log(total), (w_n / total, w_d / total, w_e / total)


def _objective(theta: np.ndarray, data: _Data, delta: float) -> tuple[float, np.ndarray]:
    """Mean Huber loss of the log residuals, divided by delta (so it reads as a mean absolute log error), with its
    exact gradient (L-BFGS-B then needs no finite differences)."""
    log_pred, (w_n, w_d, w_e) = _terms(theta, data)
    residual = log_pred - data.log_l
    size = np.abs(residual)
    value = float(np.mean(np.where(size <= delta, 0.5 * residual * residual, delta * (size - 0.5 * delta)))) / delta
    slope = np.clip(residual, -delta, delta) / (delta * residual.size)  # d(value)/d(residual)
    g_n, g_d = slope @ w_n, slope @ w_d
    grad = np.array([g_n, g_d, slope @ w_e, -(slope * w_n) @ data.log_n, -(slope * w_d) @ data.log_d])
    return value, grad


def _bounds(data: _Data) -> list[tuple[float, float]]:
    low, high = float(data.log_l.min()) - 25.0, float(data.log_l.max()) + 10.0
    return [(low, high)] * 3 + [(0.0, EXPONENT_MAX)] * 2


def _grid_starts(data: _Data, delta: float, count: int) -> list[np.ndarray]:
    """The best ``count`` points of the exponent grid, each with its (E, A, B) solved by NNLS on relative error."""
    n, d, loss = np.exp(data.log_n), np.exp(data.log_d), np.exp(data.log_l)
    floor = 1e-3 * float(loss.min())  # a term NNLS drops starts small but alive, so L-BFGS-B can still grow it
    scored = []
    for alpha, beta in itertools.product(_EXPONENT_GRID, _EXPONENT_GRID):
        design = np.column_stack([n**-alpha, d**-beta, np.ones_like(n)]) / loss[:, None]
        coef = np.maximum(nnls(design, np.ones_like(n))[0], floor)
        theta = np.array([math.log(coef[0]), math.log(coef[1]), math.log(coef[2]), alpha, beta])
        scored.append((_objective(theta, data, delta)[0], theta))
    scored.sort(key=lambda pair: pair[0])
    return [theta for _, theta in scored[:count]]


def _refine(data: _Data, starts: list[np.ndarray], delta: float) -> list[tuple[float, np.ndarray]]:
    """L-BFGS-B from every start: the distinct optima found, best (lowest objective) first."""
    bounds = _bounds(data)
    low, high = np.array([lo for lo, _ in bounds]), np.array([hi for _, hi in bounds])
    optima: list[tuple[float, np.ndarray]] = []
    for start in starts:
        result = minimize(_objective, np.clip(start, low, high), args=(data, delta), jac=True, method="L-BFGS-B",
                          bounds=bounds, options=_LBFGS)
        x = np.asarray(result.x, dtype=float)
        if all(np.max(np.abs(x - other)) > 1e-3 for _, other in optima):
            optima.append((float(result.fun), x))
    return sorted(optima, key=lambda pair: pair[0])


def _gauss_newton(theta: np.ndarray, data: _Data) -> dict[str, Any]:
    """Standard errors and correlations of (ln E, ln A, ln B, alpha, beta) from the Gauss-Newton Hessian.

    With delta 1e-3 the Huber objective is nearly an absolute error, whose Hessian is zero almost everywhere, so the
    curvature used is that of least squares on the same log residuals (the Fisher information if they were Gaussian).
    A and B here are the N and D terms at the table's geometric-mean N and D, where the law is pinned (their raw
    values are at N = 1, D = 1, far outside the data, and correlate with the exponents for that reason alone).
    """
    log_pred, w = _terms(theta, data)
    residual = log_pred - data.log_l
    jac = np.column_stack([w[2], w[0], w[1], -w[0] * data.log_n, -w[1] * data.log_d])  # the order of PARAMS
    dof = max(residual.size - len(PARAMS), 1)
    info = jac.T @ jac
    cov = float(np.sum(residual**2)) / dof * np.linalg.pinv(info)
    se = np.sqrt(np.clip(np.diag(cov), 0.0, None))
    with np.errstate(divide="ignore", invalid="ignore"):
        corr = cov / np.outer(se, se)
        scale = np.sqrt(np.diag(info))
        eig = np.linalg.eigvalsh(info / np.outer(scale, scale)) if np.all(scale > 0) else np.zeros(len(PARAMS))
    condition = float(eig.max() / eig.min()) if eig.min() > 0 else math.inf
    return {"se": dict(zip(PARAMS, se.tolist())), "corr": corr, "condition_number": condition}


class NDLaw(BaseEstimator):
    """``L(N, D) = E + A / N**alpha + B / D**beta`` fitted as Hoffmann et al. approach 3, with bootstrap intervals.

    ``NDLaw().fit(table)`` reads ``params`` (N), ``samples_seen`` (D) and the loss-type metric from a results table
    (see :func:`nd_runs`); learned values (``E_, A_, B_, alpha_, beta_``, the frontier exponents ``a_, b_`` and
    coefficient ``G_``, the FLOPs per parameter-sample ``k_``) are in the table's raw units.

    Args:
        metric: the loss column, or an accuracy column to fit robust error; None: ``adv_loss``, else robust error.
        bootstrap: resamples for the intervals (each a refit; capped at :data:`BOOTSTRAP_MAX`); 0 skips them.
        seed: seed of the bootstrap.
        level: coverage of the intervals.
        resample_seeds: when the table has replicates (runs of one recipe with different seeds), resample recipes as
            groups and seeds within them, so the intervals include seed noise; else resample runs.
        starts: grid points refined by L-BFGS-B in the main fit.
        delta: the Huber loss's threshold on log residuals.
    """

    def __init__(self, metric: str | None = None, bootstrap: int = 200, seed: int = 0, level: float = 0.95,
                 resample_seeds: bool = True, starts: int = 8, delta: float = HUBER_DELTA):
        self.metric = metric
        self.bootstrap = bootstrap
        self.seed = seed
        self.level = level
        self.resample_seeds = resample_seeds
        self.starts = starts
        self.delta = delta

    # -------------------------------------------------------------------------------------------- fitting

    def fit(self, table: pd.DataFrame) -> NDLaw:
        """Fit the law on a results table; raises :class:`UserError` when the table cannot support it."""
        runs = nd_runs(table, self.metric)
        self.runs_ = runs
        self.n_ref_, self.d_ref_ = float(np.exp(np.mean(np.log(runs.n)))), float(np.exp(np.mean(np.log(runs.d))))
        data = _Data(np.log(runs.n / self.n_ref_), np.log(runs.d / self.d_ref_), np.log(runs.loss))
        optima = _refine(data, _grid_starts(data, self.delta, self.starts), self.delta)
        (self.objective_, self.theta_), self.optima_ = optima[0], [theta for _, theta in optima[:2]]
        self._set_params(self.theta_)
        log_pred, _ = _terms(self.theta_, data)
        total = float(np.sum((data.log_l - data.log_l.mean()) ** 2))
        self.r2_ = float(1.0 - np.sum((data.log_l - log_pred) ** 2) / total) if total > 0 else float("nan")
        self.n_ = int(runs.frame.shape[0])
        self.k_ = _flops_per_param_sample(runs.frame)
        codes = recipe_codes(runs.frame)
        self.replicates_ = bool(has_replicates(codes))
        self.resampled_ = "recipes, then seeds within them" if self.resample_seeds and self.replicates_ else "runs"
        self.draws_ = self._bootstrap(data, codes if self.resample_seeds else np.arange(self.n_))
        self.ci_ = self._intervals()
        self.hessian_ = _gauss_newton(self.theta_, data)
        self.identifiability_ = _identifiability(self)
        return self

    def _set_params(self, theta: np.ndarray) -> None:
        a, b, e, alpha, beta = (float(v) for v in theta)
        self.E_, self.alpha_, self.beta_ = math.exp(e), alpha, beta
        self.A_ = math.exp(a) * self.n_ref_**alpha  # A (N / n_ref)^-alpha = A n_ref^alpha N^-alpha
        self.B_ = math.exp(b) * self.d_ref_**beta
        self.a_, self.b_ = _split(alpha, beta)
        self.G_ = float(_g(self.A_, self.B_, alpha, beta))

    def _bootstrap(self, data: _Data, codes: np.ndarray) -> np.ndarray:
        """Rows of (a, b, e, alpha, beta) in the fit's centred units, one per usable resample.

        Each resample is refitted from the full fit's optimum and from its second-best distinct optimum when the grid
        found one: a resample of the same runs lies near the same minimum, and a second basin, if the table has one,
        stays in reach. (Redoing the whole grid per draw would multiply the cost by ten for the same answers.)
        """
        draws = min(int(self.bootstrap), BOOTSTRAP_MAX)
        rng = np.random.default_rng(self.seed)
        out = []
        for _ in range(draws):
            index = resample_recipes(codes, rng)
            sample = data.take(index)
            if np.unique(sample.log_n).size < 2 or np.unique(sample.log_d).size < 2:
                continue  # a resample with one model size (or one data amount) cannot fit the law
            out.append(_refine(sample, self.optima_, self.delta)[0][1])
        return np.asarray(out, dtype=float).reshape(-1, 5)

    def raw_draws(self) -> dict[str, np.ndarray]:
        """The bootstrap draws in raw units: ``{E, A, B, alpha, beta, a, b, G}`` arrays."""
        a, b, e, alpha, beta = self.draws_.T
        raw_a, raw_b = np.exp(a) * self.n_ref_**alpha, np.exp(b) * self.d_ref_**beta
        split_a, split_b = _split(alpha, beta)
        return {"E": np.exp(e), "A": raw_a, "B": raw_b, "alpha": alpha, "beta": beta, "a": split_a, "b": split_b,
                "G": _g(raw_a, raw_b, alpha, beta)}

    def _intervals(self) -> dict[str, list[float]] | None:
        if not len(self.draws_):
            return None
        return {name: _percentiles(values, self.level) for name, values in self.raw_draws().items()}

    # -------------------------------------------------------------------------------------------- using it

    def predict(self, n: Any, d: Any) -> np.ndarray:
        """The law's loss for models of ``n`` parameters trained on ``d`` samples (raw units, broadcast)."""
        n, d = np.asarray(n, dtype=float), np.asarray(d, dtype=float)
        return self.E_ + self.A_ * n**-self.alpha_ + self.B_ * d**-self.beta_

    def optimal_params(self, flops: Any) -> np.ndarray:
        """N*(C) = G (C / k)^a: the model size that minimises the law's loss at compute C (see :func:`_g`)."""
        return self.G_ * (np.asarray(flops, dtype=float) / self.require_k()) ** self.a_

    def optimal_samples(self, flops: Any) -> np.ndarray:
        """D*(C) = (C / k) / N*(C) = (C / k)^b / G."""
        return np.asarray(flops, dtype=float) / self.require_k() / self.optimal_params(flops)

    def optimal_loss(self, flops: Any) -> np.ndarray:
        """L*(C) = E + (A G^-alpha + B G^beta) (C / k)^-gamma with gamma = alpha beta / (alpha + beta)."""
        return self.predict(self.optimal_params(flops), self.optimal_samples(flops))

    def flops_for(self, target_loss: float) -> float:
        """The cheapest compute whose compute-optimal model reaches ``target_loss``; inf when it lies at or below E.

        Along the frontier the loss falls as a power of C towards E (:meth:`optimal_loss`), so the inverse is closed
        form: C = k ((A G^-alpha + B G^beta) / (target - E))^(1 / gamma).
        """
        return float(_flops_for(self.E_, self.A_, self.B_, self.alpha_, self.beta_, self.require_k(), target_loss))

    def require_k(self) -> float:
        """k, or a one-line error for a table without train_flops (a budget cannot be split without it)."""
        if self.k_ is None:
            raise UserError(f"{self.runs_.source}: no train_flops on the fitted runs, so compute cannot be turned into "
                            "params x samples; add the column or map it (mapping train_flops=YOUR_COLUMN)", "mapping")
        return self.k_


def _split(alpha: Any, beta: Any) -> tuple[Any, Any]:
    """a = beta / (alpha + beta), b = alpha / (alpha + beta); NaN when neither N nor D lowers the loss."""
    alpha, beta = np.asarray(alpha, dtype=float), np.asarray(beta, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        total = np.where(alpha + beta > 0, alpha + beta, np.nan)
        a, b = beta / total, alpha / total
    return (float(a), float(b)) if a.ndim == 0 else (a, b)


def _g(a_coef: Any, b_coef: Any, alpha: Any, beta: Any) -> Any:
    """G = (alpha A / (beta B))^(1 / (alpha + beta)), the coefficient of the compute-optimal model size.

    Derivation. With C = k N D, a budget fixes D = (C/k) / N, so along it
    L(N) = E + A N^-alpha + B (C/k)^-beta N^beta. Setting dL/dN = 0:
    -alpha A N^(-alpha-1) + beta B (C/k)^-beta N^(beta-1) = 0, i.e. alpha A N^-alpha = beta B (C/k)^-beta N^beta,
    so N^(alpha+beta) = (alpha A / (beta B)) (C/k)^beta and N* = G (C/k)^a with a = beta / (alpha + beta). The
    second derivative is positive there (both terms are convex in log N), so this is the minimum, and
    D* = (C/k) / N* = G^-1 (C/k)^b with b = alpha / (alpha + beta). Bartoldson et al.'s ``N_star`` is the same.
    """
    a_coef, b_coef, alpha, beta = (np.asarray(v, dtype=float) for v in (a_coef, b_coef, alpha, beta))
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        return (alpha * a_coef / (beta * b_coef)) ** (1.0 / (alpha + beta))


def _flops_for(e: Any, a_coef: Any, b_coef: Any, alpha: Any, beta: Any, k: float, target: float) -> np.ndarray:
    e, a_coef, b_coef, alpha, beta = (np.asarray(v, dtype=float) for v in (e, a_coef, b_coef, alpha, beta))
    g = _g(a_coef, b_coef, alpha, beta)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        gamma = alpha * beta / (alpha + beta)
        scale = a_coef * g**-alpha + b_coef * g**beta
        flops = k * (scale / (target - e)) ** (1.0 / gamma)
    return np.where((target > e) & (gamma > 0) & np.isfinite(flops), flops, np.inf)


def _flops_per_param_sample(frame: pd.DataFrame) -> float | None:
    """k = median of train_flops / (params x samples_seen): what one parameter seeing one sample costs, all in.

    For plain training k is about 6 (forward and backward); adversarial training multiplies it by the attack steps
    plus one, and robustscale's exact counts include what the formula omits, so it is measured, not assumed.
    """
    if "train_flops" not in frame:
        return None
    flops = pd.to_numeric(frame["train_flops"], errors="coerce").to_numpy(dtype=float)
    ratio = flops / (frame["params"].to_numpy(dtype=float) * frame["samples_seen"].to_numpy(dtype=float))
    ratio = ratio[np.isfinite(ratio) & (ratio > 0)]
    return float(np.median(ratio)) if ratio.size else None


def _percentiles(values: np.ndarray, level: float) -> list[float]:
    values = np.asarray(values, dtype=float)
    values = values[~np.isnan(values)]
    if not values.size:
        return [float("nan"), float("nan")]
    tail = (1.0 - level) / 2.0
    return [float(v) for v in np.quantile(values, [tail, 1.0 - tail])]


# ------------------------------------------------------------------------------------------ identifiability


def _identifiability(law: NDLaw) -> dict[str, Any]:
    """Which parameters the table pins down, from the bootstrap when there is one, else the Gauss-Newton Hessian.

    A coefficient (E, A, B) is not pinned down when its interval spans more than a factor of ten; an exponent when
    its interval is wider than its value or reaches a bound (0 or 4). Pairs whose estimates correlate beyond 0.9
    trade off: the table constrains their combination, not each one (rank correlation over the bootstrap draws).
    """
    spans, corr, method = _spans_from_bootstrap(law) if len(law.draws_) >= 20 else _spans_from_hessian(law)
    unpinned = [p for p in PARAMS if not _pinned(p, spans[p], getattr(law, f"{p}_"))]
    pairs = list(itertools.combinations(range(len(PARAMS)), 2))
    tradeoffs = [{"params": [PARAMS[i], PARAMS[j]], "corr": float(corr[i, j])} for i, j in pairs
                 if np.isfinite(corr[i, j]) and abs(corr[i, j]) >= _CORRELATED]
    table = {p: {q: _finite(corr[i, j]) for j, q in enumerate(PARAMS)} for i, p in enumerate(PARAMS)}
    return {"method": method, "pinned": [p for p in PARAMS if p not in unpinned], "unidentified": unpinned,
            "tradeoffs": tradeoffs, "correlation": table, "notes": _notes(law, unpinned, table),
            "hessian": {"condition_number": law.hessian_["condition_number"], "se": law.hessian_["se"],
                        "se_of": "ln E, ln A, ln B (the terms at the table's geometric-mean N and D), alpha, beta"}}


def _finite(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None


def _spans_from_bootstrap(law: NDLaw) -> tuple[dict[str, tuple[float, float]], np.ndarray, str]:
    a, b, e, alpha, beta = law.draws_.T
    centred = np.column_stack([e, a, b, alpha, beta])  # PARAMS order, coefficients in logs at the reference point
    lows, highs = np.quantile(centred, [(1 - law.level) / 2, (1 + law.level) / 2], axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):  # rank correlation: a draw whose E ran to 0 is one rank
        corr = np.corrcoef(rankdata(centred, axis=0), rowvar=False)
    return dict(zip(PARAMS, zip(lows, highs))), np.atleast_2d(corr), f"bootstrap ({len(law.draws_)} draws)"


def _spans_from_hessian(law: NDLaw) -> tuple[dict[str, tuple[float, float]], np.ndarray, str]:
    a, b, e, alpha, beta = law.theta_
    centre = dict(zip(PARAMS, (e, a, b, alpha, beta)))
    z = 1.959964
    spans = {p: (centre[p] - z * law.hessian_["se"][p], centre[p] + z * law.hessian_["se"][p]) for p in PARAMS}
    return spans, law.hessian_["corr"], "Gauss-Newton Hessian (no bootstrap)"


def _pinned(name: str, span: tuple[float, float], value: float) -> bool:
    low, high = span
    if not (np.isfinite(low) and np.isfinite(high)):
        return False
    if name in ("E", "A", "B"):  # spans of logs
        return high - low <= math.log(_SPAN_FACTOR)
    at_bound = low <= 1e-6 or high >= EXPONENT_MAX - 1e-6
    return not at_bound and high - low <= value


def _partners(names: tuple[str, ...], corr: dict[str, dict[str, float | None]]) -> str:
    """``"; it trades off with B (corr -0.78), beta (corr +0.78)"``: the two parameters outside ``names`` most
    correlated with the last of them."""
    others = [(q, c) for q, c in corr[names[-1]].items() if q not in names and c is not None and abs(c) >= 0.5]
    others = sorted(others, key=lambda pair: -abs(pair[1]))[:2]
    verb = "it trades" if len(names) == 1 else "they trade"
    return f"; {verb} off with " + ", ".join(f"{q} (corr {c:+.2f})" for q, c in others) if others else ""


def _notes(law: NDLaw, unpinned: list[str], corr: dict[str, dict[str, float | None]]) -> list[str]:
    """One sentence per group of parameters the table cannot pin down, saying which runs would."""
    runs = law.runs_
    n_span, d_span = runs.n.max() / runs.n.min(), runs.d.max() / runs.d.min()
    notes = []
    if "E" in unpinned:
        notes.append(f"E (the loss that no N or D removes) is not pinned down{_partners(('E',), corr)}: the loss has "
                     f"not levelled off over the table's D ({runs.d.min():.3g} to {runs.d.max():.3g} samples) and N "
                     f"({runs.n.min():.3g} to {runs.n.max():.3g}); runs with more data (and larger models) would "
                     "fix it")
    for term, names, axis, span in (("model-size", ("A", "alpha"), "N", n_span), ("data", ("B", "beta"), "D", d_span)):
        missing = [p for p in names if p in unpinned]
        if missing:
            notes.append(f"{' and '.join(missing)} (the {term} term) not pinned down{_partners(tuple(missing), corr)}: "
                         f"the table's {axis} spans {span:.3g}x; add runs with {axis} further apart")
    if {"alpha", "beta"} & set(unpinned):
        notes.append("the compute-optimal split (a, b) inherits this uncertainty: read N* and D* with their intervals")
    return notes


# ------------------------------------------------------------------------------------------------ summaries


def fit_nd(table: pd.DataFrame, *, metric: str | None = None, bootstrap: int = 200, seed: int = 0,
           resample_seeds: bool = True, level: float = 0.95) -> NDLaw:
    """Fit :class:`NDLaw` on a table (the shared entry point of ``fit --law nd`` and ``plan``)."""
    return NDLaw(metric=metric, bootstrap=bootstrap, seed=seed, resample_seeds=resample_seeds, level=level).fit(table)


def nd_summary(law: NDLaw) -> dict[str, Any]:
    """The ``nd_law`` object of ``robustscale fit --law nd --json``: parameters, intervals and diagnostics."""
    runs = law.runs_
    return {
        "E": law.E_, "A": law.A_, "B": law.B_, "alpha": law.alpha_, "beta": law.beta_, "a": law.a_, "b": law.b_,
        "G": law.G_, "k": law.k_, "r2": law.r2_, "n": law.n_, "ci": law.ci_,
        "metric": runs.metric, "metric_kind": runs.kind, "metric_column": runs.column,
        "units": {"N": "params (count)", "D": "samples_seen (training samples seen, a count)",
                  "L": f"{runs.metric}, " + ("as in the table" if runs.kind == "loss" else
                                             "robust error in the accuracy's unit" +
                                             (" (percent)" if runs.ceiling == 100.0 else " (fraction)")),
                  "k": "train_flops / (params x samples_seen), median over runs"},
        "law": "L(N, D) = E + A / N**alpha + B / D**beta; N*(C) = G (C/k)**a, D*(C) = (C/k) / N*(C)",
        "fit": f"Huber (delta {law.delta:g}) on log residuals, log-sum-exp form, L-BFGS-B from {law.starts} grid "
               "starts (Hoffmann et al. approach 3; Bartoldson et al.); r2 in log space",
        "bootstrap": {"draws": int(len(law.draws_)), "resampled": law.resampled_, "replicates": law.replicates_,
                      "level": law.level},
        "range": {"N": [float(runs.n.min()), float(runs.n.max())], "D": [float(runs.d.min()), float(runs.d.max())],
                  "L": [float(runs.loss.min()), float(runs.loss.max())]},
        "identifiability": law.identifiability_,
    }


def nd_fit_summary(table: pd.DataFrame, *, metric: str | None = None, bootstrap: int = 200, seed: int = 0,
                   resample_seeds: bool = True) -> dict[str, Any]:
    """Exactly the ``robustscale fit --law nd --json`` object."""
    law = fit_nd(table, metric=metric, bootstrap=bootstrap, seed=seed, resample_seeds=resample_seeds)
    runs = law.runs_
    return {"law": "nd", "metric": runs.metric, "metric_kind": runs.kind, "source": runs.source,
            "n_runs": law.n_, "dropped": runs.dropped, "nd_law": nd_summary(law)}
