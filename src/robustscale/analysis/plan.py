"""``robustscale plan``: how to spend a compute budget on robust training, from the N-D law of a table.

A fitted :class:`~robustscale.analysis.ndlaw.NDLaw` gives the compute-optimal model size N* and training samples D*
for a budget C (FLOPs in the table's unit, C = k N D). This module turns them into what a researcher sets: the
predicted loss (and robust accuracy where the table relates the two), epochs over a dataset, and the nearest
WideResNet; or, for a target loss or accuracy, the cheapest budget on the frontier that reaches it.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
from sklearn.isotonic import IsotonicRegression

from robustscale.analysis.ndlaw import NDLaw, _flops_for, fit_nd, nd_summary
from robustscale.datasets import dataset_info
from robustscale.errors import ParameterError, UserError
from robustscale.models import wrn_params

__all__ = ["AccuracyMap", "nearest_wrn", "plan"]

WRN_DEPTHS = tuple(6 * n + 4 for n in range(1, 21))  # 10 ... 124: every depth of the form 6n + 4 up to WRN-124
WRN_WIDTHS = tuple(range(1, 41))
_WRN_PROPORTION = 28 / 10  # WRN-28-10's depth-to-width ratio
_WRN_SHAPE_WEIGHT = 0.1  # WRN-124-40 holds 3.1B parameters, beyond any robust model trained so far


def nearest_wrn(params: float, num_classes: int = 10, in_chans: int = 3) -> dict[str, Any]:
    """A WRN-depth-width (depth 6n + 4, integer width) with about ``params`` parameters.

    Dozens of shapes come within a few percent of a large count (WRN-76-3 and WRN-22-6 hold about the same), so the
    choice also weighs the shape: the score is the log error in parameters plus a tenth of the log distance of the
    depth-to-width proportion from WRN-28-10's, the shape most of the robustness literature scales from (a shape
    twice as deep for its width costs as much as 7% in parameters).
    """
    if not (math.isfinite(params) and params > 0):
        raise UserError(f"no WideResNet has {params} parameters")
    shapes = [(d, w, wrn_params(d, w, num_classes, in_chans)) for d in WRN_DEPTHS for w in WRN_WIDTHS]
    depth, width, count = min(shapes, key=lambda s: abs(math.log(s[2] / params))
                              + _WRN_SHAPE_WEIGHT * abs(math.log(s[0] / s[1] / _WRN_PROPORTION)))
    return {"name": f"wrn_{depth}_{width}", "depth": depth, "width": width, "params": count,
            "ratio": count / params, "num_classes": num_classes}


class AccuracyMap:
    """Robust accuracy as a function of the law's loss-type metric, where the table allows it.

    Robust error is exact (accuracy = ceiling - error). For a loss column (``adv_loss``), a decreasing isotonic fit of
    the table's accuracy on its loss: monotone, assumption-free, and never extrapolated (outside the table's loss
    range it returns the edge value, and :meth:`inside` says so).
    """

    def __init__(self, law: NDLaw, table: pd.DataFrame):
        runs = law.runs_
        self.kind, self.ceiling, self.metric = runs.kind, runs.ceiling, None
        self.loss_range = (float(runs.loss.min()), float(runs.loss.max()))
        self.fit_ = None
        if runs.kind == "robust_error":
            self.metric = runs.column
            return
        for column in ("autoattack_acc", "pgd40_acc"):
            if column in runs.frame:
                acc = pd.to_numeric(runs.frame[column], errors="coerce").to_numpy(dtype=float)
                keep = np.isfinite(acc)
                if keep.sum() >= 3:
                    self.metric = column
                    self.fit_ = IsotonicRegression(increasing=False, out_of_bounds="clip")
                    self.fit_.fit(runs.loss[keep], acc[keep])
                    return

    @property
    def available(self) -> bool:
        return self.metric is not None

    def describe(self) -> str | None:
        if self.kind == "robust_error":
            return f"{self.metric} = {self.ceiling:g} - robust error (exact)"
        if self.fit_ is not None:
            return (f"decreasing isotonic fit of {self.metric} on the loss over the table's runs; clipped to the "
                    f"table's loss range {self.loss_range[0]:.4g} to {self.loss_range[1]:.4g}")
        return None

    def inside(self, loss: float) -> bool:
        return self.kind == "robust_error" or self.loss_range[0] <= loss <= self.loss_range[1]

    def accuracy(self, loss: float) -> float | None:
        if self.kind == "robust_error":
            return float(self.ceiling - loss)
        return None if self.fit_ is None or not math.isfinite(loss) else float(self.fit_.predict([loss])[0])

    def loss_for(self, accuracy: float, source: str) -> float:
        """The loss at which the map reaches ``accuracy``; a one-line error when the table cannot say."""
        if self.kind == "robust_error":
            return float(self.ceiling - accuracy)
        if self.fit_ is None:
            raise ParameterError(f"{source}: no accuracy column next to the loss, so an accuracy target cannot be "
                                 "mapped to a loss; pass a target_loss instead", "target_loss")
        grid = np.linspace(*self.loss_range, 2001)
        acc = self.fit_.predict(grid)  # decreasing in the loss
        if not acc.min() <= accuracy <= acc.max():
            raise ParameterError(f"target_acc {accuracy:g}: outside the accuracies the table relates to its loss "
                                 f"({acc.min():.4g} to {acc.max():.4g}); pass a target_loss for a loss beyond the "
                                 "table", "target_acc", "target_loss")
        return float(grid[np.flatnonzero(acc >= accuracy).max()])


def _dataset_size(law: NDLaw, dataset_size: int | None) -> tuple[int | None, str | None]:
    if dataset_size is not None:
        if dataset_size <= 0:
            raise ParameterError(f"dataset_size {dataset_size}: must be a positive number of training images",
                                 "dataset_size")
        return int(dataset_size), "given (--dataset-size)"
    frame = law.runs_.frame
    names = frame["dataset"].dropna().astype(str).unique() if "dataset" in frame else []
    if len(names) == 1:
        try:
            info = dataset_info(names[0])
        except ValueError:  # not a dataset robustscale knows
            return None, None
        return info.train_size, f"{info.name}'s train split (real images only; pass --dataset-size with synthetic)"
    return None, None


def _num_classes(law: NDLaw) -> int:
    frame = law.runs_.frame
    names = frame["dataset"].dropna().astype(str).unique() if "dataset" in frame else []
    try:
        return dataset_info(names[0]).num_classes if len(names) == 1 else 10
    except ValueError:
        return 10


def _at_budget(law: NDLaw, flops: float, accuracy: AccuracyMap, size: int | None) -> dict[str, Any]:
    """N*, D*, the loss and accuracy there, epochs, the nearest WRN and bootstrap intervals, at one budget."""
    n_star, d_star = float(law.optimal_params(flops)), float(law.optimal_samples(flops))
    if not (math.isfinite(n_star) and n_star > 0 and math.isfinite(d_star) and d_star > 0):
        raise UserError(f"{law.runs_.source}: the fitted law has no compute-optimal split (alpha {law.alpha_:.3g}, "
                        f"beta {law.beta_:.3g}): the loss does not fall with both N and D over this table")
    loss = float(law.optimal_loss(flops))
    runs = law.runs_
    out = {"flops": flops, "params": n_star, "samples": d_star, "loss": loss,
           "accuracy": accuracy.accuracy(loss), "accuracy_in_table_range": accuracy.inside(loss) if accuracy.available
           else None, "epochs": d_star / size if size else None,
           "wrn": nearest_wrn(n_star, _num_classes(law)),
           "beyond_table": {"params": n_star > runs.n.max(), "samples": d_star > runs.d.max()},
           "interval": _intervals(law, flops)}
    return out


def _intervals(law: NDLaw, flops: float) -> dict[str, list[float]] | None:
    """Bootstrap intervals of N*, D* and L* at ``flops`` (k is the table's median, held fixed)."""
    if not len(law.draws_):
        return None
    draws, k = law.raw_draws(), law.k_
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        n_star = draws["G"] * (flops / k) ** draws["a"]
        d_star = flops / k / n_star
        loss = draws["E"] + draws["A"] * n_star ** -draws["alpha"] + draws["B"] * d_star ** -draws["beta"]
    tail = (1 - law.level) / 2
    return {name: [float(v) for v in np.nanquantile(values, [tail, 1 - tail])]
            for name, values in (("params", n_star), ("samples", d_star), ("loss", loss))}


def _target(law: NDLaw, accuracy: AccuracyMap, size: int | None, target_loss: float | None,
            target_acc: float | None) -> dict[str, Any]:
    """The cheapest budget on the frontier that reaches the target, and the plan there (inf when it never does)."""
    source = law.runs_.source
    if target_acc is not None:
        target_loss = accuracy.loss_for(target_acc, source)
        if not target_loss > 0:
            raise ParameterError(f"target_acc {target_acc:g}: at or above the accuracy ceiling; no loss reaches it",
                                 "target_acc")
    if not target_loss > 0:
        raise ParameterError(f"target_loss {target_loss}: a target loss must be positive", "target_loss")
    flops = law.flops_for(target_loss)
    out: dict[str, Any] = {"loss": target_loss, "accuracy": target_acc, "flops": flops,
                           "reachable": math.isfinite(flops)}
    if not out["reachable"]:
        out["note"] = (f"the target lies at or below the law's floor E = {law.E_:.4g}: no budget reaches it on this "
                       "law (see nd_law.identifiability for how well E is known)")
        return out
    if len(law.draws_):
        d = law.raw_draws()
        draws = _flops_for(d["E"], d["A"], d["B"], d["alpha"], d["beta"], law.k_, target_loss)
        tail = (1 - law.level) / 2
        out["flops_interval"] = [float(v) for v in np.quantile(draws, [tail, 1 - tail])]
    out["plan"] = _at_budget(law, flops, accuracy, size)
    return out


def plan(table: pd.DataFrame, flops: float | None = None, *, target_loss: float | None = None,
         target_acc: float | None = None, dataset_size: int | None = None, metric: str | None = None,
         bootstrap: int = 200, seed: int = 0, resample_seeds: bool = True) -> dict[str, Any]:
    """The ``robustscale plan --json`` object: the compute-optimal model and data for a budget, or for a target.

    Args:
        table: a results table with ``params``, ``samples_seen``, ``train_flops`` and a loss-type metric.
        flops: the budget C, in the table's FLOP unit.
        target_loss: a loss (in the law's metric) to reach: the cheapest C on the frontier that reaches it.
        target_acc: the same for a robust accuracy, through the table's loss-to-accuracy relation.
        dataset_size: unique training images, for epochs = D* / dataset_size (default: the table's dataset).
        metric, bootstrap, seed, resample_seeds: as for :class:`~robustscale.analysis.ndlaw.NDLaw`.
    """
    _check_request(flops, target_loss, target_acc)
    law = fit_nd(table, metric=metric, bootstrap=bootstrap, seed=seed, resample_seeds=resample_seeds)
    law.require_k()  # a table without train_flops cannot plan a budget: say so before anything else
    accuracy = AccuracyMap(law, table)
    size, size_source = _dataset_size(law, dataset_size)
    target = None
    if target_loss is not None or target_acc is not None:
        target = _target(law, accuracy, size, target_loss, target_acc)
        if flops is None and not target["reachable"]:
            raise ParameterError(f"target_loss: unreachable: {target['note']}", "target_loss")
    budget = flops if flops is not None else target["flops"]
    out = {"metric": law.runs_.metric, "metric_kind": law.runs_.kind, "source": law.runs_.source,
           **_at_budget(law, budget, accuracy, size), "k": law.k_, "a": law.a_, "b": law.b_,
           "accuracy_metric": accuracy.metric, "accuracy_mapping": accuracy.describe(),
           "dataset_size": size, "dataset_size_source": size_source, "target": target, "nd_law": nd_summary(law)}
    return out


def _check_request(flops: float | None, target_loss: float | None, target_acc: float | None) -> None:
    if flops is None and target_loss is None and target_acc is None:
        raise ParameterError("a plan needs a budget (flops) or a target (target_loss or target_acc)", "flops",
                             "target_loss", "target_acc")
    if target_loss is not None and target_acc is not None:
        raise ParameterError("pass either target_loss (a loss) or target_acc (an accuracy), not both", "target_loss",
                             "target_acc")
    if flops is not None and not (math.isfinite(flops) and flops > 0):
        raise ParameterError(f"flops {flops}: a compute budget must be a positive number of FLOPs", "flops")
