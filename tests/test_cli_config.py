"""``robustscale config`` and the CLI's error contract: user errors are one line on stderr and exit status 2."""

import json
import os
import subprocess
import sys

import pytest
import yaml

import robustscale
from robustscale.cli import main


def test_config_prints_the_resolved_yaml(digits_yaml, capsys):
    assert main(["config", str(digits_yaml), "attack.eps=8/255", "train.epochs=3"]) == 0
    out = capsys.readouterr().out
    assert "eps: 0.0313725" in out
    printed = yaml.safe_load(out)
    assert printed["attack"]["eps"] == 8 / 255
    assert printed["train"]["epochs"] == 3
    assert printed["model"]["name"] == "wrn_10_1"  # from the file
    assert printed["data"]["image_size"] == 8  # defaults filled in


def test_config_json(digits_yaml, capsys):
    assert main(["config", str(digits_yaml), "--json", "attack.eps=8/255"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["attack"]["eps"] == pytest.approx(0.0313725, abs=1e-7)
    assert set(printed) == {"data", "model", "attack", "train", "eval", "accounting", "output"}


def test_unknown_key_exits_2_naming_it(digits_yaml, capsys, assert_one_line):
    assert main(["config", str(digits_yaml), "no.such.key=1"]) == 2
    captured = capsys.readouterr()
    assert "no.such.key" in assert_one_line(captured.err)
    assert captured.out == ""


@pytest.mark.parametrize("override,key", [("attack.eps=-1", "attack.eps"), ("train.epochs=0", "train.epochs"),
                                          ("data.synthetic.fraction=1.5", "data.synthetic.fraction")])
def test_out_of_range_value_exits_2(digits_yaml, capsys, override, key, assert_one_line):
    assert main(["config", str(digits_yaml), override]) == 2
    assert key in assert_one_line(capsys.readouterr().err)


def test_missing_file_exits_2(tmp_path, capsys, assert_one_line):
    assert main(["config", str(tmp_path / "missing.yaml")]) == 2
    assert "missing.yaml" in assert_one_line(capsys.readouterr().err)


def test_malformed_file_exits_2(tmp_path, capsys, assert_one_line):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: {epochs: [\n")
    assert main(["config", str(bad)]) == 2
    assert "bad.yaml" in assert_one_line(capsys.readouterr().err)


def test_version(capsys):
    assert main(["--version"]) == 0
    assert robustscale.__version__ in capsys.readouterr().out


def _run(*args):
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return subprocess.run([sys.executable, "-m", "robustscale", *args], capture_output=True, text=True, env=env,
                          timeout=120)


def test_subprocess_user_error_exits_2_without_traceback(digits_yaml):
    """The real entry point (python -m robustscale), not just main(): exit status 2, one error line, no traceback."""
    proc = _run("config", str(digits_yaml), "no.such.key=1")
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(errors) == 1 and errors[0].startswith("error:") and "no.such.key" in errors[0]
    assert proc.stdout == ""
