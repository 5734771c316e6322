"""Every usage error of the command line is one line on stderr and exit status 2, never click's traceback.

Recent typer (0.29 here) vendors its own click, so ``isinstance(err, click.ClickException)`` never matched and every
usage error (an unknown option, a missing argument, a bad value, an unknown command, an out-of-range option) printed a
38-line traceback and exited 1. These tests also pass under typer 0.12.5 (click 8.1.7) and 0.20.1 (click 8.3.1), the
range pyproject.toml allows.
"""

import os
import subprocess
import sys

import pytest
import typer

from robustscale.cli import main


@pytest.mark.parametrize("argv, words", [
    (["train", "--nosuch"], ["--nosuch"]),  # unknown option
    (["train"], ["config"]),  # missing argument
    (["flops", "wrn_10_1", "--steps", "abc"], ["--steps"]),  # not an integer
    (["nosuchcmd"], ["nosuchcmd"]),  # unknown command
    (["fit", "table.csv", "--bins", "1"], ["--bins"]),  # out of range (min=2)
    (["fit", "table.csv", "--bootstrap", "-1"], ["--bootstrap"]),
    (["eval", "run", "--seed", "1e20"], ["--seed"]),  # not an integer
    (["eval", "run", "--seed", "99999999999999999999"], ["--seed"]),  # beyond the 32-bit seeds numpy takes
    (["synth", "-o", "x.npz", "--seed", "-1"], ["--seed"]),
    (["predict", "t.csv", "--ema", "--no-such-flag"], ["--no-such-flag"]),
    (["sweep", "spec.yaml", "--workers", "two"], ["--workers"]),
    (["results"], ["runs_dir"]),
    # issue 34 item 8: ranges checked before any work (a MemoryError, an OverflowError or a numpy traceback before)
    (["replay", "t.csv", "--first-seed", "-1"], ["--first-seed"]),
    (["replay", "t.csv", "--seeds", "0"], ["--seeds"]),
    (["fit", "t.csv", "--bins", "1000000000"], ["--bins"]),
    (["replay", "t.csv", "--bins", "1000000000"], ["--bins"]),
    (["report", "t.csv", "--bins", "1001"], ["--bins"]),
    (["plan", "t.csv", "--seed", "-1"], ["--seed"]),
    (["synth", "-o", "x.npz", "--method", "gmm", "--n", "100000000000"], ["--n"]),
    (["synth", "-o", "x.npz", "--method", "gmm", "--n", str(2**63)], ["--n"]),
    (["synth", "-o", "x.npz", "--n", "0"], ["--n"]),
])
def test_usage_errors_are_one_line_and_exit_2(capsys, assert_one_line, argv, words):
    assert main(argv) == 2
    captured = capsys.readouterr()
    message = assert_one_line(captured.err)
    assert message.startswith("error: ") and "Traceback" not in message
    assert all(w.lower() in message.lower() for w in words), message  # older typer writes argument names upper case
    assert "'robustscale " in message and "--help" in message  # says where to look
    assert captured.out == ""


def test_the_base_class_comes_from_the_click_typer_really_uses():
    """Whatever click typer raises (vendored or not) is caught: typer.BadParameter derives from it."""
    from robustscale.cli import _click_exceptions

    assert issubclass(typer.BadParameter, _click_exceptions())


def test_no_arguments_prints_the_help_and_exits_0(capsys):
    assert main([]) == 0
    assert "Usage" in capsys.readouterr().out


def test_real_entry_point_usage_error(tmp_path):
    """``python -m robustscale`` (the console script's path): status 2 and a single line, no traceback."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run([sys.executable, "-m", "robustscale", "train", "--nosuch"], capture_output=True, text=True,
                          env=env, timeout=300, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "--nosuch" in lines[0], proc.stderr


def test_user_text_is_escaped_and_bounded_in_the_one_line(capsys, assert_one_line, digits_yaml):
    """Raw NUL bytes and a 200k-character name are not echoed whole (item 13)."""
    assert main(["config", str(digits_yaml), "model.name=a\x00b" + "x" * 200_000]) == 2
    message = assert_one_line(capsys.readouterr().err)
    assert "\x00" not in message and "\\x00" in message
    assert len(message) < 1000


def test_an_os_error_from_the_environment_is_one_line(capsys, assert_one_line, tmp_path, monkeypatch):
    """An error of the environment (here: no space left, while printing the config) is one line, not a traceback."""
    import errno

    import robustscale._cli.config as config_cli

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "x"))

    monkeypatch.setattr(config_cli, "load_config", full, raising=False)
    monkeypatch.setattr("robustscale.config.load_config", full)
    assert main(["config", "any.yaml"]) == 2
    message = assert_one_line(capsys.readouterr().err)
    assert "No space left" in message and str(tmp_path / "x") in message


@pytest.mark.parametrize("eps", ["inf", "1e308", "nan", "-1"])
def test_eval_eps_outside_the_pixel_range_is_one_line(tmp_path, capsys, assert_one_line, eps):
    """Item 12: `eval --eps inf` / `1e308` crashed inside the attack (the step size overflowed)."""
    from robustscale.config import load_config
    from robustscale.training.model_files import create_from_config, save_model

    cfg = load_config(None, ["model.name=wrn_10_1"])
    model = save_model(tmp_path / "m.safetensors", create_from_config(cfg), cfg)
    assert main(["eval", str(model), "--attack", "pgd", "--steps", "1", "--n", "2", "--eps", eps]) == 2
    assert "--eps" in assert_one_line(capsys.readouterr().err)


@pytest.mark.parametrize("command", ["extrapolate", "budget"])
@pytest.mark.parametrize("value", ["0", "-1", "1.5", "nan"])
def test_utilization_outside_0_1_is_one_line_before_any_work(tmp_path, capsys, assert_one_line, digits_yaml,
                                                           command, value):
    """`extrapolate --utilization 0` divided by zero and -1 printed negative GPU-years; the table (here missing) is
    not even read."""
    first = [str(tmp_path / "missing.csv"), "--target", "0.5"] if command == "extrapolate" else [str(digits_yaml)]
    assert main([command, *first, "--utilization", value]) == 2
    message = assert_one_line(capsys.readouterr().err)
    assert "--utilization" in message and "(0, 1]" in message


def test_replay_seeds_stay_32_bit():
    """The last seed replayed is a numpy seed too (first_seed + seeds - 1 <= 2**32 - 1)."""
    import pandas as pd

    from robustscale.analysis.replay import replay
    from robustscale.errors import ParameterError

    with pytest.raises(ParameterError, match="first_seed"):
        replay(pd.DataFrame(), "random", budget_frac=0.5, seeds=2, first_seed=2**32 - 1)
