"""The run record: stable ids, atomic round trips, and a check that tells an intact record from a broken one."""

import json

from robustscale.config import config_to_dict, load_config
from robustscale.store.record import (SCHEMA_VERSION, Status, failed_record, new_record, read_record, record_problems,
                                      run_id, write_record)


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
    assert record["schema"] == SCHEMA_VERSION and record["status"] == Status.pending.value
    assert set(record["versions"]) >= {"robustscale", "torch", "timm"}
    write_record(tmp_path, record)
    assert read_record(tmp_path) == record
    assert record_problems(read_record(tmp_path)) == []
    assert [p.name for p in tmp_path.iterdir()] == ["record.json"]  # no temp file left behind


def test_unreadable_or_absent_records_read_as_none(tmp_path):
    assert read_record(tmp_path) is None
    (tmp_path / "record.json").write_text('{"status": "do')  # half a file
    assert read_record(tmp_path) is None


def test_failed_record_keeps_what_training_wrote_and_one_line_reason(digits_yaml):
    previous = new_record(_config(digits_yaml), Status.running)
    previous["epochs_run"] = 3
    record = failed_record(previous["config"], "DataError: no file\n  at line 2", previous)
    assert record["status"] == "failed" and record["epochs_run"] == 3
    assert record["reason"] == "DataError: no file at line 2"
    assert record_problems(record) == []


def test_problems_are_named(digits_yaml):
    record = new_record(_config(digits_yaml))
    assert record_problems([]) == ["not a JSON object"]
    broken = dict(record, status="finished", run_id="x")
    del broken["metrics"]
    problems = record_problems(json.loads(json.dumps(broken)))
    assert "missing key 'metrics'" in problems
    assert "unknown status 'finished'" in problems
    assert "run_id does not match the config" in problems
    assert record_problems(dict(record, status="done")) == ["done without metrics"]
