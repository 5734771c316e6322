"""A crafted name or a planted link cannot redirect a sweep's writes (items 2 and 3 of issue 20)."""

import json
import os

import pytest
import yaml

from robustscale.cli import main
from robustscale.errors import UserError
from robustscale.store.atomic import append_line
from robustscale.store.record import run_id
from robustscale.sweep.run import ATTEMPTS, ERROR_LOG, run_one

TINY = {"model.name": "wrn_10_1", "train.epochs": 1, "train.max_steps": 1, "eval.pgd_steps": 1,
        "eval.autoattack": "none", "data.val_size": 20, "attack.steps": 1, "data.batch_size": 32}


def _spec(tmp_path, digits_yaml):
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump({"base": str(digits_yaml), "axes": {"train.loss": ["at"]}, "overrides": TINY}))
    return path


def _outside(tmp_path):
    target = tmp_path / "outside"
    target.mkdir()
    return target


def test_run_id_of_a_crafted_name_is_one_plain_folder_name():
    """Even a config that bypassed validation cannot name a folder outside the output."""
    config = {"data": {"dataset": "digits"}, "model": {"name": "resnet18./../../../escaped"},
              "train": {"loss": "at", "seed": 0}, "attack": {"steps": 1}}
    rid = run_id(config)
    assert "/" not in rid and ".." not in rid and not rid.startswith(".")


def test_run_ids_of_ordinary_configs_are_unchanged():
    """Sanitising must not move existing runs: a plain name keeps its id."""
    config = {"data": {"dataset": "cifar10"}, "model": {"name": "wrn_28_10"}, "train": {"loss": "trades", "seed": 3},
              "attack": {"steps": 10}}
    assert run_id(config).startswith("cifar10-wrn_28_10-trades10-s3-")


def test_sweep_with_an_escaping_model_name_writes_nothing_outside(tmp_path, digits_yaml, capsys, assert_one_line):
    """The red team's spec: --dry-run printed a traceback, the sweep wrote record.json etc. outside --out."""
    spec = tmp_path / "sw" / "spec.yaml"
    spec.parent.mkdir()
    spec.write_text(f"base: {digits_yaml}\naxes: {{model.name: ['resnet18./../../../escaped']}}\n"
                    "overrides: {train.max_steps: 1, eval.autoattack: none}\n")
    assert main(["sweep", str(spec), "--dry-run"]) == 2
    assert "model.name" in assert_one_line(capsys.readouterr().err)
    assert main(["sweep", str(spec), "--out", str(tmp_path / "sw" / "out")]) == 2
    assert "model.name" in assert_one_line(capsys.readouterr().err)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sw"]
    assert sorted(p.name for p in (tmp_path / "sw").iterdir()) == ["spec.yaml"]


@pytest.mark.parametrize("name", ["", ".", "..", "a/b", "a\\b", "../x", ".hidden", "a\x00b", "a\nb", "x" * 300])
def test_unsafe_folder_names_are_refused(name, assert_one_line):
    from robustscale.store.safe_paths import check_safe_name

    with pytest.raises(UserError) as err:
        check_safe_name(name)
    assert_one_line(err.value)


@pytest.mark.parametrize("text", ["resnet18./../../../escaped", "../../x", "a\x00b", "é/ü", "..", "." * 9, "x" * 500])
def test_safe_component_is_always_a_safe_name(text):
    from robustscale.store.safe_paths import check_safe_name, safe_component

    check_safe_name(safe_component(text))


def test_a_run_folder_that_is_a_symlink_is_refused(tmp_path, digits_yaml, capsys, assert_one_line):
    """The sweep wrote a run's files into a link's target."""
    spec, out, target = _spec(tmp_path, digits_yaml), tmp_path / "out", _outside(tmp_path)
    assert main(["sweep", str(spec), "--dry-run", "--json"]) == 0
    rid = json.loads(capsys.readouterr().out)["runs"][0]["run_id"]
    out.mkdir()
    (out / rid).symlink_to(target, target_is_directory=True)
    assert main(["sweep", str(spec), "--out", str(out)]) == 2
    assert "symbolic link" in assert_one_line(capsys.readouterr().err)
    assert list(target.iterdir()) == []


@pytest.mark.parametrize("name", [ATTEMPTS, ERROR_LOG, "metrics.jsonl"])
def test_a_symlinked_log_in_a_run_folder_is_not_appended_to(tmp_path, name, assert_one_line):
    """attempts.jsonl / error.log appended to their link's target."""
    run_dir, target = tmp_path / "run", _outside(tmp_path) / "victim.txt"
    run_dir.mkdir()
    target.write_text("precious\n")
    (run_dir / name).symlink_to(target)
    with pytest.raises(UserError) as err:
        run_one(run_dir, {})
    assert "symbolic link" in assert_one_line(err.value)
    with pytest.raises(UserError, match="symbolic link"):  # and the append itself refuses, wherever it is called
        append_line(run_dir / name, "more")
    assert target.read_text() == "precious\n"


def test_run_folder_accepts_a_plain_new_folder(tmp_path):
    from robustscale.store.safe_paths import run_folder

    assert run_folder(tmp_path, "cifar10-wrn_28_10-at10-s0-0123456789") == tmp_path / "cifar10-wrn_28_10-at10-s0-0123456789"


def test_the_output_folder_itself_may_be_a_link(tmp_path, digits_yaml, capsys):
    """--out pointing at scratch space through a link is the user's choice: only links inside it are refused."""
    spec, real = _spec(tmp_path, digits_yaml), _outside(tmp_path)
    (tmp_path / "out").symlink_to(real, target_is_directory=True)
    assert main(["sweep", str(spec), "--out", str(tmp_path / "out"), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert len(summary["done"]) == 1 and os.path.isdir(real / summary["done"][0])
