"""The results table: one typed row per run folder, failed runs with their reason, usable from the CLI."""

import json

import pandas as pd
import pytest

from robustscale.cli import main
from robustscale.config import config_to_dict, load_config
from robustscale.errors import UserError
from robustscale.store.atomic import write_json
from robustscale.store.record import RunRecord, run_id
from robustscale.store.results import COLUMNS, EXTRA_COLUMNS, results_table

ACCOUNTING = {"train_flops": 2.0e12, "paper_convention_flops": 3.0e12, "attack_flops": 1.5e12, "eval_flops": 1.0e10,
              "gpu_hours": 0.5, "energy_kwh": 0.2, "energy_estimated": False, "cost_usd": 0.024, "co2_kg": 0.11,
              "mean_power_w": 250.0}


def _write(runs, digits_yaml, status, *overrides, **fields):
    """A record.json as training writes it, with ``fields`` (schema 2: ``accounting`` holds wall_s and samples_seen)."""
    config = config_to_dict(load_config(digits_yaml, list(overrides)))
    record = RunRecord.new(config).to_dict()
    record.update(status=status, **fields)
    write_json(runs / run_id(config) / "record.json", record)
    return run_id(config)


@pytest.fixture
def runs(tmp_path, digits_yaml):
    runs = tmp_path / "runs"
    ids = {
        "done": _write(runs, digits_yaml, "done", "train.loss=trades", "data.synthetic.path=syn.npz",
                       "data.synthetic.fraction=0.5", "train.ema=true", params=77850,
                       metrics={"clean_acc": 0.9, "pgd40_acc": 0.6, "autoattack_acc": 0.55, "best_epoch": 3},
                       accounting={**ACCOUNTING, "wall_s": 12.5, "samples_seen": 640}),
        "failed": _write(runs, digits_yaml, "failed", "train.seed=1", reason="DataError: synthetic file missing"),
        "running": _write(runs, digits_yaml, "running", "train.seed=2"),
    }
    (runs / ".submitit" / "x").mkdir(parents=True)  # executor files are not runs
    (runs / ".submitit" / "x" / "record.json").write_text("{}")
    return runs, ids


def test_one_typed_row_per_run(runs):
    runs, ids = runs
    table = results_table(runs)
    assert list(table.columns) == [*COLUMNS, *EXTRA_COLUMNS]
    assert sorted(table["run_id"]) == sorted(ids.values())
    done = table.set_index("run_id").loc[ids["done"]]
    assert (done["status"], done["dataset"], done["model"], done["loss"], done["activation"]) == \
        ("done", "digits", "wrn_10_1", "trades", "relu")
    assert done["beta"] == 6.0 and done["attack_steps"] == 5 and done["epochs"] == 15 and done["seed"] == 0
    assert done["ema"] and done["synthetic"] and done["synthetic_fraction"] == 0.5
    assert (done["clean_acc"], done["pgd40_acc"], done["autoattack_acc"]) == (0.9, 0.6, 0.55)
    for key, value in ACCOUNTING.items():
        assert done["train_flops_paper" if key == "paper_convention_flops" else key] == value, key
    assert "paper_convention_flops" not in table  # the record's convention has one column: train_flops_paper
    assert done["params"] == 77850 and done["wall_s"] == 12.5 and done["samples_seen"] == 640
    assert table["ema"].dtype == "boolean" and table["synthetic"].dtype == "boolean"
    assert table["energy_estimated"].dtype == "boolean" and table["params"].dtype == "Int64"


def test_failed_and_interrupted_runs_say_why(runs):
    runs, ids = runs
    table = results_table(runs).set_index("run_id")
    assert table.loc[ids["failed"], "status"] == "failed"
    assert table.loc[ids["failed"], "reason"] == "DataError: synthetic file missing"
    assert pd.isna(table.loc[ids["failed"], "beta"])  # AT has no beta
    assert not table.loc[ids["failed"], "synthetic"] and table.loc[ids["failed"], "synthetic_fraction"] == 0.0
    assert "interrupted" in table.loc[ids["running"], "reason"]


def test_bad_input_is_one_line(tmp_path, assert_one_line):
    for folder in (tmp_path / "missing", tmp_path):
        with pytest.raises(UserError) as err:
            results_table(folder)
        assert str(folder) in assert_one_line(err.value)


def test_cli_formats(runs, tmp_path, capsys):
    runs, ids = runs
    assert main(["results", str(runs), "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {r["run_id"] for r in rows} == set(ids.values())
    assert main(["results", str(runs), "-o", str(tmp_path / "t.parquet")]) == 0
    assert main(["results", str(runs), "-o", str(tmp_path / "t.csv")]) == 0
    parquet, csv = pd.read_parquet(tmp_path / "t.parquet"), pd.read_csv(tmp_path / "t.csv")
    assert len(parquet) == len(csv) == 3 and list(csv.columns) == [*COLUMNS, *EXTRA_COLUMNS]
    assert parquet["synthetic"].dtype == "boolean"
    capsys.readouterr()
    assert main(["results", str(runs)]) == 0
    out = capsys.readouterr().out
    assert ids["done"] in out and "DataError" in out and "1 done" in out
    assert main(["results", str(runs), "--format", "parquet"]) == 2
    assert "-o" in capsys.readouterr().err


# ------------------------------------------------------------------ damaged records (item 12 of issue 20)

_DAMAGE = {
    "metrics_list": lambda r: r.update(metrics=[0.5]),
    "config_text": lambda r: r.update(config="wrn"),
    "train_section_list": lambda r: r["config"].update(train=[1]),
    "params_text": lambda r: r.update(params="abc"),
    "params_bool": lambda r: r.update(params=True),
    "acc_text": lambda r: r["metrics"].update(clean_acc="high"),
    "flops_inf": lambda r: r["accounting"].update(train_flops=float("inf")),
    "epochs_float": lambda r: r["config"]["train"].update(epochs=1.5),
    "seed_huge": lambda r: r["config"]["train"].update(seed=10**30),
    "status_number": lambda r: r.update(status=3),
    "ema_text": lambda r: r["config"]["train"].update(ema="yes"),
    "model_dict": lambda r: r["config"]["model"].update(name={"a": 1}),
}


def _good(runs, digits_yaml, seed):
    return _write(runs, digits_yaml, "done", f"train.seed={seed}", params=77850,
                  metrics={"clean_acc": 0.9, "pgd40_acc": 0.6, "autoattack_acc": 0.5 + seed / 100, "best_epoch": 3},
                  accounting={**ACCOUNTING, "train_flops": 1e12 * (seed + 1)})


@pytest.mark.parametrize("damage", sorted(_DAMAGE))
def test_a_record_with_wrong_field_types_is_skipped_with_a_warning(tmp_path, digits_yaml, damage, caplog):
    """One bad record.json broke `results`, `fit` and `report` for the whole folder."""
    runs = tmp_path / "runs"
    good = [_good(runs, digits_yaml, seed) for seed in range(3)]
    bad = _good(runs, digits_yaml, 9)
    record = json.loads((runs / bad / "record.json").read_text())
    _DAMAGE[damage](record)
    (runs / bad / "record.json").write_text(json.dumps(record))
    table = results_table(runs)
    assert sorted(table["run_id"]) == sorted(good)
    assert bad in caplog.text and "skipped" in caplog.text


@pytest.mark.parametrize("text", ["not json", "[1, 2]", "[" * 100_000 + "]" * 100_000, '{"status": "done"'])
def test_an_unreadable_record_is_skipped_with_a_warning(tmp_path, digits_yaml, text, caplog):
    runs = tmp_path / "runs"
    good = _good(runs, digits_yaml, 0)
    (runs / "broken").mkdir()
    (runs / "broken" / "record.json").write_text(text)
    assert list(results_table(runs)["run_id"]) == [good]
    assert "broken" in caplog.text


def test_fit_and_results_on_a_folder_with_a_bad_record(tmp_path, digits_yaml, capsys):
    runs = tmp_path / "runs"
    for seed in range(4):
        _good(runs, digits_yaml, seed)
    bad = _good(runs, digits_yaml, 9)
    (runs / bad / "record.json").write_text(json.dumps({**json.loads((runs / bad / "record.json").read_text()),
                                                         "metrics": "oops"}))
    assert main(["results", str(runs), "--format", "json"]) == 0
    assert len(json.loads(capsys.readouterr().out)) == 4
    assert main(["fit", str(runs), "--metric", "autoattack_acc", "--bootstrap", "0", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["n_runs"] == 4


def test_a_folder_of_only_damaged_records_is_one_line(tmp_path, assert_one_line):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "record.json").write_text("{")
    with pytest.raises(UserError) as err:
        results_table(tmp_path)
    assert "damaged" in assert_one_line(err.value)


def test_early_stops_in_the_table_and_the_cli(tmp_path, digits_yaml, capsys):
    """A stopped run says why and when (stop_reason, stop_epoch); a warned collapse has only collapse_epoch; the
    printed table shows the two columns and counts the stops only when some run stopped."""
    runs = tmp_path / "runs"
    alarm = {"reason": "catastrophic_overfitting", "epoch": 4, "best_epoch": 3, "val_pgd_acc": 0.01}
    stopped = _write(runs, digits_yaml, "done", "train.seed=1", stopped_early=alarm, epochs_run=4)
    warned = _write(runs, digits_yaml, "done", "train.seed=2", "train.on_collapse=warn", alarms=[alarm])
    plain = _write(runs, digits_yaml, "done", "train.seed=3")
    table = results_table(runs).set_index("run_id")
    assert (table.loc[stopped, "stop_reason"], table.loc[stopped, "stop_epoch"]) == ("catastrophic_overfitting", 4)
    assert table.loc[stopped, "collapse_epoch"] == 4 and table.loc[warned, "collapse_epoch"] == 4
    assert pd.isna(table.loc[warned, "stop_reason"]) and pd.isna(table.loc[warned, "stop_epoch"])
    assert table.loc[plain, ["stop_reason", "stop_epoch", "collapse_epoch"]].isna().all()
    assert table["stop_epoch"].dtype == "Int64"
    assert main(["results", str(runs)]) == 0
    out = capsys.readouterr().out
    assert "stop_reason" in out and "catastrophic_overfitti" in out and "stopped early: 1" in out
    assert main(["results", str(runs / plain)]) == 0
    out = capsys.readouterr().out
    assert "stop_reason" not in out and "stopped early" not in out
