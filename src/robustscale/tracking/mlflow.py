"""MLflow: one MLflow run per robustscale run, in the store ``MLFLOW_TRACKING_URI`` names (a server, or a local
``sqlite:///mlruns.db``), through ``MlflowClient`` (no global active run: a sweep worker trains many runs in turn).

The experiment is ``output.experiment`` (a sweep's name), else ``MLFLOW_EXPERIMENT_NAME``, else ``robustscale``; the
run's name is the run id, its parameters the flattened config. A resumed run reopens the MLflow run whose id the run
folder keeps, and asks MLflow which epochs it already holds. Imported only when a run asks for ``mlflow`` (the
``robustscale[mlflow]`` extra).
"""

from __future__ import annotations

import os
import time
from typing import Any, Mapping

from mlflow.entities import Metric, Param
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from robustscale.tracking.base import End, RunInfo

__all__ = ["open_run", "MlflowRun", "DEFAULT_EXPERIMENT"]

DEFAULT_EXPERIMENT = "robustscale"
_EPOCH_KEY = "train/loss"  # logged every epoch: its history says which epochs the run holds
_BATCH = 100  # MLflow takes at most 100 parameters (and 1000 metrics) per log_batch
_STATUS = {End.finished: "FINISHED", End.failed: "FAILED", End.stopped: "KILLED"}


class MlflowRun:
    """The MLflow run of one robustscale run."""

    def __init__(self, info: RunInfo, saved: dict[str, Any] | None):
        self.client = MlflowClient()
        self.run_id, self.status_at_open = _existing(self.client, saved)
        self.new = self.run_id is None
        if self.new:
            experiment = info.experiment or os.environ.get("MLFLOW_EXPERIMENT_NAME") or DEFAULT_EXPERIMENT
            tags = {"robustscale.run_id": info.run_id, "robustscale.run_dir": str(info.run_dir.resolve())}
            run = self.client.create_run(_experiment_id(self.client, experiment), run_name=info.run_id, tags=tags)
            self.run_id = run.info.run_id
            params = [Param(k, v[:6000]) for k, v in info.params.items()]  # MLflow's longest parameter value
            for i in range(0, len(params), _BATCH):
                self.client.log_batch(self.run_id, params=params[i:i + _BATCH])
        else:
            self.client.update_run(self.run_id, status="RUNNING")

    def saved(self) -> dict[str, Any]:
        return {"run_id": self.run_id}

    def last_epoch(self) -> int | None:
        history = self.client.get_metric_history(self.run_id, _EPOCH_KEY)
        return max((m.step for m in history), default=0)

    def log_epoch(self, metrics: Mapping[str, float], epoch: int) -> None:
        now_ms = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(k, v, now_ms, epoch) for k, v in metrics.items()])

    def log_final(self, metrics: Mapping[str, float], epoch: int) -> None:
        self.log_epoch(metrics, epoch)

    def close(self, end: End) -> None:
        if end is End.kept:  # as it was (an evaluation of a finished run leaves it finished); a new run: finished
            if self.status_at_open != "RUNNING":
                self.client.set_terminated(self.run_id, status=self.status_at_open or "FINISHED")
        else:
            self.client.set_terminated(self.run_id, status=_STATUS[end])


def _existing(client: MlflowClient, saved: dict[str, Any] | None) -> tuple[str | None, str | None]:
    """The saved MLflow run and its status, when this store still has it (not deleted); else ``(None, None)``: a
    new run is started."""
    run_id = (saved or {}).get("run_id")
    if not isinstance(run_id, str) or not run_id.isalnum():
        return None, None
    try:
        run = client.get_run(run_id)
    except MlflowException:  # another store (MLFLOW_TRACKING_URI changed), or deleted for good
        return None, None
    return (run_id, run.info.status) if run.info.lifecycle_stage == "active" else (None, None)


def _experiment_id(client: MlflowClient, name: str) -> str:
    """The experiment's id, created when missing (two sweep workers may race to create it: the loser reads it)."""
    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    try:
        return client.create_experiment(name)
    except MlflowException:
        found = client.get_experiment_by_name(name)
        if found is None:
            raise
        return found.experiment_id


def open_run(info: RunInfo, saved: dict[str, Any] | None, logged_epoch: int) -> MlflowRun:
    return MlflowRun(info, saved)
