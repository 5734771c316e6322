"""Stops in real training runs on digits: configs/collapse.yaml collapses and ``stop`` ends it at the detection with
the best checkpoint evaluated, ``warn`` trains on, the multi-step twin raises nothing, a stop survives a resume, and
``train.patience`` stops a run that no longer improves."""

import json
import logging
import shutil

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from robustscale.enums import Status, StopReason
from robustscale.store.results import results_table
from robustscale.training import load_config, train

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("test_early_stop")]  # module fixtures built once (conftest.py)

# AutoAttack's first attack (APGD-CE) on a few points: the final evaluation must run on the best checkpoint, not be
# precise (the ensemble is tests/attacks'; standard's four took 9.8 s of a 28 s run here, APGD-CE alone 0.6 s). PGD-10
# validation: on this recipe at seed 0 it alarms at the same epoch (15) with the same best epoch (12) as the recipe's
# PGD-40, and its twin raises nothing, as with PGD-40 (measured 2026-12-07), for half the CPU time of a run
FAST = ["eval.autoattack_n=20", "eval.autoattack_attacks=[apgd-ce]", "eval.batch_size=100", "eval.pgd_steps=10"]
STEPS = 20  # optimiser steps an epoch: ceil((1437 - 200 validation images) / 64)


def _collapse(*overrides):
    return load_config("configs/collapse.yaml", [*FAST, *overrides])


def _rows(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def stopped(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("stop") / "run"
    return run_dir, train(_collapse(), run_dir, progress=False)


@pytest.fixture(scope="module")
def warned(tmp_path_factory):
    """``warn`` trains exactly as ``ignore`` does (the detector only logs): the run a stop is compared with."""
    run_dir = tmp_path_factory.mktemp("warn") / "run"
    return run_dir, train(_collapse("train.on_collapse=warn"), run_dir, progress=False)


def test_stop_ends_the_collapsing_run_and_evaluates_its_best_checkpoint(stopped):
    run_dir, record = stopped
    cfg = _collapse()
    stop = record.stopped_early
    assert record.status is Status.done and record.reason is None
    assert stop is not None and stop.reason is StopReason.catastrophic_overfitting
    assert stop.epoch == record.epochs_run < cfg.train.epochs
    assert stop.val_pgd_acc <= (1 - cfg.train.collapse_drop) * stop.best_val_pgd_acc
    assert stop.train_adv_acc >= (1 - cfg.train.collapse_train_drop) * stop.best_train_adv_acc
    assert record.metrics.best_epoch < stop.epoch and record.metrics.pgd40_acc == stop.best_val_pgd_acc
    # evaluated as a finished run is: AutoAttack on the best checkpoint, clean accuracy, the adversarial loss
    assert record.metrics.autoattack_acc is not None and record.evaluations["autoattack"]["n"] == 20
    assert record.evaluations["autoattack"]["attacks"] == ["apgd-ce"]
    assert record.metrics.clean_acc is not None and record.metrics.adv_loss is not None
    rows = _rows(run_dir)
    assert [r["epoch"] for r in rows] == list(range(1, stop.epoch + 1))
    assert rows[-1]["alarm"] == "catastrophic_overfitting" and rows[-1]["stop"] is True
    assert record.accounting.samples_seen == stop.epoch * STEPS * 64  # no step after the stop
    saved = json.loads((run_dir / "record.json").read_text())["stopped_early"]
    assert saved["reason"] == "catastrophic_overfitting" and saved["epoch"] == stop.epoch


def test_stop_spends_less_and_keeps_the_same_best_checkpoint_as_training_on(stopped, warned):
    (stop_dir, stop), (warn_dir, warn) = stopped, warned
    planned = _collapse().train.epochs
    assert warn.epochs_run == planned and warn.stopped_early is None
    assert stop.accounting.train_flops * planned == warn.accounting.train_flops * stop.epochs_run
    assert stop.accounting.train_flops < warn.accounting.train_flops
    assert stop.accounting.eval_flops < warn.accounting.eval_flops  # fewer validations too
    # the collapsed run never gets back above its best from before the collapse: the same checkpoint, the same score
    assert warn.metrics.best_epoch == stop.metrics.best_epoch
    a, b = load_file(stop_dir / "best.safetensors"), load_file(warn_dir / "best.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert warn.metrics.autoattack_acc == stop.metrics.autoattack_acc


def test_warn_logs_records_and_trains_on(warned, stopped, caplog):
    warn_dir, warn = warned
    assert warn.status is Status.done and warn.alarms
    first = warn.alarms[0]
    assert first.reason is StopReason.catastrophic_overfitting and first.epoch == stopped[1].stopped_early.epoch
    assert first == stopped[1].stopped_early  # the same alarm, from the same trajectory
    rows = _rows(warn_dir)
    assert [r["epoch"] for r in rows if r.get("alarm")] == [a.epoch for a in warn.alarms]
    assert not any(r.get("stop") for r in rows)
    table = results_table(warn_dir.parent).iloc[0]
    assert table["collapse_epoch"] == first.epoch and pd.isna(table["stop_reason"])


def test_the_multi_step_twin_trains_all_its_epochs_without_an_alarm(tmp_path, caplog):
    """The same recipe with a 2-step attack (from a random start, step 2.5 eps / 2): no collapse, no alarm."""
    cfg = _collapse("attack.steps=2", "attack.random_start=true", "attack.step_size_factor=2.5",
                    "eval.autoattack=none")
    with caplog.at_level(logging.WARNING, logger="robustscale"):
        record = train(cfg, tmp_path / "run", progress=False)
    assert record.epochs_run == cfg.train.epochs and record.stopped_early is None and record.alarms == []
    assert not any(r.get("alarm") for r in _rows(tmp_path / "run"))
    assert "catastrophic" not in caplog.text


def test_a_stopped_run_resumed_trains_nothing_more(stopped, tmp_path):
    """Its checkpoint holds the stop: resuming it (a kill during the final evaluation, say) goes straight to the
    evaluation, with the same record."""
    stop_dir, straight = stopped
    run_dir = tmp_path / "run"
    shutil.copytree(stop_dir, run_dir)
    again = train(_collapse(), run_dir, resume=True, progress=False)
    assert again.stopped_early == straight.stopped_early and again.epochs_run == straight.epochs_run
    assert again.accounting.samples_seen == straight.accounting.samples_seen
    assert again.accounting.train_flops == straight.accounting.train_flops
    assert again.metrics.autoattack_acc == straight.metrics.autoattack_acc
    assert len(_rows(run_dir)) == straight.epochs_run


def test_the_stop_rules_state_survives_a_resume(tiny_cfg, tmp_path):
    """Killed between the first validation without improvement and the second (train.patience=2) and resumed, a run
    stops where the uninterrupted one does, with the same alarm and weights: the count is in the checkpoint (lost,
    the resumed run would stop a validation later). Patience on the tiny recipe, so that the test is cheap; a
    collapse's state is the same dict (test_collapse.py round-trips it)."""
    rules = ["train.epochs=6", "train.patience=2", "train.on_collapse=ignore", "train.lr=1e-5",
             "train.schedule=constant"]
    straight = train(tiny_cfg(*rules), tmp_path / "a", progress=False)
    stop = straight.stopped_early
    assert stop is not None and stop.validations_since_best == 2, "no two validations without improvement"
    first = train(tiny_cfg(*rules, f"train.max_steps={21 * (stop.epoch - 1)}"), tmp_path / "b", progress=False)
    assert first.stopped_early is None and first.epochs_run == stop.epoch - 1 > first.metrics.best_epoch
    resumed = train(tiny_cfg(*rules), tmp_path / "b", resume=True, progress=False)
    assert resumed.stopped_early == stop and resumed.epochs_run == straight.epochs_run
    assert resumed.accounting.train_flops == straight.accounting.train_flops
    a, b = load_file(tmp_path / "a" / "last.safetensors"), load_file(tmp_path / "b" / "last.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_patience_stops_a_run_that_no_longer_improves(tiny_cfg, tmp_path):
    cfg = tiny_cfg("train.epochs=8", "train.patience=1", "train.on_collapse=ignore")
    record = train(cfg, tmp_path / "run", progress=False)
    stop = record.stopped_early
    assert stop is not None and stop.reason is StopReason.no_improvement, "every validation improved: no test"
    assert stop.epoch == record.metrics.best_epoch + 1 == record.epochs_run < 8
    assert stop.validations_since_best == 1 and record.metrics.autoattack_acc is None  # tiny_cfg skips AutoAttack
