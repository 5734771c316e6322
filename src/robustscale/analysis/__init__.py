"""Analysis of a sweep (paper section IV): scaling laws, extrapolation, the recipe predictor, figures and report;
beyond the paper, the loss law in model size and data (:mod:`.ndlaw`, :mod:`.plan`) and seed replicates
(:mod:`.replicates`).

Input is a results table, robustscale's own or another framework's through a column mapping; every public function
here takes the table (a :class:`pandas.DataFrame` from :func:`read_table`) and returns plain dicts that are exactly
the CLI's ``--json`` objects.
"""

from robustscale.analysis._table import CANONICAL_COLUMNS, Runs, parse_mapping, read_table, usable_runs
from robustscale.analysis.ndlaw import NDLaw
from robustscale.analysis.predictor import RobustnessPredictor, predict_summary, recipe_features
from robustscale.analysis.replicates import by_recipe
from robustscale.analysis.report import build_report
from robustscale.analysis.scaling import (
    SaturatingLaw,
    ScalingLaw,
    envelope_indices,
    extrapolate,
    fit_all,
    fit_laws,
    holdout_error,
)

__all__ = [
    "CANONICAL_COLUMNS", "NDLaw", "Runs", "RobustnessPredictor", "SaturatingLaw", "ScalingLaw", "build_report",
    "by_recipe", "envelope_indices", "extrapolate", "fit_all", "fit_laws", "holdout_error", "parse_mapping",
    "predict_summary", "read_table", "recipe_features", "usable_runs",
]
