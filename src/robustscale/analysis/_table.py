"""Reading a results table and turning it into the runs a scaling law may be fitted on.

The analysis accepts robustscale's own table (``robustscale results``) or any other framework's table through a
column mapping, so that runs from other adversarial-training codebases can be analysed with the same laws. Values are
used as given: accuracies stay in the table's unit (fraction or percent, detected and reported) and FLOPs in
whatever unit the table uses. Every way a table can be unusable ends in one :class:`UserError` line that names the
file or column and the fix.
"""

from __future__ import annotations

import io
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from robustscale.errors import ParameterError, UserError, shown
from robustscale.store.paper_table import read_paper_table
from robustscale.store.results import results_table
from robustscale.store.safe_json import MAX_TABLE_BYTES, JsonFileError, loads, read_bytes

CANONICAL_COLUMNS = (
    "run_id", "status", "dataset", "model", "params", "activation", "loss", "beta", "attack_steps", "epochs", "ema",
    "synthetic", "synthetic_fraction", "seed", "clean_acc", "pgd40_acc", "autoattack_acc", "train_flops",
    "train_flops_paper", "gpu_hours", "energy_kwh", "energy_estimated", "cost_usd", "co2_kg",
)
# beyond the paper's columns, what the N-D law (samples_seen, adv_loss) and the replicates (recipe_id) read
MAPPABLE_COLUMNS = (*CANONICAL_COLUMNS, "samples_seen", "adv_loss", "recipe_id")
ACCURACY_METRICS = ("autoattack_acc", "pgd40_acc", "clean_acc")
BOOLEAN_COLUMNS = ("synthetic", "ema", "energy_estimated")
MIN_POINTS = 3
# what every law and figure puts on its FLOP axis: one column, one meaning (issue 28)
FLOPS_UNIT = ("train_flops: training FLOPs, exact (FlopCounterMode x samples) for robustscale runs and the paper's "
              "imported table; the paper's convention is the separate column train_flops_paper")
_TRUE = {"true", "t", "yes", "y", "1", "1.0"}
_FALSE = {"false", "f", "no", "n", "0", "0.0"}


PRESET_KEY = "_preset"  # ``--map paper``: a whole table format, read by its own reader before any renaming


PRESETS = {"paper": read_paper_table}  # whole table formats (--map NAME), each read by its own reader


def parse_mapping(pairs: Sequence[str] | None) -> dict[str, str]:
    """Turn repeated ``--map CANONICAL=COLUMN`` options into ``{canonical: column}``; ``--map paper`` reads the
    paper's own results.csv (:func:`robustscale.store.paper_table.read_paper_table`)."""
    mapping: dict[str, str] = {}
    for pair in pairs or ():
        if "=" not in pair and pair.strip() in PRESETS:
            mapping[PRESET_KEY] = pair.strip()
            continue
        canonical, sep, column = pair.partition("=")
        if not sep or not canonical.strip() or not column.strip():
            raise ParameterError(f"mapping '{shown(pair)}' is not CANONICAL=COLUMN (e.g. autoattack_acc=robust_acc) "
                                 f"or a preset ({', '.join(PRESETS)})", "mapping")
        if canonical.strip() not in MAPPABLE_COLUMNS:
            raise ParameterError(f"mapping '{shown(pair)}': '{shown(canonical.strip())}' is not a robustscale "
                                 f"column; choose one of {', '.join(MAPPABLE_COLUMNS)}", "mapping")
        mapping[canonical.strip()] = column.strip()
    return mapping


def read_table(path: str | os.PathLike, mapping: Mapping[str, str] | None = None) -> pd.DataFrame:
    """Read a results table (csv, parquet, json/jsonl, or a runs directory) under robustscale's column names.

    Args:
        path: a table file, or a runs directory whose table ``robustscale results`` would print.
        mapping: ``{canonical: column}`` renaming another framework's columns to robustscale's; with
            ``{"_preset": "paper"}`` (``--map paper``) the file is the paper's results.csv.

    Returns:
        The table with canonical names, boolean columns parsed, and ``attrs["source"]`` naming the file for messages.
    """
    path, mapping = Path(path), dict(mapping or {})
    preset = mapping.pop(PRESET_KEY, None)
    table = PRESETS[preset](path) if preset is not None else _read_any(path)
    table = _apply_mapping(table, mapping, path)
    for column in BOOLEAN_COLUMNS:
        if column in table:
            table[column] = _as_bool(table[column])
    table.attrs["source"] = str(path)
    return table


def _read_any(path: Path) -> pd.DataFrame:
    if not path.exists() and not path.is_symlink():
        raise UserError(f"{path}: no such file or directory; pass a results table (csv/parquet/json) or a runs dir")
    if path.is_dir():
        return results_table(path)
    readers = {".csv": pd.read_csv, ".parquet": pd.read_parquet, ".pq": pd.read_parquet, ".json": _read_json,
               ".jsonl": _read_json_lines}
    reader = readers.get(path.suffix.lower())
    if reader is None:
        raise UserError(f"{path}: unknown table format '{path.suffix}'; use .csv, .parquet, .json or .jsonl")
    data = read_bytes(path, MAX_TABLE_BYTES)  # a regular file, bounded: never a FIFO or a link to /dev/zero
    try:
        return reader(io.BytesIO(data)) if reader in (pd.read_csv, pd.read_parquet) else reader(data, path)
    except (ValueError, OSError, pd.errors.ParserError) as err:
        if isinstance(err, UserError):
            raise
        raise UserError(f"{path}: cannot be read as a {path.suffix[1:]} table ({str(err).splitlines()[0]})") from None


def _read_json(data: bytes, path: Path) -> pd.DataFrame:
    """A JSON table: a list of records, ``{"runs": [...]}`` (or ``rows``), or JSON lines."""
    try:
        rows = loads(data, path)
    except JsonFileError:
        if b"\n" not in data.strip():  # one line that is not JSON: say why as JSON, not as JSON lines
            raise
        return _read_json_lines(data, path)
    if isinstance(rows, dict):
        rows = rows.get("runs", rows.get("rows", rows))
    if not isinstance(rows, list):
        raise UserError(f"{path}: a JSON table is a list of objects (one per run), or {{\"runs\": [...]}}; this one "
                        f"holds a {_json_type(rows)}")
    return _frame(rows, path, "item")


def _read_json_lines(data: bytes, path: Path) -> pd.DataFrame:
    """A JSON-lines table: one object per line (blank lines skipped)."""
    rows = []
    for number, line in enumerate(data.splitlines(), 1):
        if line.strip():
            rows.append(loads(line, f"{path}, line {number}"))
    return _frame(rows, path, "line")


def _frame(rows: list[Any], path: Path, unit: str) -> pd.DataFrame:
    """The table of ``rows``: each a JSON object of plain values (a nested list or object is no table cell)."""
    for number, row in enumerate(rows, 1):
        if not isinstance(row, dict):
            raise UserError(f"{path}: {unit} {number} is a {_json_type(row)}, not an object of column: value pairs; "
                            "fix or remove it")
        nested = next((k for k, v in row.items() if isinstance(v, (dict, list))), None)
        if nested is not None:
            raise UserError(f"{path}: {unit} {number}, column '{shown(nested)}' holds a {_json_type(row[nested])}, "
                            "not a value; flatten it or remove the column")
    return pd.DataFrame.from_records(rows) if rows else pd.DataFrame()


def _json_type(value: Any) -> str:
    return {dict: "JSON object", list: "JSON list", str: "string", bool: "boolean", type(None): "null"}.get(
        type(value), "number")


def _apply_mapping(table: pd.DataFrame, mapping: dict[str, str], path: Path) -> pd.DataFrame:
    missing = [column for column in mapping.values() if column not in table.columns]
    if missing:
        raise ParameterError(f"{path}: mapping names column '{shown(missing[0])}' which the table lacks "
                             f"(columns: {', '.join(map(str, table.columns[:20]))})", "mapping")
    renamed = table.drop(columns=[c for c in mapping if c in table.columns and c not in mapping.values()])
    return renamed.rename(columns={column: canonical for canonical, column in mapping.items()})


def _as_bool(series: pd.Series) -> pd.Series:
    """Parse True/False, 1/0 and yes/no the way other frameworks write them; anything else becomes missing."""
    if series.dtype == bool:
        return series

    def parse(value: Any) -> Any:
        if isinstance(value, (bool, np.bool_)):
            return bool(value)
        text = str(value).strip().lower()
        return True if text in _TRUE else False if text in _FALSE else None

    return series.map(parse).astype("boolean")


@dataclass(frozen=True)
class Runs:
    """The runs a law is fitted on: done, with positive FLOPs and positive accuracy in ``metric``.

    Attributes:
        frame: the usable rows (``train_flops`` and ``metric`` numeric, positive).
        metric: the accuracy column analysed (``autoattack_acc`` unless the user chose another).
        accuracy_unit: ``"fraction"`` or ``"percent"``, detected from the values (max > 1.5 means percent).
        source: the file or folder the table came from, for messages and the report.
        dropped: how many rows were set aside and why.
    """

    frame: pd.DataFrame
    metric: str
    accuracy_unit: str
    source: str
    dropped: dict[str, int] = field(default_factory=dict)

    @property
    def flops(self) -> np.ndarray:
        return self.frame["train_flops"].to_numpy(dtype=float)

    @property
    def accuracy(self) -> np.ndarray:
        return self.frame[self.metric].to_numpy(dtype=float)

    @property
    def ceiling(self) -> float:
        """The highest accuracy possible in the table's unit: a saturating law's plateau cannot exceed it."""
        return 100.0 if self.accuracy_unit == "percent" else 1.0

    def units(self) -> dict[str, str]:
        return {"accuracy": self.accuracy_unit, "flops": FLOPS_UNIT}


def usable_runs(table: pd.DataFrame, metric: str = "autoattack_acc", min_acc: float | None = None, *,
                need_flops: bool = True) -> Runs:
    """Select the runs a scaling law or predictor may use, or say in one line why the table cannot be used.

    Only ``done`` runs count when a status column exists (failed or running runs have no final accuracy). Rows with
    missing FLOPs or accuracy, accuracy <= 0 (log space needs positive values), or accuracy below ``min_acc``
    (collapsed runs) are dropped and counted; non-positive FLOPs are an error because they mean a broken column.
    The predictor passes ``need_flops=False``: a recipe's accuracy can be learned from tables that never counted FLOPs.
    """
    source = str(table.attrs.get("source", "table"))
    if not need_flops and "train_flops" not in table:
        table = table.assign(train_flops=1.0)
    _require_columns(table, ("train_flops", metric), source)
    dropped: dict[str, int] = {}
    frame = table
    if "status" in frame:
        done = frame["status"].astype(str).str.strip().str.lower() == "done"
        dropped["not_done"] = int((~done).sum())
        frame = frame[done]
    numeric = {column: _numeric(frame, column, source) for column in ("train_flops", metric)}
    frame = frame.assign(**numeric)
    _reject_non_positive_flops(frame, source)
    if frame[metric].notna().sum() == 0 and metric == "autoattack_acc" and "pgd40_acc" in table:
        raise ParameterError(f"{source}: column 'autoattack_acc' has no values; pass metric pgd40_acc to analyse "
                             "PGD-40 accuracy instead", "metric")
    _reject_impossible_accuracy(frame, metric, source)
    frame, dropped = _drop_unusable(frame, metric, min_acc, dropped)
    if len(frame) < MIN_POINTS:
        raise UserError(f"{source}: only {len(frame)} usable runs (done, train_flops > 0, {metric} > 0); "
                        f"a law needs at least {MIN_POINTS}")
    unit = "percent" if float(frame[metric].max()) > 1.5 else "fraction"
    return Runs(frame.reset_index(drop=True), metric, unit, source, {k: v for k, v in dropped.items() if v})


def _require_columns(table: pd.DataFrame, columns: Sequence[str], source: str) -> None:
    for column in columns:
        if column not in table.columns:
            hint = " or pass metric pgd40_acc" if column == "autoattack_acc" and "pgd40_acc" in table else ""
            raise ParameterError(f"{source}: no '{column}' column; add it or map yours (mapping "
                                 f"{column}=YOUR_COLUMN){hint}", "mapping", "metric")


def _numeric(frame: pd.DataFrame, column: str, source: str) -> pd.Series:
    """A column as finite floats (blanks become missing), or one line naming the first bad value: a word, or an
    infinity (``inf``, or a number too large for a float such as ``1e400``), which no law or predictor can use."""
    values = pd.to_numeric(frame[column], errors="coerce")
    bad = values.isna() & frame[column].notna() & (frame[column].astype(str).str.strip() != "")
    if bad.any():
        example = frame.loc[bad, column].iloc[0]
        raise UserError(f"{source}: column '{column}' holds a non-number ({shown(repr(example))}); fix the value or "
                        "map another column (mapping)", "mapping")
    values = values.astype(float)
    infinite = np.isinf(values.to_numpy())
    if infinite.any():
        where = f" (run {shown(frame['run_id'][infinite].iloc[0])})" if "run_id" in frame else ""
        raise UserError(f"{source}: column '{column}' holds an infinite value{where}; values must be finite numbers, "
                        "fix or remove that row")
    return values


def numeric_columns(frame: pd.DataFrame, columns: Sequence[str], source: str) -> pd.DataFrame:
    """``frame`` with ``columns`` checked and converted by :func:`_numeric` (for the predictor's numeric features)."""
    return frame.assign(**{column: _numeric(frame, column, source) for column in columns if column in frame})


def check_flops_sum(flops: pd.Series | np.ndarray, source: str) -> float:
    """The sum of a FLOP column, or one line when it overflows a float (each value finite, the total not): a share of
    an infinite total is no share (``replay`` ignored ``--budget-frac`` and printed a null compute share)."""
    with np.errstate(over="ignore"):
        total = float(np.sum(np.asarray(flops, dtype=float)))
    if not math.isfinite(total):
        raise UserError(f"{source}: column 'train_flops' sums to more than a float holds (about 1.8e308); FLOPs are "
                        "counts (a WRN-70-16 run is about 1e21): fix the column or map the right one (mapping)",
                        "mapping")
    return total


def _reject_non_positive_flops(frame: pd.DataFrame, source: str) -> None:
    bad = frame["train_flops"] <= 0
    if bad.any():
        where = f" (e.g. run {frame.loc[bad, 'run_id'].iloc[0]})" if "run_id" in frame else ""
        raise UserError(f"{source}: {int(bad.sum())} rows have non-positive train_flops{where}; FLOPs must be > 0, "
                        "remove those rows or fix the column")


def _reject_impossible_accuracy(frame: pd.DataFrame, metric: str, source: str) -> None:
    """An accuracy above 100 is neither a fraction nor a percent: a broken column, not a run to fit."""
    bad = frame[metric] > 100
    if bad.any():
        where = f" (run {shown(frame.loc[bad, 'run_id'].iloc[0])})" if "run_id" in frame else ""
        raise UserError(f"{source}: column '{metric}' holds {frame.loc[bad, metric].iloc[0]:g}{where}; accuracies are "
                        "fractions (0..1) or percent (0..100): fix the value or map another column (mapping)",
                        "mapping")


def _drop_unusable(frame: pd.DataFrame, metric: str, min_acc: float | None,
                   dropped: dict[str, int]) -> tuple[pd.DataFrame, dict[str, int]]:
    # each mask is taken on what the previous step kept, so a run is counted once, under its first reason
    for reason, column in (("missing_flops", "train_flops"), ("missing_accuracy", metric)):
        keep = frame[column].notna()
        dropped[reason] = int((~keep).sum())
        frame = frame[keep]
    keep = frame[metric] > 0
    dropped["non_positive_accuracy"] = int((~keep).sum())
    frame = frame[keep]
    if min_acc is not None:
        keep = frame[metric] >= min_acc
        dropped["below_min_acc"] = int((~keep).sum())
        frame = frame[keep]
    return frame, dropped


def jsonable(obj: Any) -> Any:
    """Make ``obj`` strict-JSON friendly (NaN/inf become null, numpy scalars Python numbers) for the report's JSON."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return jsonable(obj.tolist())
    if obj is pd.NA or obj is pd.NaT:
        return None
    if hasattr(obj, "item") and callable(obj.item) and getattr(obj, "ndim", 1) == 0:
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj
