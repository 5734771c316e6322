"""The results table: one row per run folder, read from the ``record.json`` files under a runs directory.

This is the table the scaling-law analysis reads (``robustscale results RUNS_DIR``). Accuracies are fractions;
``synthetic``, ``ema`` and ``energy_estimated`` are booleans. Failed runs keep their ``reason``; a run whose record
says running but whose worker is gone says so in ``reason`` (the next sweep resumes it). A record that cannot be read
or whose fields have the wrong types (a damaged or hand-edited file) is skipped with a warning naming it and the
field: one bad folder never breaks ``results``, ``fit`` or ``report`` for the rest. The folder of an adaptive sweep
adds ``adaptive_round`` and ``adaptive_strategy``: which round of which strategy chose each run. A run whose training
stopped early says why and at which epoch (``stop_reason``, ``stop_epoch``; ``collapse_epoch`` is the first
catastrophic-overfitting alarm, stopped or only warned).
"""

from __future__ import annotations

import logging
import math
from numbers import Real
from pathlib import Path
from typing import Any

import pandas as pd

from robustscale.errors import UserError
from robustscale.store.adaptive_plan import chosen_rounds
from robustscale.enums import StopReason
from robustscale.store.record import RECORD, RecordError, RunRecord, Status, read_record_json, recipe_id
from robustscale.store.rundir import claim_is_live

__all__ = ["COLUMNS", "EXTRA_COLUMNS", "results_table", "find_run_dirs", "record_row"]

log = logging.getLogger(__name__)

COLUMNS = (
    "run_id", "status", "dataset", "model", "params", "activation", "loss", "beta", "attack_steps", "epochs", "ema",
    "synthetic", "synthetic_fraction", "seed", "clean_acc", "pgd40_acc", "autoattack_acc", "train_flops",
    "train_flops_paper", "gpu_hours", "energy_kwh", "energy_estimated", "cost_usd", "co2_kg",
)
EXTRA_COLUMNS = ("reason", "run_dir", "wall_s", "samples_seen", "attack_flops", "eval_flops", "mean_power_w",
                 "epochs_run", "best_epoch", "updated", "recipe_id", "eval_wall_s", "eval_energy_kwh",
                 "total_energy_kwh", "adv_loss", "adv_margin", "unique_images", "unique_synthetic_images",
                 "synthetic_n", "stop_reason", "stop_epoch", "collapse_epoch", "synthetic_key")
_BOOL = ("ema", "synthetic", "energy_estimated")
_INT = ("params", "attack_steps", "epochs", "seed", "samples_seen", "epochs_run", "best_epoch", "unique_images",
        "unique_synthetic_images", "synthetic_n", "stop_epoch", "collapse_epoch")
_FLOAT = ("beta", "synthetic_fraction", "clean_acc", "pgd40_acc", "autoattack_acc", "train_flops",
          "train_flops_paper", "gpu_hours", "energy_kwh", "cost_usd", "co2_kg", "wall_s", "attack_flops",
          "eval_flops", "mean_power_w", "eval_wall_s", "eval_energy_kwh", "total_energy_kwh", "adv_loss",
          "adv_margin")
_ACCOUNTING = ("train_flops", "gpu_hours", "energy_kwh", "energy_estimated", "cost_usd",
               "co2_kg", "attack_flops", "eval_flops", "mean_power_w", "eval_wall_s", "eval_energy_kwh",
               "total_energy_kwh", "unique_images", "unique_synthetic_images")


def find_run_dirs(runs_dir: str | Path) -> list[Path]:
    """Run folders (holding a ``record.json``) under ``runs_dir``, or ``runs_dir`` itself if it is one."""
    runs_dir = Path(runs_dir)
    if not runs_dir.is_dir():
        raise UserError(f"runs directory '{runs_dir}' not found: pass the --out folder of a sweep (e.g. runs/demo)")
    if (runs_dir / RECORD).is_file():
        return [runs_dir]
    return sorted(p.parent for p in runs_dir.rglob(RECORD)
                  if not any(part.startswith(".") for part in p.relative_to(runs_dir).parts[:-1]))


def _get(tree: Any, *keys: str) -> Any:
    for key in keys:
        if not isinstance(tree, dict):
            return None
        tree = tree.get(key)
    return tree


_STR = ("run_id", "status", "dataset", "model", "activation", "loss", "reason", "updated", "recipe_id", "stop_reason",
        "synthetic_key")


def _type_problem(record: RunRecord, row: dict[str, Any]) -> str | None:
    """The first field of a record with the wrong type for its column (None when every field fits)."""
    for section in ("data", "model", "attack", "train"):
        value = record.config.get(section)
        if value is not None and not isinstance(value, dict):
            return f"'config.{section}' is a {type(value).__name__}, not an object"
    for column, value in row.items():
        if value is not None and not _fits(column, value):
            return f"'{column}' is {type(value).__name__} {str(value)[:40]!r}"
    return None


def _fits(column: str, value: Any) -> bool:
    """Whether a non-null value fits its column: booleans, strings, or finite numbers (integral for counts)."""
    if column in _BOOL:
        return isinstance(value, bool)
    if column in _STR:
        return isinstance(value, str)
    if column in (*_INT, *_FLOAT):
        if isinstance(value, bool) or not isinstance(value, Real):
            return False
        if isinstance(value, int):
            return abs(value) < 2**63  # what the table's Int64 / float64 columns hold
        value = float(value)
        return math.isnan(value) or not math.isinf(value) and (column in _FLOAT or value.is_integer()
                                                               and abs(value) < 2**63)
    return True


def _recipe(config: dict[str, Any]) -> str | None:
    """The run's recipe (its config without the seed), or None for a record whose config is not a resolved one."""
    try:
        return recipe_id(config)
    except (KeyError, TypeError):
        return None


def _row(run_dir: Path) -> dict[str, Any] | None:
    """The table row of one run folder, or None (with a warning) when its record is unreadable or mistyped."""
    raw = read_record_json(run_dir)
    if not isinstance(raw, dict):
        log.warning("skipped %s: %s is missing, unreadable or not a JSON object", run_dir, RECORD)
        return None
    try:
        record = RunRecord.from_dict(raw)
        row = record_row(record, run_dir)
    except RecordError as err:
        row, problem = None, str(err)
    except (TypeError, AttributeError, ValueError) as err:
        row, problem = None, f"{type(err).__name__}: {err}"
    else:
        problem = _type_problem(record, row)
    if problem is not None:
        log.warning("skipped %s: its %s has a field of the wrong type (%s)", run_dir, RECORD, problem)
        return None
    return row


def record_row(record: RunRecord, run_dir: Path) -> dict[str, Any]:
    """A record's fields under the table's column names (no type checks: see :func:`_type_problem`)."""
    cfg = record.config
    loss = _get(cfg, "train", "loss")
    synthetic = _get(cfg, "data", "synthetic", "path") is not None
    metrics, acc = record.metrics, record.accounting
    row = {
        "run_id": record.run_id if record.run_id is not None else run_dir.name, "status": record.status.value,
        "dataset": _get(cfg, "data", "dataset"), "model": _get(cfg, "model", "name"), "params": record.params,
        "activation": _get(cfg, "model", "act_layer"), "loss": loss,
        "beta": _get(cfg, "train", "beta") if loss == "trades" else None,  # only TRADES has a beta
        "attack_steps": _get(cfg, "attack", "steps") if loss not in (None, "standard") else 0,
        "epochs": _get(cfg, "train", "epochs"), "ema": _get(cfg, "train", "ema"), "synthetic": synthetic,
        "synthetic_fraction": _get(cfg, "data", "synthetic", "fraction") if synthetic else 0.0,
        "synthetic_n": _get(cfg, "data", "synthetic", "n") if synthetic else None,
        "synthetic_key": record.synthetic_key,  # which arrays the path held (two folders' runs of one id can differ)
        "seed": _get(cfg, "train", "seed"),
        **{k: getattr(metrics, k) for k in ("clean_acc", "pgd40_acc", "autoattack_acc", "best_epoch", "adv_loss",
                                            "adv_margin")},
        **{k: getattr(acc, k) for k in _ACCOUNTING},
        "train_flops_paper": acc.paper_convention_flops,  # the paper's convention (its own column: another unit)
        "reason": record.reason, "run_dir": str(run_dir), "wall_s": acc.wall_s, "samples_seen": acc.samples_seen,
        "epochs_run": record.epochs_run, "updated": record.updated, "recipe_id": _recipe(cfg), **_stop(record),
    }
    if record.status is Status.running and not claim_is_live(run_dir):
        row["reason"] = "interrupted: no worker holds it; rerun the sweep to resume it"
    return row


def _stop(record: RunRecord) -> dict[str, Any]:
    """Why and when training stopped early (empty cells for a run that trained all its epochs), and the first epoch
    the collapse detector fired at, whether it stopped the run or only warned."""
    stop = record.stopped_early
    collapses = [a.epoch for a in (stop, *record.alarms) if a is not None
                 and a.reason is StopReason.catastrophic_overfitting]
    return {"stop_reason": stop.reason.value if stop is not None else None,
            "stop_epoch": stop.epoch if stop is not None else None,
            "collapse_epoch": min(collapses) if collapses else None}


def results_table(runs_dir: str | Path) -> pd.DataFrame:
    """One row per run under ``runs_dir`` with :data:`COLUMNS` then :data:`EXTRA_COLUMNS`, sorted by run id.

    Raises:
        UserError: the folder is missing or holds no run records.
    """
    dirs = find_run_dirs(runs_dir)
    if not dirs:
        raise UserError(f"no runs under '{runs_dir}' (no {RECORD} found): run `robustscale sweep SPEC --out "
                        f"{runs_dir}` or `robustscale train` first")
    rows = [row for row in map(_row, dirs) if row is not None]
    if not rows:
        raise UserError(f"no readable runs under '{runs_dir}': all {len(dirs)} {RECORD} files are damaged (see the "
                        "warnings above)")
    table = pd.DataFrame(rows, columns=[*COLUMNS, *EXTRA_COLUMNS])
    for column in _BOOL:
        table[column] = table[column].astype("boolean")
    for column in _INT:
        table[column] = pd.to_numeric(table[column], errors="coerce").astype("Int64")
    for column in _FLOAT:
        table[column] = pd.to_numeric(table[column], errors="coerce").astype("float64")
    table = _mark_adaptive(table, Path(runs_dir))
    return table.sort_values("run_id", kind="stable").reset_index(drop=True)


def _mark_adaptive(table: pd.DataFrame, runs_dir: Path) -> pd.DataFrame:
    """An adaptive sweep's folder: add ``adaptive_round`` and ``adaptive_strategy`` (empty for runs it did not
    choose); a damaged plan costs the two columns, with a warning, not the table."""
    try:
        chosen = chosen_rounds(runs_dir) if runs_dir.is_dir() else None
    except UserError as err:
        log.warning("%s", err)
        chosen = None
    if chosen is None:
        return table
    strategy, rounds = chosen
    return table.assign(adaptive_round=table["run_id"].map(rounds).astype("Int64"),
                        adaptive_strategy=table["run_id"].map(lambda rid: strategy if rid in rounds else None))
