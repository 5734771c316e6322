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
