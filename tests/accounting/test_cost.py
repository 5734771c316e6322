"""Cost and CO2 arithmetic, region presets, the record's accounting block, and the budget before training."""

import json
from dataclasses import asdict

import pytest

from robustscale.accounting import (REGIONS, CostModel, EnergyReading, RunAccounting, RunFlops, accounting_block,
                                    step_flops)
from robustscale.accounting.budget import plan
from robustscale.accounting.host import hardware
from robustscale.cli import main
from robustscale.config import AccountingConfig, load_config
from robustscale.errors import ConfigError, ParameterError

RECORD_KEYS = {"train_flops", "attack_flops", "update_flops", "eval_flops", "flops_per_sample",
               "paper_convention_flops", "samples_seen", "gpu_hours", "wall_s", "energy_kwh", "energy_kwh_gpu",
               "energy_kwh_cpu", "energy_estimated", "mean_power_w", "pue", "cost_usd", "co2_kg"}


def test_paper_defaults_arithmetic():
    cost = CostModel.from_config(AccountingConfig()).cost(10.0)
    assert cost.energy_kwh == pytest.approx(15.8)  # x PUE 1.58
    assert cost.cost_usd == pytest.approx(15.8 * 0.12)
    assert cost.co2_kg == pytest.approx(15.8 * 566.3 / 1000)
    assert cost.cloud_cost_usd is None


def test_overrides_region_presets_and_cloud_cost():
    own = CostModel.from_config(AccountingConfig(pue=1.1, price_per_kwh=0.3, carbon_g_per_kwh=100.0,
                                                 gpu_hour_usd=2.5)).cost(2.0, gpu_hours=8.0)
    assert (own.energy_kwh, own.cost_usd, own.co2_kg, own.cloud_cost_usd) == pytest.approx((2.2, 0.66, 0.22, 20.0))
    france = CostModel.from_config(AccountingConfig(region="France", price_per_kwh=0.2))
    assert france.carbon_g_per_kwh == REGIONS["france"].carbon_g_per_kwh
    assert france.price_per_kwh == 0.2  # the preset has no price: the configured one stays
    assert all(r.source and any(ch.isdigit() for ch in r.source) for r in REGIONS.values())  # sources with years
    with pytest.raises(ConfigError, match="accounting.region"):
        CostModel.from_config(AccountingConfig(region="atlantis"))


def test_accounting_block_has_every_record_key():
    run = RunFlops(step_flops("wrn_10_1", image_size=8, loss="at", steps=5))
    run.add_train(64)
    run.add_pgd_eval(200, 40)
    reading = EnergyReading(gpu_kwh=0.3, cpu_kwh=0.1, seconds=1800.0, cpu_estimated=True,
                            gpu_source="nvml-counter", cpu_source="process-estimate", gpu_names=["NVIDIA H100"])
    block = asdict(accounting_block(run, reading, AccountingConfig(gpu_hour_usd=2.0), wall_s=1800.0, gpu_count=2))
    assert RECORD_KEYS <= block.keys() and "hardware" not in block  # the record states the hardware once, on top
    assert block["train_flops"] == 64 * run.step.train == block["attack_flops"] + block["update_flops"]
    assert block["energy_kwh"] == pytest.approx(0.4 * 1.58)
    assert block["energy_estimated"] and block["energy_cpu_estimated"] and not block["energy_gpu_estimated"]
    assert block["gpu_hours"] == pytest.approx(1.0) and block["cloud_cost_usd"] == pytest.approx(2.0)
    assert block["mean_power_w"] == pytest.approx(800.0)
    machine = hardware(reading.gpu_names, 2)
    assert machine.gpu_count == 2 and machine.gpus == ["NVIDIA H100"] and machine.cpu
    json.dumps(block)  # goes into record.json as is


def test_run_accounting_through_a_resumed_run():
    """What the trainer does: meter, count steps, checkpoint, get killed, resume, write the block."""
    cfg = load_config("configs/digits.yaml", ["model.name=wrn_10_1"])
    first = RunAccounting.from_config(cfg)
    with first.meter():
        for _ in range(3):
            first.add_train(64)
        first.sync()
        checkpoint = json.loads(json.dumps(first.state_dict()))
        first.add_train(64)  # after the checkpoint: lost with the kill
    resumed = RunAccounting.from_config(cfg)
    resumed.load_state_dict(checkpoint)
    with resumed.meter():
        for _ in range(2):
            resumed.add_train(64)
        resumed.add_eval(200, 40, n_attacked=150)
    block = asdict(resumed.block(wall_s=2.0))
    assert RECORD_KEYS <= block.keys()
    assert block["samples_seen"] == 5 * 64
    assert block["train_flops"] == 5 * 64 * block["flops_per_sample"]
    assert block["energy_estimated"] is True  # nothing measurable here: said so
    assert block["energy_kwh_gpu"] == 0 and resumed.hardware().gpu_count == 0


def test_budget_counts_as_training_does_without_loading_data(monkeypatch):
    import robustscale.data as data

    monkeypatch.setattr(data, "load_train_data", lambda *a, **k: pytest.fail("budget loaded a dataset"))
    cfg = load_config("configs/digits.yaml", ["train.loss=trades"])
    out = plan(cfg, gpu="a100", gpus=2)
    step = step_flops("wrn_10_1", image_size=8, loss="trades", steps=cfg.attack.steps)
    steps_per_epoch = -(-(1437 - 200) // 64)
    assert out["optimizer_steps"] == 15 * steps_per_epoch
    assert out["train_flops"] == 15 * steps_per_epoch * 64 * step.train
    assert out["eval_flops"] == 15 * 200 * step.pgd_eval(40)
    assert out["total_flops"] == out["train_flops"] + out["eval_flops"]
    assert out["wall_hours"] == pytest.approx(out["total_flops"] / (2 * 156e12 * 0.35) / 3600)
    assert out["energy_kwh"] == pytest.approx(out["gpu_hours"] * 0.4 * 1.58)
    for key in ("train_flops", "eval_flops", "wall_hours", "energy_kwh", "cost_usd", "co2_kg"):
        assert key in out["assumptions"]
    capped = plan(load_config("configs/digits.yaml", ["train.max_steps=7"]))
    assert capped["optimizer_steps"] == 7 and capped["pgd_evaluations"] == 1


def test_the_library_names_its_parameters_the_cli_its_flags(capsys, assert_one_line):
    cfg = load_config("configs/digits.yaml")
    with pytest.raises(ParameterError, match="^utilization must be in") as err:
        plan(cfg, utilization=2.0)
    assert err.value.params == ("utilization",) and isinstance(err.value, ValueError)
    assert main(["budget", "configs/digits.yaml", "--utilization", "2"]) == 2
    assert assert_one_line(capsys.readouterr().err).startswith("error: --utilization must be in")
    assert main(["budget", "configs/digits.yaml", "--gpus", "0"]) == 2  # typer's own range check
    assert "--gpus" in assert_one_line(capsys.readouterr().err)


def test_budget_measure_times_the_real_training_step(capsys):
    """`budget --measure` times train_step through the benchmark (a second, hand-written step was timed before)."""
    assert main(["budget", "configs/digits.yaml", "train.epochs=1", "--measure", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    measured = out["measured"]
    assert measured["device"].startswith("cpu") and measured["steps_timed"] >= 2 and measured["tflops"] > 0
    assert measured["flops"] == measured["batch_size"] * out["flops_per_sample"]["train"]
    assert out["tflops_per_gpu"] == measured["tflops"] and out["gpu"] is None and out["energy_kwh"] is None
    assert "the real training step" in out["assumptions"]["wall_hours"]


def test_budget_cli_prints_every_number_with_its_assumption(capsys):
    assert main(["budget", "configs/gowal2020_wrn70_16.yaml", "--gpu", "h100", "--gpus", "4"]) == 0
    text = capsys.readouterr().out
    for word in ("total FLOPs", "GPU-hours", "energy kWh", "cost $", "CO2 kg", "utilisation 0.35", "PUE 1.58",
                 "566.3"):
        assert word in text
    assert main(["budget", "configs/gowal2020_wrn70_16.yaml", "--gpu", "h100", "--gpus", "4", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["optimizer_steps"] == 400 * 48 and out["gpus"] == 4
    assert out["co2_kg"] == pytest.approx(out["energy_kwh"] * 0.5663)
    assert main(["budget", "configs/digits.yaml", "--gpu", "tpu9000"]) == 2
