"""What the tracker tests share: a run that trains in seconds, one MLflow SQLite store per session (its tables take
seconds to create), W&B offline."""

import shutil

import pytest

from robustscale.config import load_config

# 6 steps per epoch (1387 training images, batch 256), a 1-step attack, PGD-1 on 50 validation images
TINY = ["model.name=wrn_10_1", "data.val_size=50", "eval.pgd_steps=1", "eval.autoattack=none", "attack.steps=1",
        "data.batch_size=256", "train.epochs=3"]


@pytest.fixture
def tiny_cfg(digits_yaml):
    def make(*overrides):
        return load_config(digits_yaml, [*TINY, *overrides])

    return make


@pytest.fixture(scope="session")
def mlflow_store_template(tmp_path_factory):
    """An empty MLflow SQLite store with its tables made once; each test gets its own copy."""
    pytest.importorskip("mlflow", reason="MLflow is not installed (pip install -e '.[test]' brings mlflow-skinny)")
    pytest.importorskip("sqlalchemy", reason="MLflow's SQLite store needs sqlalchemy (in the test extra)")
    pytest.importorskip("alembic", reason="MLflow's SQLite store needs alembic (in the test extra)")
    from mlflow.tracking import MlflowClient

    path = tmp_path_factory.mktemp("mlflow") / "template.db"
    MlflowClient(tracking_uri=f"sqlite:///{path}").search_experiments()  # creates the tables
    return path


@pytest.fixture
def mlflow_store(mlflow_store_template, tmp_path, monkeypatch):
    """A fresh MLflow SQLite store for one test, as ``MLFLOW_TRACKING_URI`` names it."""
    path = tmp_path / "mlruns.db"
    shutil.copyfile(mlflow_store_template, path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{path}")
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
    return path


@pytest.fixture
def wandb_offline(monkeypatch):
    pytest.importorskip("wandb", reason="Weights & Biases is not installed (pip install -e '.[test]' brings it)")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    for name in ("WANDB_PROJECT", "WANDB_DIR", "WANDB_RUN_ID", "WANDB_RESUME"):
        monkeypatch.delenv(name, raising=False)
