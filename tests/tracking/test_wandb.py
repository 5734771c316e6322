"""Weights & Biases offline: the run folder W&B writes, read back from its own run file (W&B's protobuf records)."""

import json

import pytest

from robustscale.training import train
from tests.tracking.wandb_files import wandb_history


def test_offline_runs_write_their_history_in_the_run_folder(wandb_offline, tiny_cfg, tmp_path):
    record = train(tiny_cfg("train.epochs=2", "output.trackers=[wandb]", "output.experiment=tiny-sweep"),
                   tmp_path / "run", progress=False)
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    runs, history, summary = wandb_history(tmp_path / "run")
    (run,) = runs
    assert run.run_id == json.loads((tmp_path / "run" / "trackers.json").read_text())["wandb"]["run"]["id"]
    assert run.display_name == record.run_id and run.run_group == "tiny-sweep" and run.project == "robustscale"
    config = {item.key: json.loads(item.value_json) for item in run.config.update}
    assert config["train.lr"] == "0.1" and config["model.name"] == "wrn_10_1"
    assert [h["_step"] for h in history] == [1, 2]
    assert [h["train/loss"] for h in history] == pytest.approx([r["loss"] for r in rows])
    assert [h["val/pgd_acc"] for h in history] == pytest.approx([r["val_pgd_acc"] for r in rows])
    assert history[-1]["cost/train_flops"] == record.accounting.train_flops
    assert summary["final/clean_acc"] == pytest.approx(record.metrics.clean_acc)
    assert summary["final/energy_kwh"] == pytest.approx(record.accounting.energy_kwh)
