"""The training engine through its public API and CLI, on the embedded digits data."""

import json
import math

import pandas as pd
import pytest
import torch

from robustscale.analysis.report import runs_autoattack
from robustscale.cli import main
from robustscale.config import load_config
from robustscale.training import train
from robustscale.training.ema import ModelEMA
from robustscale.training.optim import lr_factor


def test_record_has_the_contract_keys(tiny_cfg, tmp_path):
    record = train(tiny_cfg("train.epochs=2"), tmp_path / "run", progress=False)
    rec = json.loads((tmp_path / "run" / "record.json").read_text())
    assert rec == record.to_dict()
    assert rec["status"] == "done" and rec["reason"] is None and rec["schema"] == 2
    for key in ("clean_acc", "pgd40_acc", "autoattack_acc", "best_epoch"):
        assert key in rec["metrics"]
    assert 0.0 <= rec["metrics"]["clean_acc"] <= 1.0 and 0.0 <= rec["metrics"]["pgd40_acc"] <= 1.0
    assert rec["params"] == 77850 and rec["epochs_run"] == 2
    assert rec["accounting"]["samples_seen"] == 2 * 21 * 64  # ceil(1337 / 64) = 21 full batches per epoch
    assert rec["accounting"]["unique_images"] == 1337 and rec["accounting"]["unique_synthetic_images"] == 0
    assert rec["metrics"]["adv_loss"] > 0 and rec["evaluations"]["adv_loss"]["n"] == tiny_cfg().eval.autoattack_n
    assert rec["config"]["model"]["name"] == "wrn_10_1"
    assert not set(rec) & set(rec["accounting"])  # each fact once (schema 1 had samples_seen, wall_s twice)
    assert rec["hardware"]["gpu_count"] == 0 and rec["hardware"]["cpu"]
    for name in ("config.yaml", "metrics.jsonl", "best.safetensors", "last.safetensors", "checkpoint.safetensors"):
        assert (tmp_path / "run" / name).is_file(), name
    rows = [json.loads(r) for r in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2] and all("val_pgd_acc" in r for r in rows)


def test_the_final_autoattack_runs_the_configs_subset_and_the_report_names_it(tiny_cfg, tmp_path):
    """``eval.autoattack_attacks`` (the demo's APGD-CE + APGD-T) reaches the final evaluation, and the report, which
    a reader compares with the paper's full AutoAttack numbers, says which attacks ran."""
    cfg = tiny_cfg("train.epochs=1", "train.max_steps=2", "eval.autoattack=standard", "eval.autoattack_n=8",
                   "eval.autoattack_attacks=[apgd-ce, apgd-t]")
    record = train(cfg, tmp_path / "run", progress=False)
    aa = record.evaluations["autoattack"]
    assert (aa["version"], aa["attacks"], aa["skipped"], aa["n"]) == ("standard", ["apgd-ce", "apgd-t"],
                                                                      ["fab-t", "square"], 8)
    assert record.metrics.autoattack_acc == aa["robust_acc"] and list(aa["per_attack"]) == ["apgd-ce", "apgd-t"]
    named = runs_autoattack(pd.DataFrame({"run_dir": [str(tmp_path / "run")]}))
    assert named == "APGD-CE + APGD-T of standard AutoAttack (FAB-T + Square not run), 8 test points"


def test_trades_on_a_timm_model(tmp_path):
    cfg = load_config("configs/digits.yaml", ["model.name=resnet18", "train.loss=trades", "train.epochs=1",
                                              "train.max_steps=2", "data.val_size=50", "eval.pgd_steps=2",
                                              "eval.autoattack=none", "attack.steps=1"])
    rec = train(cfg, tmp_path / "r18", progress=False)
    assert rec.status == "done"
    assert rec.params > 11_000_000  # a real resnet18, not a WRN


def test_divergence_stops_with_failed_status_and_keeps_last_good_checkpoint(tiny_cfg, tmp_path, monkeypatch):
    import robustscale.training.loop as loop

    run = tmp_path / "nan"
    train(tiny_cfg("train.epochs=1"), run, progress=False)
    before = (run / "checkpoint.safetensors").read_bytes()
    real = loop.compute_loss

    def exploding(*args, **kwargs):  # the loss blows up during epoch 2
        out = real(*args, **kwargs)
        return out._replace(loss=out.loss * float("nan"))

    monkeypatch.setattr(loop, "compute_loss", exploding)
    rec = train(tiny_cfg("train.epochs=2"), run, resume=True, progress=False)
    assert rec.status == "failed"
    assert "loss became nan" in rec.reason and "train.lr" in rec.reason
    assert (run / "checkpoint.safetensors").read_bytes() == before
    assert json.loads((run / "record.json").read_text())["status"] == "failed"


def test_bad_epochs_exit_2_one_line(capsys):
    assert main(["train", "configs/digits.yaml", "train.epochs=-1"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "train.epochs" in err


def test_ema_warmup_and_buffers():
    net = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.BatchNorm1d(2))
    ema = ModelEMA(net, decay=0.995)
    assert ema.current_decay() == pytest.approx(0.1)  # (1 + 0) / (10 + 0)
    with torch.no_grad():
        net[0].weight.add_(1.0)
        net[1].running_mean.fill_(2.0)
    ref_w = ema.module[0].weight.clone()
    ema.update(net)
    assert torch.allclose(ema.module[0].weight, 0.1 * ref_w + 0.9 * net[0].weight)
    assert torch.allclose(ema.module[1].running_mean, torch.full((2,), 1.8))  # BN buffers are averaged too
    for _ in range(2000):
        ema.update(net)
    assert ema.current_decay() == 0.995


def test_lr_schedule_warmup_cosine_piecewise():
    assert lr_factor(0, 100, 10, "cosine") == pytest.approx(0.1)
    assert lr_factor(9, 100, 10, "cosine") == pytest.approx(1.0)
    assert lr_factor(55, 100, 10, "cosine") == pytest.approx(0.5)
    assert lr_factor(99, 100, 0, "cosine") < 0.01
    assert lr_factor(49, 100, 0, "piecewise") == 1.0 and lr_factor(50, 100, 0, "piecewise") == 0.1
    assert lr_factor(80, 100, 0, "piecewise") == pytest.approx(0.01)
    assert math.isclose(lr_factor(30, 100, 0, "constant"), 1.0)
