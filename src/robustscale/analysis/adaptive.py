"""Choosing which runs of a grid to train next, so that the envelope law is learned for a fraction of the compute.

The paper trained every recipe of its grid (320 runs, more than ten thousand GPU hours: section III-A) to fit one law,
yet only the best run of each of 19 log10(FLOPs) bins enters the fit (section IV-B): most of the grid's compute buys
runs the law never sees. A strategy here looks at the runs finished so far and the recipes not yet trained (with the
FLOPs each would cost) and says which ``k`` to train next. The replay harness (:mod:`robustscale.analysis.replay`)
measures how close each strategy gets to the full grid's alpha for a given share of its compute; a live sweep calls
the same ``select``.

Every strategy has one method, ``select(finished, candidates, k)``:

* ``finished``: one row per trained run with its recipe columns, ``train_flops`` and the accuracy column (``metric``;
  missing or 0 for a collapsed or failed run);
* ``candidates``: one row per untrained recipe with its recipe columns and planned ``train_flops``; nothing else is
  read from it (the replay passes no outcome columns, so no strategy can peek);
* the result: up to ``k`` labels of ``candidates.index``, best first.

``select`` keeps no state between calls and draws its randomness from ``(seed, len(finished))``: given the same
finished runs it returns the same choice, so a resumed sweep continues the plan it was following.

Strategies: ``random`` and ``cheapest-first`` (baselines), ``crude`` (the issue's first attempt: one gradient boosting
model, predicted gain over the bin's best divided by sqrt(cost)) and ``envelope`` (ours, see :class:`EnvelopeGain`).
The two model-based strategies first train a few cheap runs that together show every value of every recipe axis.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import pandas as pd
from scipy.stats import norm
from sklearn.base import BaseEstimator
from sklearn.ensemble import GradientBoostingRegressor

from robustscale.analysis.adaptive_law import law_interval
from robustscale.analysis.predictor import BOOLEAN_FEATURES, CATEGORICAL_FEATURES, RECIPE_FEATURES, recipe_features
from robustscale.analysis.scaling import envelope_indices
from robustscale.errors import ParameterError, UserError, shown

_LOG_FLOOR = 1e-3  # accuracies below this fraction of the best seen count as collapsed when taken to log space
_CHECK_BOOTSTRAP = 200  # resamples of the interval a strategy checks before replicating (a choice, not a report)


class Strategy(BaseEstimator):
    """Base of the strategies: stores the arguments (scikit-learn contract) and checks ``select``'s inputs.

    Args:
        seed: seed of every random choice; with the same finished runs, ``select`` answers the same.
        metric: the accuracy column of ``finished``.
        bins: equal-width bins in log10(FLOPs) over the whole grid, as in the envelope law (the paper: 19).
    """

    name: ClassVar[str] = ""

    def __init__(self, seed: int = 0, metric: str = "autoattack_acc", bins: int = 19):
        self.seed = seed
        self.metric = metric
        self.bins = bins

    def select(self, finished: pd.DataFrame, candidates: pd.DataFrame, k: int = 1) -> list:
        """Labels of ``candidates.index`` to train next, at most ``k``, best first."""
        if k < 1 or candidates.empty:
            return []
        if "train_flops" not in candidates:
            raise UserError("candidates need their planned 'train_flops' to be chosen by cost")
        return list(self._select(finished, candidates, k))[:k]

    def _select(self, finished: pd.DataFrame, candidates: pd.DataFrame, k: int) -> list:
        raise NotImplementedError

    def _rng(self, finished: pd.DataFrame) -> np.random.Generator:
        """Randomness that depends only on the seed and how far the sweep has got (stateless, resumable)."""
        return np.random.default_rng([int(self.seed), len(finished)])


class RandomChoice(Strategy):
    """Untrained recipes in random order: what a budget-capped grid sweep amounts to."""

    name = "random"

    def _select(self, finished: pd.DataFrame, candidates: pd.DataFrame, k: int) -> list:
        order = self._rng(finished).permutation(len(candidates))
        return list(candidates.index[order[:k]])


class CheapestFirst(Strategy):
    """The cheapest untrained recipes first: many runs, but never the high-compute end of the law."""

    name = "cheapest-first"

    def _select(self, finished: pd.DataFrame, candidates: pd.DataFrame, k: int) -> list:
        order = np.argsort(_flops(candidates), kind="stable")
        return list(candidates.index[order[:k]])


class _ModelStrategy(Strategy):
    """A strategy that learns accuracy from the recipe: it first covers every value of every recipe axis cheaply."""

    def _select(self, finished: pd.DataFrame, candidates: pd.DataFrame, k: int) -> list:
        features = search_features(pd.concat([finished, candidates], ignore_index=True))
        cover = cover_axes(finished, candidates, features)
        if cover or _known(finished, self.metric).sum() < 2:
            return (cover or CheapestFirst()._select(finished, candidates, k))[:k]
        done_x, cand_x = encode_recipes(finished, candidates, features)
        return self._choose(finished, candidates, done_x, cand_x, k)

    def _choose(self, finished: pd.DataFrame, candidates: pd.DataFrame, done_x: np.ndarray, cand_x: np.ndarray,
                k: int) -> list:
        raise NotImplementedError

    def _edges(self, finished: pd.DataFrame, candidates: pd.DataFrame) -> np.ndarray:
        """Bin edges in log10(FLOPs) over the whole grid (finished and planned), fixed while the sweep runs."""
        log_flops = np.log10(np.concatenate([_flops(finished), _flops(candidates)]))
        return np.linspace(log_flops.min(), log_flops.max(), int(self.bins) + 1)


class CrudeGain(_ModelStrategy):
    """The issue's first attempt: largest predicted gain over the FLOP bin's current best, divided by sqrt(cost).

    One gradient boosting model (the paper's: 50 trees of depth 5) predicts each untrained recipe's accuracy; the gain
    is how far it would lift its bin's best accuracy (the whole prediction in an empty bin). No uncertainty: a recipe
    the model wrongly believes poor is never tried.
    """

    name = "crude"

    def _choose(self, finished: pd.DataFrame, candidates: pd.DataFrame, done_x: np.ndarray, cand_x: np.ndarray,
                k: int) -> list:
        known = _known(finished, self.metric)
        model = GradientBoostingRegressor(n_estimators=50, max_depth=5, random_state=int(self.seed))
        predicted = model.fit(done_x[known], _accuracy(finished, self.metric)[known]).predict(cand_x)
        edges = self._edges(finished, candidates)
        best = bin_best(_flops(finished), _accuracy(finished, self.metric), edges)
        reference = best[_bin_of(_flops(candidates), edges)]
        gain = np.maximum(predicted - np.where(np.isfinite(reference), reference, 0.0), 0.0)
        score = gain / np.sqrt(_flops(candidates))
        order = np.lexsort((_flops(candidates), -score))  # ties (no gain anywhere): cheapest first
        return list(candidates.index[order[:k]])


class EnvelopeGain(_ModelStrategy):
    """Ours: the expected improvement of the envelope, weighted by how much it moves alpha, per unit of cost.

    A bootstrap ensemble of gradient boosting models gives each untrained recipe a set of plausible accuracies. The
    recipe's reference is the best accuracy already found in its log10(FLOPs) bin or, in a bin with no run yet, the
    line through the current envelope: only a run that may beat what the law already knows there is worth training.
    Bins are taken two ways, over the whole grid's FLOP range and over the finished runs' range (how the law will bin
    them), and the lower reference counts: a poor run left alone in a bin of either kind drags the law down, so a
    better run beside it is worth training. The expected improvement over the reference, in log10 accuracy, averages
    the members' predictions each widened by ``noise_log10`` (so the ensemble's disagreement drives exploration, and a
    recipe that might collapse is not mistaken for one that might excel). It is weighted by the run's leverage on the
    slope, ``|log10 FLOPs - mean| / Sxx`` (how far alpha moves when that point moves), and divided by
    ``FLOPs**cost_power``. A batch of ``k`` is chosen greedily, each choice assumed to land at its predicted mean.

    **Anchoring the ends (issue 31).** Dividing by the cost keeps such a strategy in the cheap end of the grid for
    long, and on a small noisy grid it never leaves it: the law it fits then spans a third of the compute range and
    its slope is the cheap end's. While the revealed runs leave alpha's interval ``wide`` (or give no law yet:
    :mod:`robustscale.analysis.adaptive_law`), ``anchor`` first takes, in the grid's highest FLOP bin and then its
    lowest, the candidate the ensemble predicts best, as long as no usable run lies that far out yet: a slope is
    pinned by its ends (the optimal design for a line puts its points there). On the out-of-sample benchmark's
    tuning grids (``benchmarks/adaptive_oos.py --dev``) this cut the median error of alpha on the digits-like grids
    from 0.139 to 0.023 at a tenth of the compute and from 0.073 to 0.016 at a fifth, and on the paper-like grids
    from 0.0019 to 0.0010 at a fifth (BENCHMARKS.md).

    ``replicate`` (off by default) is the other remedy issue 31 proposed for noisy grids with replicate seeds (a
    sweep with ``seeds: [0, 1, 2]``, whose runs differ only in their seed and look alike to a strategy): while the
    interval is wide, train another seed of the recipes that hold the envelope's points first (the fewest seeds so
    far, then the most leverage). Measured on the same tuning grids it made alpha worse at a fifth of the compute
    (0.130 alone, 0.030 with ``anchor`` against 0.016 without): the replicates spend the budget where the envelope
    already is, in the cheap end.

    Args:
        n_models: members of the bootstrap ensemble.
        n_estimators, max_depth, learning_rate: each member's boosting (fewer, shallower trees than the paper's
            predictor: members see few runs, and a round must stay cheap).
        cost_power: 1 divides by the FLOPs (value per unit of compute); the crude strategy's sqrt is 0.5.
        noise_log10: spread of one recipe's accuracy around a prediction, in log10 accuracy (seed-to-seed noise).
        min_leverage: floor on ``|log10 FLOPs - mean|`` as a share of the FLOP range, so middle bins still count.
        anchor: take the grid's highest and lowest FLOP bins first while alpha's interval is wide.
        replicate: replicate the envelope's recipes first while alpha's interval is wide (where the grid has seeds).
    """

    name = "envelope"

    def __init__(self, seed: int = 0, metric: str = "autoattack_acc", bins: int = 19, n_models: int = 8,
                 n_estimators: int = 30, max_depth: int = 3, learning_rate: float = 0.2, cost_power: float = 1.0,
                 noise_log10: float = 0.002, min_leverage: float = 0.1, anchor: bool = True,
                 replicate: bool = False):
        super().__init__(seed=seed, metric=metric, bins=bins)
        self.n_models = n_models
        self.n_estimators = n_estimators
        self.max_depth = max_depth
        self.learning_rate = learning_rate
        self.cost_power = cost_power
        self.noise_log10 = noise_log10
        self.min_leverage = min_leverage
        self.anchor = anchor
        self.replicate = replicate

    def _choose(self, finished: pd.DataFrame, candidates: pd.DataFrame, done_x: np.ndarray, cand_x: np.ndarray,
                k: int) -> list:
        known, accuracy = _known(finished, self.metric), _accuracy(finished, self.metric)
        draws = self._ensemble(done_x[known], accuracy[known], cand_x, self._rng(finished))
        views = [_View.of(finished, candidates, accuracy, edges) for edges in self._binnings(finished, candidates)]
        floor = _LOG_FLOOR * max(np.nanmax(np.where(accuracy > 0, accuracy, np.nan), initial=0.0), 1e-12)
        log_draws = np.log10(np.maximum(draws, floor))
        log_x, cost = np.log10(_flops(candidates)), _flops(candidates) ** float(self.cost_power)
        chosen = self._first(finished, candidates, done_x, cand_x, log_draws)[:k]
        for _ in range(min(k, len(candidates)) - len(chosen)):
            reference = np.min([view.reference(log_x) for view in views], axis=0)
            leverage = views[0].envelope.leverage(log_x, float(self.min_leverage) * np.ptp(views[0].edges))
            score = _expected_improvement(log_draws, reference, float(self.noise_log10)) * leverage / cost
            score[chosen] = -np.inf
            pick = int(np.lexsort((_flops(candidates), -score))[0])
            chosen.append(pick)
            views = [view.with_point(pick, log_x[pick], float(np.mean(log_draws[:, pick]))) for view in views]
        return list(candidates.index[chosen])

    def _first(self, finished: pd.DataFrame, candidates: pd.DataFrame, done_x: np.ndarray, cand_x: np.ndarray,
               log_draws: np.ndarray) -> list[int]:
        """Candidates to take before the expected improvement while alpha's interval is wide: the grid's ends
        (``anchor``), then replicates of the envelope's recipes (``replicate``)."""
        if not (self.anchor or self.replicate):
            return []
        law = law_interval(finished, metric=self.metric, bins=self.bins, bootstrap=_CHECK_BOOTSTRAP,
                           seed=int(self.seed))
        if law["alpha"] is not None and not any(reason.startswith("wide") for reason in law["not_pinned"]):
            return []
        first = self._anchors(finished, candidates, log_draws) if self.anchor else []
        if self.replicate:
            first += [i for i in self._replicas(finished, candidates, done_x, cand_x) if i not in first]
        return first

    def _anchors(self, finished: pd.DataFrame, candidates: pd.DataFrame, log_draws: np.ndarray) -> list[int]:
        """The candidate predicted best in the grid's highest (then lowest) FLOP bin, where no usable run lies that
        far out yet: a slope is pinned by its ends."""
        edges = self._edges(finished, candidates)
        accuracy = _accuracy(finished, self.metric)
        done_bin = _bin_of(_flops(finished)[np.isfinite(accuracy) & (accuracy > 0)], edges)
        cand_bin, mean, flops = _bin_of(_flops(candidates), edges), log_draws.mean(axis=0), _flops(candidates)
        picks = []
        for end, beyond in ((cand_bin.max(), cand_bin.max() > done_bin.max(initial=-1)),
                            (cand_bin.min(), cand_bin.min() < done_bin.min(initial=edges.size))):
            if beyond:
                inside = np.flatnonzero(cand_bin == end)
                picks.append(int(inside[np.lexsort((flops[inside], -mean[inside]))[0]]))
        return list(dict.fromkeys(picks))

    def _replicas(self, finished: pd.DataFrame, candidates: pd.DataFrame, done_x: np.ndarray,
                  cand_x: np.ndarray) -> list[int]:
        """Positions of candidates that replicate an envelope run's recipe, while alpha's interval is wide: the
        recipes with the fewest seeds so far first, then by leverage on the slope; one per recipe per pass."""
        flops, accuracy = _flops(finished), _accuracy(finished, self.metric)
        done_keys = [(*row, f) for row, f in zip(map(tuple, done_x), flops)]
        cand_keys = [(*row, f) for row, f in zip(map(tuple, cand_x), _flops(candidates))]
        if not set(done_keys) & set(cand_keys):
            return []  # no untrained seed of a trained recipe (a grid without replicates)
        usable = np.flatnonzero(np.isfinite(accuracy) & (accuracy > 0))
        top = usable[envelope_indices(flops[usable], accuracy[usable], int(self.bins))]
        centre = np.mean(np.log10(flops[top]))
        queues = []
        for run in top:
            spares = [i for i, key in enumerate(cand_keys) if key == done_keys[run]]
            if spares:
                queues.append((done_keys.count(done_keys[run]), -abs(np.log10(flops[run]) - centre), spares))
        queues.sort(key=lambda q: q[:2])
        picks = []
        for depth in range(max((len(q[2]) for q in queues), default=0)):
            picks += [q[2][depth] for q in queues if depth < len(q[2])]
        return picks

    def _binnings(self, finished: pd.DataFrame, candidates: pd.DataFrame) -> list[np.ndarray]:
        """Bin edges over the whole grid, and over the finished usable runs' range (the law's own bins today)."""
        usable = np.isfinite(_accuracy(finished, self.metric)) & (_accuracy(finished, self.metric) > 0)
        binnings = [self._edges(finished, candidates)]
        log_flops = np.log10(_flops(finished)[usable])
        if log_flops.size and np.ptp(log_flops) > 0:
            binnings.append(np.linspace(log_flops.min(), log_flops.max(), int(self.bins) + 1))
        return binnings

    def _ensemble(self, x: np.ndarray, y: np.ndarray, cand_x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Predictions of ``n_models`` models, each fitted on a bootstrap resample: rows members, columns recipes."""
        draws = []
        for member in range(int(self.n_models)):
            pick = rng.integers(0, len(y), len(y))
            model = GradientBoostingRegressor(n_estimators=self.n_estimators, max_depth=self.max_depth,
                                              learning_rate=self.learning_rate,
                                              random_state=int(self.seed) * 1009 + member)
            draws.append(model.fit(x[pick], y[pick]).predict(cand_x))
        return np.asarray(draws)


def _expected_improvement(log_draws: np.ndarray, reference: np.ndarray, noise: float) -> np.ndarray:
    """E[max(0, Y - reference)] with Y a member's prediction plus Normal(0, noise) noise, averaged over members.

    Where there is no reference yet (fewer than two envelope points and an empty bin), the mean prediction above the
    lowest one stands in, so the most promising recipes come first.
    """
    missing = ~np.isfinite(reference)
    gap = log_draws - np.where(missing, 0.0, reference)[None, :]
    improvement = (noise * norm.pdf(gap / noise) + gap * norm.cdf(gap / noise)).mean(axis=0)
    mean = log_draws.mean(axis=0)
    return np.where(missing, mean - mean.min() + noise, improvement)


class _View:
    """One binning of the FLOP axis: the candidates' bins and the envelope of the finished runs in those bins."""

    def __init__(self, edges: np.ndarray, cand_bin: np.ndarray, envelope: _Envelope):
        self.edges, self.cand_bin, self.envelope = edges, cand_bin, envelope

    @classmethod
    def of(cls, finished: pd.DataFrame, candidates: pd.DataFrame, accuracy: np.ndarray, edges: np.ndarray) -> _View:
        return cls(edges, _bin_of(_flops(candidates), edges), _Envelope.of(_flops(finished), accuracy, edges))

    def reference(self, log_x: np.ndarray) -> np.ndarray:
        return self.envelope.reference(self.cand_bin, log_x)

    def with_point(self, pick: int, log_x: float, log_y: float) -> _View:
        return _View(self.edges, self.cand_bin, self.envelope.with_point(self.cand_bin[pick], log_x, log_y))


class _Envelope:
    """The best run per FLOP bin, in log10 space, and the line through those points (the law, in log-log space)."""

    def __init__(self, log_x: np.ndarray, log_y: np.ndarray):
        self.log_x, self.log_y = log_x, log_y
        have = np.isfinite(log_y)
        self.n = int(have.sum())
        x, y = log_x[have], log_y[have]
        self.x_mean = float(x.mean()) if self.n else np.nan
        self.sxx = float(np.sum((x - self.x_mean) ** 2)) if self.n else 0.0
        self.slope = float(np.sum((x - self.x_mean) * (y - y.mean())) / self.sxx) if self.sxx > 1e-12 else 0.0
        self.intercept = float(y.mean() - self.slope * self.x_mean) if self.n else np.nan

    @classmethod
    def of(cls, flops: np.ndarray, accuracy: np.ndarray, edges: np.ndarray) -> _Envelope:
        usable = np.isfinite(accuracy) & (accuracy > 0)
        log_x, log_y = np.full(edges.size - 1, np.nan), np.full(edges.size - 1, np.nan)
        which = _bin_of(flops, edges)
        for b in np.unique(which[usable]):
            in_bin = np.flatnonzero(usable & (which == b))
            top = in_bin[np.argmax(accuracy[in_bin])]
            log_x[b], log_y[b] = np.log10(flops[top]), np.log10(accuracy[top])
        return cls(log_x, log_y)

    def with_point(self, b: int, log_x: float, log_y: float) -> _Envelope:
        if np.isfinite(self.log_y[b]) and self.log_y[b] >= log_y:
            return self
        xs, ys = self.log_x.copy(), self.log_y.copy()
        xs[b], ys[b] = log_x, log_y
        return _Envelope(xs, ys)

    def reference(self, bins: np.ndarray, log_x: np.ndarray) -> np.ndarray:
        """The bin's best; in an empty bin the line's value there (NaN while there is no line)."""
        line = self.intercept + self.slope * log_x if self.n >= 2 else np.full(log_x.shape, np.nan)
        best = self.log_y[bins]
        return np.where(np.isfinite(best), best, line)

    def leverage(self, log_x: np.ndarray, floor: float) -> np.ndarray:
        """``|x - mean| / Sxx``: how far alpha moves per unit change of log10 accuracy at ``x`` (floored)."""
        if self.n < 2 or self.sxx <= 1e-12:
            return np.ones_like(log_x)
        return np.maximum(np.abs(log_x - self.x_mean), floor) / self.sxx


STRATEGIES: dict[str, type[Strategy]] = {cls.name: cls for cls in (RandomChoice, CheapestFirst, CrudeGain,
                                                                    EnvelopeGain)}


def make_strategy(name: str, **kwargs: Any) -> Strategy:
    """The strategy registered under ``name`` (``random``, ``cheapest-first``, ``crude``, ``envelope``)."""
    if name not in STRATEGIES:
        raise ParameterError(f"strategy {shown(name)}: unknown; choose one of {', '.join(STRATEGIES)}", "strategy")
    return STRATEGIES[name](**kwargs)


def search_features(table: pd.DataFrame) -> list[str]:
    """The recipe axes a strategy learns from: the paper's six and ``epochs`` where the table has them.

    Unlike the predictor's report (the paper's six by default), a strategy needs every knob that changes accuracy, so
    ``epochs`` counts where it varies apart from ``ema``; a column grouping the runs like another is still dropped.
    """
    present = [f for f in (*RECIPE_FEATURES, "epochs") if f in table and table[f].notna().any()]
    return recipe_features(table, present or None)


def cover_axes(finished: pd.DataFrame, candidates: pd.DataFrame, features: list[str]) -> list:
    """Cheap candidates that together show every value of every recipe axis not yet seen in ``finished``.

    Greedy set cover weighted by cost: each step takes the candidate with the fewest FLOPs per newly covered
    (axis, value) pair. A model cannot learn what a value does from runs that never used it, so a model-based strategy
    trains these first.
    """
    seen = {(f, v) for f in features if f in finished for v in _levels(finished[f])}
    levels = [{(f, v) for f, v in zip(features, row)} for row in zip(*(_levels(candidates[f]) for f in features))]
    flops, chosen = _flops(candidates), []
    while True:
        new = np.array([len(level - seen) for level in levels], dtype=float)
        if not new.any():
            return list(candidates.index[chosen])
        with np.errstate(divide="ignore"):
            pick = int(np.argmin(np.where(new > 0, flops / new, np.inf)))
        chosen.append(pick)
        seen |= levels[pick]


def _levels(values: pd.Series) -> list[str]:
    return [str(v).strip().lower() for v in values]


def encode_recipes(finished: pd.DataFrame, candidates: pd.DataFrame, features: list[str]) -> tuple[np.ndarray, ...]:
    """Numeric matrices of the recipe features: categories as their index over both tables, booleans 0/1."""
    both = pd.concat([finished[features], candidates[features]], ignore_index=True)
    columns = []
    for feature in features:
        if feature in CATEGORICAL_FEATURES:
            levels = pd.Series(_levels(both[feature]))
            columns.append(levels.map({v: i for i, v in enumerate(sorted(set(levels)))}).to_numpy(dtype=float))
        elif feature in BOOLEAN_FEATURES:
            columns.append(pd.Series(_levels(both[feature])).isin(["true", "1", "1.0", "yes"]).to_numpy(dtype=float))
        else:
            columns.append(pd.to_numeric(both[feature].astype(object), errors="coerce").to_numpy(dtype=float))
    matrix = np.column_stack(columns)
    return matrix[: len(finished)], matrix[len(finished):]


def bin_best(flops: np.ndarray, accuracy: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Best usable accuracy in each bin; NaN for a bin without one."""
    best = np.full(edges.size - 1, np.nan)
    usable = np.isfinite(accuracy) & (accuracy > 0)
    for b, value in zip(_bin_of(flops[usable], edges), accuracy[usable]):
        best[b] = value if not np.isfinite(best[b]) else max(best[b], value)
    return best


def _bin_of(flops: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Bin of each FLOP count, as :func:`robustscale.analysis.scaling.envelope_indices` assigns them."""
    return np.digitize(np.log10(flops), edges[1:-1])


def _flops(frame: pd.DataFrame) -> np.ndarray:
    return pd.to_numeric(frame["train_flops"], errors="coerce").to_numpy(dtype=float) if len(frame) else np.empty(0)


def _accuracy(frame: pd.DataFrame, metric: str) -> np.ndarray:
    if metric not in frame:
        return np.full(len(frame), np.nan)
    return pd.to_numeric(frame[metric], errors="coerce").to_numpy(dtype=float)


def _known(frame: pd.DataFrame, metric: str) -> np.ndarray:
    """Finished runs with an accuracy (0 for a collapsed run is known; a failed run without one is not)."""
    return np.isfinite(_accuracy(frame, metric))
