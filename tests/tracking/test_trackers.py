"""Choosing trackers: the config and the command line, a missing extra, and a run without trackers loading none.
These need none of the trackers' libraries."""

import json
import logging
import os
import subprocess
import sys

import pytest

import robustscale.config as config_module
from robustscale.cli import main
from robustscale.config import config_to_dict, config_to_yaml, load_config
from robustscale.enums import Tracker
from robustscale.errors import ConfigError, UserError
from robustscale.store.record import run_id
from robustscale.tracking import flat_params, open_trackers

LIBRARIES = {"tensorboard": "tensorboard", "mlflow": "mlflow", "wandb": "wandb"}


@pytest.fixture
def spec(tmp_path, digits_yaml):
    path = tmp_path / "spec.yaml"
    path.write_text(f"base: {digits_yaml}\nname: tiny\naxes: {{train.seed: [0, 1]}}\n"
                    "overrides: {model.name: wrn_10_1, train.epochs: 1, eval.autoattack: none}\n")
    return path


@pytest.mark.parametrize("tracker", ["mlflow", "wandb", "tensorboard"])
@pytest.mark.parametrize("command", ["train", "sweep", "eval"])
def test_a_missing_extra_is_one_line_and_exit_2_before_anything_runs(command, tracker, tmp_path, spec, digits_yaml,
                                                                      monkeypatch, capsys, assert_one_line):
    monkeypatch.setitem(sys.modules, LIBRARIES[tracker], None)  # as if not installed: `import` fails
    out = tmp_path / "out"
    argv = {"train": ["train", str(digits_yaml), "--out", str(out)],
            "sweep": ["sweep", str(spec), "--out", str(out)],
            "eval": ["eval", str(tmp_path), "--attack", "pgd"]}[command]
    assert main([*argv, "--tracker", tracker]) == 2
    line = assert_one_line(capsys.readouterr().err)
    assert f"pip install 'robustscale[{tracker}]'" in line and "not installed" in line
    assert not out.exists()  # nothing was prepared, let alone trained


def test_a_missing_extra_named_in_the_config_is_refused_too(tmp_path, digits_yaml, monkeypatch, capsys,
                                                             assert_one_line):
    monkeypatch.setitem(sys.modules, "mlflow", None)
    assert main(["train", str(digits_yaml), "--out", str(tmp_path / "run"), "output.trackers=[mlflow]"]) == 2
    assert "robustscale[mlflow]" in assert_one_line(capsys.readouterr().err)
    assert not (tmp_path / "run").exists()


def test_an_unknown_tracker_is_one_line(digits_yaml, tmp_path, capsys, assert_one_line):
    assert main(["train", str(digits_yaml), "--out", str(tmp_path / "run"), "--tracker", "neptune"]) == 2
    assert "neptune" in assert_one_line(capsys.readouterr().err)
    with pytest.raises(ConfigError, match="output.trackers"):
        load_config(digits_yaml, ["output.trackers=[neptune]"])


def test_output_tensorboard_is_a_deprecated_alias(digits_yaml, caplog):
    config_module._deprecated.cache_clear()  # said once per process: maybe already, by another test
    with caplog.at_level(logging.WARNING):
        old = load_config(digits_yaml, ["output.tensorboard=true", "output.trackers=[mlflow]"])
        load_config(digits_yaml, ["output.tensorboard=true"])
    assert old.output.trackers == [Tracker.mlflow, Tracker.tensorboard]
    assert [r.getMessage() for r in caplog.records].count(
        "config key 'output.tensorboard' is deprecated: write output.trackers: [tensorboard]") == 1
    assert "tensorboard: " not in config_to_yaml(old)  # a saved config says it the new way only
    assert load_config(digits_yaml, ["output.tensorboard=false"]).output.trackers == []


def test_trackers_do_not_change_a_run_id(digits_yaml):
    """Run ids come from what is trained: logging the same run elsewhere is the same run (and folder)."""
    plain = load_config(digits_yaml)
    tracked = load_config(digits_yaml, ["output.trackers=[tensorboard,mlflow,wandb,mlflow]",
                                        "output.experiment=my-sweep", "output.tensorboard=true"])
    assert tracked.output.trackers == [Tracker.tensorboard, Tracker.mlflow, Tracker.wandb]
    assert run_id(config_to_dict(tracked)) == run_id(config_to_dict(plain))


@pytest.mark.parametrize("name", ["tensorboard", "trackers.json"])
def test_a_link_where_a_tracker_writes_is_refused(name, tmp_path, digits_yaml):
    """A downloaded run folder cannot redirect a tracker's files outside it (as for metrics.jsonl)."""
    pytest.importorskip("tensorboard", reason="TensorBoard is not installed (pip install -e '.[test]')")
    run_dir, elsewhere = tmp_path / "run", tmp_path / "elsewhere"
    run_dir.mkdir()
    elsewhere.mkdir()
    (run_dir / name).symlink_to(elsewhere)
    with pytest.raises(UserError, match="symbolic link"):
        open_trackers(load_config(digits_yaml, ["output.trackers=[tensorboard]"]), run_dir, resume=True)
    assert list(elsewhere.iterdir()) == []


def test_the_config_as_parameters_is_flat():
    params = flat_params({"train": {"lr": 0.1, "milestones": [3, 5]}, "model": {"kwargs": {"drop_rate": 0.1}},
                          "attack": {"eps": None}})
    assert params == {"train.lr": "0.1", "train.milestones": "[3, 5]", "model.kwargs": "{'drop_rate': 0.1}",
                      "attack.eps": "null"}


PROBE = """
import json, sys
from robustscale.cli import main
UNUSED = ("tensorboard", "mlflow", "wandb", "timm", "torchvision")
code = main(sys.argv[1:])
print(json.dumps({"code": code, "loaded": sorted(m for m in sys.modules if m.split(".")[0] in UNUSED
                  or m.startswith("torch.utils.tensorboard")
                  or m in [f"robustscale.tracking.{name}" for name in ("tensorboard", "mlflow", "wandb")])}))
"""


@pytest.mark.slow
def test_a_run_without_trackers_loads_none_of_their_libraries_nor_timm(tmp_path, digits_yaml):
    """No tracker module, TensorBoard, MLflow or W&B is imported; nor timm and torchvision, which a WideResNet on
    digits does not use (timm imports W&B itself when it is installed; timm and torchvision cost 0.9 s of every
    run's and rank's start on a 2-core host)."""
    argv = ["train", str(digits_yaml), "--out", str(tmp_path / "run"), "--quiet", "model.name=wrn_10_1",
            "train.epochs=1", "train.max_steps=2", "data.val_size=20", "eval.pgd_steps=1", "eval.autoattack=none",
            "eval.autoattack_n=20"]
    done = subprocess.run([sys.executable, "-c", PROBE, *argv], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result == {"code": 0, "loaded": []}, done.stderr[-2000:]
    assert not [p.name for p in (tmp_path / "run").iterdir() if p.name in ("trackers.json", "tensorboard", "wandb")]
