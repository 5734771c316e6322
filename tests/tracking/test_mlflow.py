"""MLflow with a local SQLite store: what a run and a sweep leave there, read back through MLflow's client."""

import json
import logging
import sqlite3

import pytest

import robustscale.training.loop as loop
from robustscale.cli import main
from robustscale.store.record import read_record
from robustscale.training import train

pytest.importorskip("mlflow", reason="MLflow is not installed (pip install -e '.[test]' brings mlflow-skinny)")
from mlflow.tracking import MlflowClient  # noqa: E402


def steps(client, run, key="train/loss"):
    return [m.step for m in sorted(client.get_metric_history(run.info.run_id, key), key=lambda m: m.step)]


def test_a_sweep_is_an_experiment_of_runs_named_by_run_id(mlflow_store, tmp_path, digits_yaml, capsys):
    spec = tmp_path / "spec.yaml"
    spec.write_text(f"base: {digits_yaml}\nname: tiny-sweep\naxes: {{train.seed: [0, 1]}}\n"
                    "overrides: {model.name: wrn_10_1, train.epochs: 2, data.val_size: 50, eval.pgd_steps: 1, "
                    "eval.autoattack: none, attack.steps: 1, data.batch_size: 256, eval.autoattack_n: 100}\n")
    assert main(["sweep", str(spec), "--out", str(tmp_path / "out"), "--tracker", "mlflow", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert len(summary["done"]) == 2
    client = MlflowClient()
    experiment = client.get_experiment_by_name("tiny-sweep")
    runs = client.search_runs([experiment.experiment_id])
    assert sorted(r.info.run_name for r in runs) == sorted(summary["done"])
    for run in runs:
        record = read_record(tmp_path / "out" / run.info.run_name)
        assert run.info.status == "FINISHED"
        assert run.data.params["train.seed"] == str(record.config["train"]["seed"])
        assert run.data.params["model.name"] == "wrn_10_1" and run.data.params["train.lr"] == "0.1"
        assert steps(client, run) == [1, 2] and steps(client, run, "val/pgd_acc") == [1, 2]
        assert steps(client, run, "cost/energy_kwh") == [1, 2]
        assert run.data.metrics["final/clean_acc"] == pytest.approx(record.metrics.clean_acc)
        assert run.data.metrics["final/train_flops"] == record.accounting.train_flops
        assert run.data.metrics["final/co2_kg"] == pytest.approx(record.accounting.co2_kg)


def test_an_evaluation_joins_the_run_and_leaves_it_finished(mlflow_store, tiny_cfg, tmp_path, capsys):
    run_dir = tmp_path / "run"
    train(tiny_cfg("train.epochs=2", "output.trackers=[mlflow]"), run_dir, progress=False)
    assert main(["eval", str(run_dir), "--attack", "pgd", "--steps", "1", "--n", "50", "--tracker", "mlflow",
                 "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    (run,) = MlflowClient().search_runs([MlflowClient().get_experiment_by_name("robustscale").experiment_id])
    name = f"eval/pgd-{result['eps']:.6g}"
    assert run.data.metrics[f"{name}/robust_acc"] == pytest.approx(result["robust_acc"])
    assert run.data.metrics[f"{name}/clean_acc"] == pytest.approx(result["clean_acc"])
    assert run.info.status == "FINISHED"


def test_a_store_that_fails_mid_run_is_warned_about_once_and_training_goes_on(mlflow_store, tiny_cfg, tmp_path,
                                                                              monkeypatch, caplog):
    """After epoch 1's checkpoint the store loses its metrics table (as a broken disk or database would): epoch 2's
    log fails, the tracker is dropped with one warning, and the run ends done with every epoch in metrics.jsonl."""
    real_save = loop._save

    def break_the_store_after_epoch_1(run):
        real_save(run)
        if run.progress.epoch == 1:
            with sqlite3.connect(mlflow_store) as db:
                db.execute("DROP TABLE metrics")

    monkeypatch.setattr(loop, "_save", break_the_store_after_epoch_1)
    with caplog.at_level(logging.WARNING):
        record = train(tiny_cfg("output.trackers=[mlflow]"), tmp_path / "run", progress=False)
    assert record.status == "done" and record.epochs_run == 3
    warnings = [r.getMessage() for r in caplog.records if "tracker mlflow" in r.getMessage()]
    assert len(warnings) == 1 and "failed" in warnings[0] and "training goes on" in warnings[0]
    assert json.loads((tmp_path / "run" / "trackers.json").read_text())["mlflow"]["epoch"] == 1


def test_an_unreachable_server_is_warned_about_and_training_goes_on(tiny_cfg, tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")  # the discard port: nothing listens
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    with caplog.at_level(logging.WARNING):
        record = train(tiny_cfg("train.epochs=1", "output.trackers=[mlflow]"), tmp_path / "run", progress=False)
    assert record.status == "done"
    assert [r.getMessage() for r in caplog.records if "tracker mlflow could not start" in r.getMessage()] != []
