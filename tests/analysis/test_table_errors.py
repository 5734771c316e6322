"""Tables the analysis cannot use are one line and exit 2 (items 12 and 13 of issue 20): infinities in FLOPs or
accuracy, words in the predictor's numeric features, a report written over its own JSON."""

import json

import numpy as np
import pytest

from robustscale.cli import main

from .test_workflow import synthetic_table


def _csv(tmp_path, column=None, value=None, row=3, n=40):
    table = synthetic_table(n)
    if column is not None:
        table[column] = table[column].astype(object)
        table.loc[row, column] = value
    path = tmp_path / "t.csv"
    table.to_csv(path, index=False)
    return path


def _error(capsys, assert_one_line, *argv):
    assert main(list(argv)) == 2
    captured = capsys.readouterr()
    return assert_one_line(captured.err)


@pytest.mark.parametrize("column", ["train_flops", "autoattack_acc"])
@pytest.mark.parametrize("value", [np.inf, -np.inf, "1e400", "inf"])
def test_an_infinity_in_flops_or_accuracy_is_one_line(tmp_path, capsys, assert_one_line, column, value):
    """`fit` raised ValueError("x_flops must be finite and positive") from deep inside the law."""
    path = _csv(tmp_path, column, value)
    for command in (["fit", str(path), "--bootstrap", "0"], ["extrapolate", str(path), "--target", "0.9"]):
        message = _error(capsys, assert_one_line, *command)
        assert column in message and "infinite" in message and "run003" in message


@pytest.mark.parametrize("column, value", [("params", "abc"), ("attack_steps", "ten"), ("epochs", np.inf)])
def test_a_bad_numeric_feature_in_predict_is_one_line(tmp_path, capsys, assert_one_line, column, value):
    """`predict` crashed in scikit-learn ("Input X contains NaN") on a non-numeric params column."""
    path = _csv(tmp_path, column, value)
    message = _error(capsys, assert_one_line, "predict", str(path), "--model", "wrn_28_10", "--loss", "at",
                     "--steps", "1", "--ema", "--synthetic", "--activation", "relu", "--epochs", "100")
    assert column in message


@pytest.mark.parametrize("out", ["x.json", "folder", "x"])
def test_report_output_must_be_an_html_file(tmp_path, capsys, assert_one_line, out):
    """`report -o x.json` wrote the HTML over the report's own JSON."""
    path = _csv(tmp_path)
    (tmp_path / "folder").mkdir()
    target = tmp_path / out
    message = _error(capsys, assert_one_line, "report", str(path), "-o", str(target), "--bootstrap", "0")
    assert ".html" in message
    assert not (tmp_path / "x.json").exists() and not (tmp_path / "x").exists()


@pytest.mark.parametrize("command", [["results", "RUNS", "-o", "OUT"], ["synth", "--n", "5", "-o", "OUT"]])
def test_output_that_is_a_folder_is_one_line(tmp_path, capsys, assert_one_line, command):
    runs = tmp_path / "runs" / "r1"
    runs.mkdir(parents=True)
    (runs / "record.json").write_text(json.dumps({"run_id": "r1", "status": "pending"}))
    (tmp_path / "out").mkdir()
    argv = [str(tmp_path / "runs") if a == "RUNS" else str(tmp_path / "out") if a == "OUT" else a for a in command]
    message = _error(capsys, assert_one_line, *argv)
    assert "is a folder" in message


# ------------------------------------------------------------------------------------------------ issue 34, item 7

COMMANDS = [["fit", "T", "--bootstrap", "0"], ["replay", "T", "--budget-frac", "0.5", "--seeds", "1"],
            ["report", "T", "-o", "R", "--bootstrap", "0"], ["plan", "T", "--flops", "1e18", "--bootstrap", "0"],
            ["predict", "T"]]


def _argv(command, table, tmp_path):
    return [str(table) if a == "T" else str(tmp_path / "r.html") if a == "R" else a for a in command]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: c[0])
@pytest.mark.parametrize("suffix, text, words", [
    (".json", "[" * 100_000 + "]" * 100_000, "deeper than 64"),  # RecursionError
    (".json", json.dumps([{"a": [[[[1]]]]}]), "'a' holds a JSON list"),
    (".jsonl", '{"train_flops": 1e15, "autoattack_acc": 0.5}\n[1, 2]\n', "line 2 is a JSON list"),  # pandas TypeError
    (".jsonl", '{"train_flops": 1e15}\n7\n', "line 2 is a number"),
], ids=["deep", "nested-cell", "jsonl-list", "jsonl-number"])
def test_a_json_table_that_is_no_table_is_one_line(tmp_path, capsys, assert_one_line, command, suffix, text, words):
    path = tmp_path / f"t{suffix}"
    path.write_text(text)
    message = _error(capsys, assert_one_line, *_argv(command, path, tmp_path))
    assert words in message and str(path) in message


def test_an_infinite_adaptive_round_is_one_line(tmp_path, capsys, assert_one_line):
    """`report` raised OverflowError (int(inf)) on an adaptive table whose round column held inf."""
    table = synthetic_table(40)
    table["adaptive_round"] = [1.0 + i % 3 for i in range(40)]
    table.loc[5, "adaptive_round"] = np.inf
    path = tmp_path / "t.csv"
    table.to_csv(path, index=False)
    from robustscale.analysis.adaptive_law import rounds_of_table
    from robustscale.analysis import read_table
    from robustscale.errors import UserError

    with pytest.raises(UserError, match="adaptive_round' holds inf"):
        rounds_of_table(read_table(path), bootstrap=0)
    message = _error(capsys, assert_one_line, "report", str(path), "-o", str(tmp_path / "r.html"), "--bootstrap", "0")
    assert "adaptive_round" in message and "inf" in message


def test_flops_summing_beyond_a_float_is_one_line(tmp_path, capsys, assert_one_line):
    """`replay` on FLOPs near 1e308 (each finite, the sum not) spent an infinite budget whatever --budget-frac said
    and printed a null compute share."""
    table = synthetic_table(40)
    table["train_flops"] = table["train_flops"] / table["train_flops"].max() * 1e308
    path = tmp_path / "t.csv"
    table.to_csv(path, index=False)
    message = _error(capsys, assert_one_line, "replay", str(path), "--budget-frac", "0.2", "--seeds", "1")
    assert "train_flops" in message and "sums to more than a float" in message
