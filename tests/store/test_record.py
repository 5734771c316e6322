"""The run record: stable ids, atomic round trips, each fact stated once, old records migrated on read, and a check
that tells an intact record from a broken one."""

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from robustscale.config import config_to_dict, load_config
from robustscale.enums import StopReason
from robustscale.store.record import (SCHEMA_VERSION, Alarm, RecordError, RunRecord, Status, failed_record,
                                      new_record, read_record, recipe_id, record_problems, run_id, write_record)
from robustscale.store.results import results_table

# written by the landed code (commit bb9404e, schema 1): `train(load_config("configs/digits.yaml", ["train.epochs=2",
# "data.val_size=50", "eval.pgd_steps=2", "attack.steps=1", "eval.autoattack_n=20", "eval.batch_size=20"]), ...)`
SCHEMA1 = Path(__file__).parent / "data" / "record-schema1.json"


def _config(digits_yaml, *overrides):
    return config_to_dict(load_config(digits_yaml, list(overrides)))


def test_run_id_is_a_function_of_what_is_trained(digits_yaml):
    base = _config(digits_yaml)
    assert run_id(base) == run_id(_config(digits_yaml))
    assert run_id(base) == run_id(_config(digits_yaml, "output.dir=elsewhere"))  # where it is written: same run
    assert run_id(base) != run_id(_config(digits_yaml, "train.seed=1"))
    assert run_id(base) != run_id(_config(digits_yaml, "train.ema=true"))
    assert run_id(base).startswith("digits-wrn_10_1-at5-s0-")


def test_round_trip_and_schema(tmp_path, digits_yaml):
    record = new_record(_config(digits_yaml))
    assert record.schema == SCHEMA_VERSION == 2 and record.status is Status.pending
    assert set(record.versions) >= {"robustscale", "torch", "timm"} and "unknown" not in record.versions.values()
    write_record(tmp_path, record)
    assert read_record(tmp_path) == record
    assert RunRecord.from_dict(json.loads(json.dumps(record.to_dict()))) == record
    assert record_problems(read_record(tmp_path)) == []
    assert [p.name for p in tmp_path.iterdir()] == ["record.json"]  # no temp file left behind


def test_each_fact_is_stated_once(digits_yaml):
    """Schema 1 wrote samples_seen and wall_s at the top and in the accounting, and hardware twice."""
    text = new_record(_config(digits_yaml)).to_dict()
    assert not set(text) & set(text["accounting"])
    assert {"samples_seen", "wall_s"} <= set(text["accounting"]) and "hardware" in text


def test_unreadable_or_absent_records_read_as_none(tmp_path):
    assert read_record(tmp_path) is None
    (tmp_path / "record.json").write_text('{"status": "do')  # half a file
    assert read_record(tmp_path) is None
    (tmp_path / "record.json").write_text('{"status": "finished"}')  # not a record's status
    assert read_record(tmp_path) is None
    with pytest.raises(RecordError, match="'metrics' is a list"):
        RunRecord.from_dict({"run_id": "r", "config": {}, "metrics": [0.5]})


def test_failed_record_keeps_what_training_wrote_and_one_line_reason(digits_yaml):
    previous = new_record(_config(digits_yaml), Status.running)
    previous.epochs_run = 3
    record = failed_record(previous.config, "DataError: no file\n  at line 2", previous)
    assert record.status is Status.failed and record.epochs_run == 3
    assert record.reason == "DataError: no file at line 2"
    assert record_problems(record) == []


def test_problems_are_named(digits_yaml):
    record = new_record(_config(digits_yaml)).to_dict()
    assert record_problems([]) == ["not a JSON object"]
    broken = dict(record, status="finished", run_id="x", wall_s=1.0)
    del broken["metrics"]
    problems = record_problems(json.loads(json.dumps(broken)))
    assert "missing key 'metrics'" in problems
    assert "unknown status 'finished'" in problems
    assert "run_id does not match the config" in problems
    assert "'wall_s' both at the top level and in accounting" in problems
    assert record_problems(dict(record, status="done")) == ["done without metrics"]


def test_a_record_written_by_the_landed_code_still_reads(tmp_path):
    """Schema 1 migrates on read: samples_seen and wall_s into the accounting, the hardware once, on top."""
    old = json.loads(SCHEMA1.read_text())
    assert old["schema"] == 1 and old["samples_seen"] == old["accounting"]["samples_seen"]
    record = RunRecord.from_dict(old)
    assert record.schema == 2 and record.status is Status.done and record.run_id == old["run_id"]
    assert record.accounting.samples_seen == old["samples_seen"] and record.accounting.wall_s == old["wall_s"]
    assert record.accounting.train_flops == old["accounting"]["train_flops"]
    assert record.metrics.autoattack_acc == old["metrics"]["autoattack_acc"]
    assert record.evaluations == old["evaluations"] and record.config == old["config"]
    assert record.hardware.cpu == old["hardware"]["cpu"]
    assert record_problems(record) == []
    assert not set(record.to_dict()) & set(record.to_dict()["accounting"])


def test_the_migration_keeps_the_gpus_the_run_used(tmp_path):
    """Schema 1's two hardware blocks disagreed on a GPU node: the top level counted the GPUs visible (8), the
    accounting's the GPUs the run used (1), on which gpu_hours was computed. The used ones are kept."""
    old = json.loads(SCHEMA1.read_text())
    old["hardware"].update(gpu_count=8, gpus=["NVIDIA H100 80GB HBM3"] * 8, gpu_name="NVIDIA H100 80GB HBM3")
    old["accounting"]["hardware"].update(gpu_count=1, gpus=["NVIDIA H100 80GB HBM3"], gpu_name="NVIDIA H100 80GB HBM3")
    hardware = RunRecord.from_dict(old).hardware
    assert (hardware.gpu_count, hardware.gpus) == (1, ["NVIDIA H100 80GB HBM3"])


def test_old_and_new_records_give_the_same_table_row(tmp_path):
    """The results table reads an old record as it did: every column the same."""
    old_dir, new_dir = tmp_path / "old" / "run", tmp_path / "new" / "run"
    old_dir.mkdir(parents=True)
    new_dir.mkdir(parents=True)
    shutil.copy(SCHEMA1, old_dir / "record.json")
    write_record(new_dir, read_record(old_dir))
    old_row, new_row = (results_table(d.parent).drop(columns=["run_dir", "updated"]) for d in (old_dir, new_dir))
    pd.testing.assert_frame_equal(old_row, new_row)
    row = old_row.iloc[0]
    old = json.loads(SCHEMA1.read_text())
    assert row["wall_s"] == old["wall_s"] and row["samples_seen"] == old["samples_seen"]
    assert row["train_flops"] == old["accounting"]["train_flops"]


# configs/digits.yaml as it was before issue 28 gave it the paper's early-stopping attack and clean forward (a
# different experiment, so a new id): that recipe keeps the id it has had since scheme 1
PRE_ISSUE_28 = ("train.at_clean_forward=false", "eval.pgd_step_size_factor=2.5", "eval.pgd_step_divisor=pgd_steps")


def test_run_ids_survive_new_config_keys_at_their_defaults(digits_yaml):
    """A key added after run-id scheme 1 (here ``data.synthetic.n``) changes no existing id while it keeps its default,
    so a sweep resumed after an upgrade finds its runs; set, it makes a new run."""
    base = _config(digits_yaml, *PRE_ISSUE_28)
    assert run_id(base) == "digits-wrn_10_1-at5-s0-c53a0fb878"  # the id this config has had since scheme 1
    with_n = _config(digits_yaml, "data.synthetic.path=s.npz", "data.synthetic.n=100")
    assert run_id(with_n) != run_id(_config(digits_yaml, "data.synthetic.path=s.npz"))
    assert recipe_id(with_n) != recipe_id(_config(digits_yaml, "data.synthetic.path=s.npz"))
    unknown_section = {**base, "ddp": {"nodes": 2}}  # a section this version does not know yet is identity
    assert run_id(unknown_section) != run_id(base)


def test_the_stop_rules_keys_join_the_id_only_when_set(digits_yaml):
    """train.on_collapse (default stop), its thresholds and train.patience came after scheme 1: at their defaults the
    id is the one this config always had; set away from them, another run."""
    base = _config(digits_yaml, *PRE_ISSUE_28)
    assert run_id(base) == "digits-wrn_10_1-at5-s0-c53a0fb878"
    assert base["train"]["on_collapse"] == "stop" and base["train"]["patience"] is None
    for override in ("train.on_collapse=warn", "train.on_collapse=ignore", "train.collapse_drop=0.4",
                     "train.collapse_train_drop=0.2", "train.patience=5"):
        assert run_id(_config(digits_yaml, *PRE_ISSUE_28, override)) != run_id(base), override
    assert run_id(_config(digits_yaml, *PRE_ISSUE_28, "train.on_collapse=stop", "train.collapse_drop=0.5")) == \
        run_id(base)


def test_an_early_stop_round_trips_and_old_records_have_none(tmp_path, digits_yaml):
    record = new_record(_config(digits_yaml))
    record.status, record.epochs_run = Status.done, 6
    record.stopped_early = Alarm(StopReason.catastrophic_overfitting, 6, best_epoch=5, val_pgd_acc=0.02,
                                 best_val_pgd_acc=0.6, train_adv_acc=0.9, best_train_adv_acc=0.7)
    record.alarms = [Alarm(StopReason.catastrophic_overfitting, 3, best_epoch=2)]
    write_record(tmp_path, record)
    raw = json.loads((tmp_path / "record.json").read_text())
    assert raw["stopped_early"]["reason"] == "catastrophic_overfitting" and raw["stopped_early"]["epoch"] == 6
    again = read_record(tmp_path)
    assert again.stopped_early == record.stopped_early and again.alarms == record.alarms
    old = RunRecord.from_dict(json.loads(SCHEMA1.read_text()))
    assert old.stopped_early is None and old.alarms == []
    with pytest.raises(RecordError, match="reason"):
        RunRecord.from_dict(dict(raw, stopped_early={"reason": "tired", "epoch": 2}))
    with pytest.raises(RecordError, match="'alarms' is a dict"):
        RunRecord.from_dict(dict(raw, alarms={"reason": "no_improvement"}))
