"""Predicting a recipe's robust accuracy without training it (paper section IV-A).

The paper fits gradient boosting regression (50 estimators, max depth 5, 70:30 split) from the recipe (parameters,
synthetic data, activation, loss, attack steps, EMA) to AutoAttack accuracy, and reads the feature importances to see
which algorithmic choices drive robustness. Those six are the default features (``--features`` chooses others); a
column that groups the runs exactly as an earlier one does (in the paper's grid, ``epochs`` and ``ema``) is dropped
and reported, so one effect's importance is not split between two names. This module does the same and adds what a reader needs to trust it:
k-fold cross-validated R^2, permutation importances (impurity importances favour many-valued features such as the
parameter count) and a prediction interval for an untrained recipe from out-of-fold residuals (split conformal).
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator
from sklearn.ensemble import GradientBoostingRegressor
from sklearn.inspection import permutation_importance
from sklearn.metrics import mean_absolute_error, r2_score
from sklearn.model_selection import KFold, train_test_split

import robustscale.models as models  # count_params on first use: builds a model, so imports torch (PEP 562)
from robustscale.analysis._table import Runs, numeric_columns, usable_runs
from robustscale.errors import ParameterError, UserError, shown

RECIPE_FEATURES = ("params", "synthetic", "activation", "loss", "attack_steps", "ema")  # the paper's six
CATEGORICAL_FEATURES = ("activation", "loss", "dataset", "model")
BOOLEAN_FEATURES = ("synthetic", "ema")
NUMERIC_FEATURES = ("params", "attack_steps", "epochs")  # a word or an infinity there is one line, not a crash
MIN_RUNS = 6
NUM_CLASSES = {"cifar10": 10, "cifar100": 100, "svhn": 10, "digits": 10, "mnist": 10}


def same_partition(a: pd.Series, b: pd.Series) -> bool:
    """Whether two columns group the runs identically (each value of one goes with exactly one value of the other):
    then a tree can split on either, and one effect's importance would be divided between them."""
    both = pd.DataFrame({"a": a.astype(object), "b": b.astype(object)}).dropna()
    if both.empty:
        return False
    return bool(both.groupby("a")["b"].nunique().max() == 1 and both.groupby("b")["a"].nunique().max() == 1)


def select_features(table: pd.DataFrame, requested: list[str] | None = None) -> tuple[list[str], dict[str, str]]:
    """The predictor's features and the candidates left out, with why.

    Candidates are ``requested`` (``--features``) or the paper's six (:data:`RECIPE_FEATURES`), in order; one that
    the table lacks (or holds no value of) is left out when it is a default and an error when requested, and one
    that partitions the runs exactly like an earlier feature is dropped (in the paper's grid ``epochs`` is ``ema``).
    """
    source = table.attrs.get("source", "table")
    candidates = list(dict.fromkeys(requested or RECIPE_FEATURES))
    features, dropped = [], {}
    for name in candidates:
        if name not in table or table[name].notna().sum() == 0:
            if requested:
                raise ParameterError(f"{source}: features names '{shown(name)}', which the table lacks (or holds no "
                                     f"value of); recipe columns: {', '.join(c for c in table.columns if c in _KNOWN)}",
                                     "features")
            dropped[name] = "not in the table"
            continue
        twin = next((f for f in features if same_partition(table[f], table[name])), None)
        if twin is not None:
            dropped[name] = f"partitions the runs exactly like {twin}"
            continue
        features.append(name)
    if not features:
        raise UserError(f"{source}: no recipe columns ({', '.join(RECIPE_FEATURES)}); add them or map yours "
                        "(mapping)", "mapping")
    return features, dropped


_KNOWN = (*RECIPE_FEATURES, "epochs", "dataset", "beta", "synthetic_fraction", "model", "seed")


def recipe_features(table: pd.DataFrame, requested: list[str] | None = None) -> list[str]:
    """The features :func:`select_features` keeps."""
    return select_features(table, requested)[0]


class RobustnessPredictor(BaseEstimator):
    """Gradient boosting from recipe features to robust accuracy, scored on held-out recipes.

    Args:
        n_estimators: boosting stages (the paper: 50).
        max_depth: depth of each tree (the paper: 5).
        test_size: fraction of runs held out for R^2 and MAE (the paper: 0.3).
        seed: seed of the split, the boosting, the folds and the permutations.
        cv: folds of the cross-validated R^2 (fewer when the table is small).
        n_repeats: shuffles per feature for the permutation importance.
        level: coverage of the prediction interval.
    """

    def __init__(self, n_estimators: int = 50, max_depth: int = 5, test_size: float = 0.3, seed: int = 0,
                 cv: int = 5, n_repeats: int = 10, level: float = 0.95):
        self.n_estimators = n_estimators
        self.max_depth = max_depth
        self.test_size = test_size
        self.seed = seed
        self.cv = cv
        self.n_repeats = n_repeats
        self.level = level

    def _regressor(self) -> GradientBoostingRegressor:
        return GradientBoostingRegressor(n_estimators=self.n_estimators, max_depth=self.max_depth,
                                         random_state=self.seed)

    def fit(self, X: pd.DataFrame, y: Any) -> RobustnessPredictor:
        """Fit on a table of recipe features (one column per feature, no missing values)."""
        self.features_ = list(X.columns)
        self.categories_ = {f: sorted(set(_category(X[f]))) for f in self.features_ if f in CATEGORICAL_FEATURES}
        matrix, target = self._encode(X), np.asarray(y, dtype=float)
        train, test = train_test_split(np.arange(len(target)), test_size=self.test_size, random_state=self.seed)
        self.model_ = self._regressor().fit(matrix[train], target[train])
        self.test_true_, self.test_pred_ = target[test], self.model_.predict(matrix[test])
        self.r2_ = float(r2_score(self.test_true_, self.test_pred_)) if len(test) > 1 else float("nan")
        self.mae_ = float(mean_absolute_error(self.test_true_, self.test_pred_))
        self._cross_validate(matrix, target)
        permutation = permutation_importance(self.model_, matrix[test], target[test], n_repeats=self.n_repeats,
                                             random_state=self.seed)
        self.importance_ = {"impurity": dict(zip(self.features_, map(float, self.model_.feature_importances_))),
                            "permutation": dict(zip(self.features_, map(float, permutation.importances_mean)))}
        return self

    def _cross_validate(self, matrix: np.ndarray, target: np.ndarray) -> None:
        """K-fold R^2, and out-of-fold residuals whose quantile is the prediction interval's half-width."""
        folds = KFold(n_splits=max(2, min(self.cv, len(target) // 2)), shuffle=True, random_state=self.seed)
        scores, residuals = [], np.empty_like(target)
        for train, test in folds.split(matrix):
            predicted = self._regressor().fit(matrix[train], target[train]).predict(matrix[test])
            residuals[test] = np.abs(target[test] - predicted)
            scores.append(r2_score(target[test], predicted) if len(test) > 1 else np.nan)
        self.cv_scores_ = np.asarray(scores, dtype=float)
        self.cv_r2_, self.cv_r2_std_ = float(np.nanmean(self.cv_scores_)), float(np.nanstd(self.cv_scores_))
        rank = min(len(residuals), math.ceil((len(residuals) + 1) * self.level))
        self.half_width_ = float(np.sort(residuals)[rank - 1])

    def _encode(self, X: pd.DataFrame) -> np.ndarray:
        missing = [f for f in self.features_ if f not in X]
        if missing:
            raise UserError(f"recipe lacks '{missing[0]}', which the predictor uses")
        columns = [self._encode_column(f, X[f]) for f in self.features_]
        return np.column_stack(columns).astype(float)

    def _encode_column(self, feature: str, values: pd.Series) -> np.ndarray:
        """Categories become their index in the training categories (trees need no one-hot); booleans 0/1."""
        if feature in self.categories_:
            known = self.categories_[feature]
            unknown = sorted(set(_category(values)) - set(known))
            if unknown:
                raise UserError(f"{feature} '{unknown[0]}' never appears in the table (seen: {', '.join(known)}); "
                                "the predictor cannot extrapolate to an unseen category")
            return np.array([known.index(v) for v in _category(values)], dtype=float)
        return pd.to_numeric(values.astype(object), errors="coerce").to_numpy(dtype=float)

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        return self.model_.predict(self._encode(X))

    def predict_interval(self, X: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """Prediction +- the ``level`` quantile of out-of-fold absolute residuals (split-conformal style)."""
        predicted = self.predict(X)
        return predicted - self.half_width_, predicted + self.half_width_


def _category(values: pd.Series) -> list[str]:
    return [str(v).strip().lower() for v in values]


def predict_summary(table: pd.DataFrame, *, metric: str = "autoattack_acc", min_acc: float | None = None,
                    recipe: Mapping[str, Any] | None = None, seed: int = 0,
                    features: list[str] | None = None) -> dict:
    """Score the predictor on a results table and, given a recipe, predict its accuracy with an interval.

    Returns:
        The ``robustscale predict --json`` object: ``r2``, ``mae``, ``cv_r2``, ``importance`` (impurity and
        permutation), ``features`` and ``dropped_features`` (name: why), and ``prediction`` and ``interval`` when a
        recipe is given.
    """
    predictor, runs, frame = fit_predictor(table, metric=metric, min_acc=min_acc, seed=seed, features=features)
    out = summarize_predictor(predictor, runs, frame)
    if recipe:
        row = complete_recipe(recipe, predictor.features_, frame)
        low, high = predictor.predict_interval(row)
        out.update(recipe=row.iloc[0].to_dict(), prediction=float(predictor.predict(row)[0]),
                   interval=[float(low[0]), float(high[0])],
                   interval_method=f"{predictor.level:.0%} quantile of out-of-fold absolute errors")
    return out


def summarize_predictor(predictor: RobustnessPredictor, runs: Runs, frame: pd.DataFrame) -> dict:
    """Scores, importances and settings of a fitted predictor, as in ``robustscale predict --json``."""
    return {
        "metric": runs.metric, "units": runs.units(), "n": len(frame), "features": predictor.features_,
        "dropped_features": dict(getattr(predictor, "dropped_features_", {})),
        "n_test": len(predictor.test_true_), "r2": predictor.r2_, "mae": predictor.mae_, "cv_r2": predictor.cv_r2_,
        "cv_r2_std": predictor.cv_r2_std_, "cv_folds": len(predictor.cv_scores_), "importance": predictor.importance_,
        "model": {"estimator": "GradientBoostingRegressor", "n_estimators": predictor.n_estimators,
                  "max_depth": predictor.max_depth, "test_size": predictor.test_size, "seed": predictor.seed},
    }


def fit_predictor(table: pd.DataFrame, *, metric: str = "autoattack_acc", min_acc: float | None = None,
                  seed: int = 0, features: list[str] | None = None) -> tuple[RobustnessPredictor, Runs, pd.DataFrame]:
    """Fit the predictor on the usable runs with complete recipes; also return the runs and the rows used. The
    predictor's ``dropped_features_`` says which candidate features were left out, and why."""
    runs = usable_runs(table, metric, min_acc, need_flops=False)
    runs.frame.attrs["source"] = runs.source
    features, dropped = select_features(runs.frame, features)
    frame = numeric_columns(runs.frame, NUMERIC_FEATURES, runs.source).dropna(subset=features)
    if len(frame) < MIN_RUNS:
        raise UserError(f"{runs.source}: only {len(frame)} runs with a complete recipe ({', '.join(features)}); "
                        f"the predictor needs at least {MIN_RUNS}")
    predictor = RobustnessPredictor(seed=seed).fit(frame[features], frame[runs.metric])
    predictor.dropped_features_ = dropped
    return predictor, runs, frame


def complete_recipe(recipe: Mapping[str, Any], features: list[str], table: pd.DataFrame) -> pd.DataFrame:
    """One-row frame of the recipe's features; the parameter count comes from ``model`` when not given."""
    values = {k: v for k, v in recipe.items() if v is not None}
    if "params" in features and "params" not in values and "model" in values:
        values["params"] = params_for_model(str(values["model"]), table, values.get("dataset"))
    for feature in features:
        if feature not in values and feature in table and table[feature].nunique(dropna=True) == 1:
            values[feature] = table[feature].dropna().iloc[0]  # every run shares it: the recipe does too
        if feature not in values:
            also = " (or model)" if feature == "params" else ""
            raise ParameterError(f"the recipe lacks a feature the predictor uses (the table has it): pass "
                                 f"{feature}{also}", feature, *(("model",) if also else ()))
    return pd.DataFrame([{f: values[f] for f in features}])


def params_for_model(name: str, table: pd.DataFrame, dataset: str | None = None) -> int:
    """Parameter count of a timm model name: counted from the model, else the table's median for that model."""
    num_classes = NUM_CLASSES.get(str(dataset or _single_dataset(table)).lower(), 10)
    try:
        return int(models.count_params(name, num_classes))
    except Exception as err:  # an unknown name or a model that fails to build: fall back to the table
        reason = f"count_params failed: {str(err).splitlines()[0] if str(err) else type(err).__name__}"
    if "model" in table and "params" in table:
        known = pd.to_numeric(table.loc[table["model"].astype(str) == name, "params"], errors="coerce").dropna()
        if len(known):
            return int(known.median())
    raise ParameterError(f"model {shown(name)}: cannot count its parameters ({reason}) and no run in the table "
                         "uses it; pass params instead", "model", "params")


def _single_dataset(table: pd.DataFrame) -> str | None:
    if "dataset" in table and table["dataset"].nunique(dropna=True) == 1:
        return str(table["dataset"].dropna().iloc[0])
    return None
