"""The one protocol every experiment tracker implements, and what it is told about the run it watches.

A tracker is a window on a run folder, never its source of truth: the folder's ``metrics.jsonl`` and
``record.json`` hold every number, and a tracker gets them as they are written. Each tracker lives in its own module
(:mod:`.tensorboard`, :mod:`.mlflow`, :mod:`.wandb`) that imports its library at the top; :mod:`.trackers` imports
that module only when a run asks for the tracker, so a run without trackers (and ``robustscale --help``) loads none
of them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any, Mapping, Protocol

__all__ = ["RunInfo", "TrackerRun", "End", "epoch_metrics", "final_metrics", "flat_params", "EPOCH_KEYS", "COST_KEYS"]


@dataclass(frozen=True)
class RunInfo:
    """What a tracker needs to open (or reopen) its run for one robustscale run."""

    run_dir: Path  # the run folder (TensorBoard and W&B keep their files in it)
    run_id: str  # robustscale's run id: the tracker run's name
    experiment: str | None  # ``output.experiment``: the MLflow experiment and W&B group (a sweep's name)
    params: dict[str, str]  # the resolved config, flattened (``train.lr: "0.1"``), logged once per tracker run


class End(str, Enum):
    """How a tracker run ends for now."""

    finished = "finished"  # the run is done
    failed = "failed"  # the run failed (its record says why)
    stopped = "stopped"  # training stopped and may resume (preempted, killed): the tracker run stays open to resume
    kept = "kept"  # leave the tracker run's state as it was (``robustscale eval`` adding its numbers)


class TrackerRun(Protocol):
    """One tracker's run, opened by its module's ``open_run(info, saved, logged_epoch)``: ``saved`` is what
    :meth:`saved` returned last time (None: start a new tracker run), ``logged_epoch`` the last epoch it was given."""

    new: bool  # a new tracker run (it holds no epoch yet), also when ``saved`` named one that no longer exists

    def saved(self) -> dict[str, Any]:
        """What the run folder keeps to reopen this tracker run on resume (its ids): plain JSON."""

    def last_epoch(self) -> int | None:
        """The last epoch the tracker's own store holds for this run, or None when it cannot tell. A kill between a
        log and the run folder's note of it is then no reason to log an epoch twice."""

    def log_epoch(self, metrics: Mapping[str, float], epoch: int) -> None:
        """One epoch's scalars, at step ``epoch``."""

    def log_final(self, metrics: Mapping[str, float], epoch: int) -> None:
        """The run's end figures (the record's metrics and costs, or an evaluation), once."""

    def close(self, end: End) -> None:
        """Flush and let go of the tracker run."""


# metrics.jsonl's keys -> the tracker's names; grouped as the trackers' dashboards group them (by the prefix)
EPOCH_KEYS = {"loss": "train/loss", "train_clean_acc": "train/clean_acc", "train_adv_acc": "train/robust_acc",
              "val_clean_acc": "val/clean_acc", "val_pgd_acc": "val/pgd_acc", "lr": "train/lr",
              "img_per_s": "speed/img_per_s", "epoch_s": "speed/epoch_s", "samples_seen": "cost/samples_seen",
              "train_flops": "cost/train_flops", "energy_kwh": "cost/energy_kwh"}


def epoch_metrics(row: Mapping[str, Any]) -> dict[str, float]:
    """A metrics.jsonl row as the trackers' scalars (finite numbers only)."""
    return {name: float(row[key]) for key, name in EPOCH_KEYS.items() if _number(row.get(key))}


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def flat_params(config: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """``{"train": {"lr": 0.1}}`` -> ``{"train.lr": "0.1"}``: the config as the trackers' parameters (a list or a
    mapping of free keys, such as ``model.kwargs``, is one value written as text)."""
    out: dict[str, str] = {}
    for key, value in config.items():
        if isinstance(value, dict) and value and f"{prefix}{key}" != "model.kwargs":
            out.update(flat_params(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = "null" if value is None else str(value)
    return out


def final_metrics(metrics: Mapping[str, Any], accounting: Mapping[str, Any], params: int | None) -> dict[str, float]:
    """The record's end figures as the trackers' scalars, all under ``final/``: every measured metric
    (``final/autoattack_acc`` ...), the cost columns (``final/train_flops``, ``final/energy_kwh``, ``final/co2_kg``
    ...) and the parameter count."""
    out = {f"final/{k}": float(v) for k, v in metrics.items() if _number(v)}
    out.update({f"final/{k}": float(v) for k, v in accounting.items() if k in COST_KEYS and _number(v)})
    if _number(params):
        out["final/params"] = float(params)
    return out


# the record's cost columns a tracker shows at the end (the results table has every column)
COST_KEYS = ("train_flops", "eval_flops", "samples_seen", "wall_s", "eval_wall_s", "gpu_hours", "energy_kwh",
             "eval_energy_kwh", "total_energy_kwh", "cost_usd", "total_cost_usd", "co2_kg", "total_co2_kg",
             "cloud_cost_usd", "mean_power_w")
