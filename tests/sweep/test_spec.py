"""Sweep specs expand into exactly the runs they describe, and every mistake is one line naming the spec."""

from collections import Counter

import pytest
import yaml

from robustscale.config import config_to_dict
from robustscale.errors import ConfigError
from robustscale.store.record import run_id
from robustscale.sweep import expand_runs, load_spec


def _spec(tmp_path, digits_yaml, **body):
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump({"base": str(digits_yaml), **body}))
    return path


def test_paper_grid_is_the_papers_320_runs(repo_root):
    runs = expand_runs(load_spec(repo_root / "configs/sweeps/paper.yaml"))
    assert len(runs) == 320 and len({r.run_id for r in runs}) == 320
    cfgs = [r.config for r in runs]
    assert Counter(c.model.name for c in cfgs) == {m: 80 for m in ("wrn_28_10", "wrn_34_10", "wrn_34_20", "wrn_70_16")}
    assert Counter(c.attack.steps for c in cfgs) == {s: 64 for s in (1, 2, 5, 7, 10)}
    assert Counter((c.train.epochs, c.train.ema) for c in cfgs) == {(110, False): 160, (400, True): 160}
    assert Counter(c.data.synthetic.path is not None for c in cfgs) == {False: 160, True: 160}
    assert {c.model.act_layer.value for c in cfgs} == {"relu", "silu"}  # the code's Swish, not the text's GELU
    assert {c.train.loss.value for c in cfgs} == {"at", "trades"}
    threat = {(c.data.dataset.value, round(c.attack.eps * 255, 6)) for c in cfgs}
    assert threat == {("cifar10", 8)}
    assert {c.data.batch_size for c in cfgs} == {512, 128, 64}  # per model, as scripts/job.sh (test_paper_grid.py)


def test_demo_grid_runs_on_the_embedded_digits(repo_root):
    runs = expand_runs(load_spec(repo_root / "configs/sweeps/demo.yaml"))
    assert 24 <= len(runs) <= 32
    assert {r.config.data.dataset.value for r in runs} == {"digits"}
    assert len({r.config.model.name for r in runs}) == 3
    synthetic = [r.config for r in runs if r.config.data.synthetic.path is not None]
    assert synthetic and all(c.attack.steps == 3 and c.train.ema for c in synthetic)
    assert all(r.config.eval.autoattack_n <= 200 for r in runs)


def test_axes_zip_seeds_overrides_exclude(tmp_path, digits_yaml):
    spec = load_spec(_spec(tmp_path, digits_yaml,
                           axes={"model.name": ["wrn_10_1", "wrn_16_1"], "train.loss": ["at", "trades"]},
                           zip=[{"train.epochs": 2, "train.ema": False}, {"train.epochs": 4, "train.ema": True}],
                           overrides={"eval.autoattack_n": 7, "attack.eps": "8/255"}, seeds=[0, 1],
                           exclude=[{"model.name": "wrn_10_1", "train.loss": "trades"}]))
    runs = expand_runs(spec)
    assert len(runs) == (4 - 1) * 2 * 2
    keys = [(r.config.model.name, r.config.train.loss.value, r.config.train.epochs, r.config.train.ema,
             r.config.train.seed) for r in runs]
    assert keys[:4] == [("wrn_10_1", "at", 2, False, 0), ("wrn_10_1", "at", 2, False, 1),
                        ("wrn_10_1", "at", 4, True, 0), ("wrn_10_1", "at", 4, True, 1)]  # first axis outermost
    assert ("wrn_10_1", "trades", 2, False, 0) not in keys
    assert all(r.config.eval.autoattack_n == 7 and abs(r.config.attack.eps - 8 / 255) < 1e-12 for r in runs)
    assert all(r.run_id == run_id(config_to_dict(r.config)) for r in runs)
    assert [r.run_id for r in expand_runs(load_spec(spec.path))] == [r.run_id for r in runs]  # stable ids


def test_base_is_relative_to_the_spec(tmp_path, digits_yaml):
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "base.yaml").write_text(digits_yaml.read_text())
    (tmp_path / "sweeps").mkdir()
    path = tmp_path / "sweeps" / "s.yaml"
    path.write_text("base: ../configs/base.yaml\naxes: {train.loss: [at, trades]}\n")
    assert len(expand_runs(load_spec(path))) == 2


def test_zip_as_mapping_of_lists(tmp_path, digits_yaml):
    spec = load_spec(_spec(tmp_path, digits_yaml, axes={"train.loss": ["at"]},
                           zip={"train.epochs": [1, 2, 3], "train.ema": [False, True, True]}))
    assert [(r.config.train.epochs, r.config.train.ema) for r in expand_runs(spec)] == [(1, False), (2, True),
                                                                                        (3, True)]


@pytest.mark.parametrize("body, words", [
    ({"axes": {"train.los": ["at"]}}, ["train.los"]),
    ({"axes": {"train.loss": ["at", "pgd"]}}, ["train.loss", "pgd"]),
    ({"axes": {"train.loss": "at"}}, ["train.loss", "list"]),
    ({"axes": {"train.loss": ["at"]}, "exclude": [{"train.nope": 1}]}, ["train.nope"]),
    ({"axes": {"train.loss": ["at"]}, "overrides": {"train.loss": "trades"}}, ["train.loss"]),
    ({"axes": {"train.loss": ["at"]}, "axis": {}}, ["axis"]),
    ({"axes": {"train.loss": ["at"]}, "seeds": [-1]}, ["seeds"]),
    ({"axes": {"train.loss": ["at"]}, "exclude": [{"train.loss": "at"}]}, ["excluded"]),
])
def test_mistakes_are_one_line_naming_the_spec(tmp_path, digits_yaml, assert_one_line, body, words):
    path = _spec(tmp_path, digits_yaml, **body)
    with pytest.raises(ConfigError) as err:
        expand_runs(load_spec(path))
    message = assert_one_line(err.value)
    assert str(path) in message
    for word in words:
        assert word in message


def test_missing_base(tmp_path, assert_one_line):
    path = tmp_path / "s.yaml"
    path.write_text("base: nowhere.yaml\naxes: {train.loss: [at]}\n")
    with pytest.raises(ConfigError, match="nowhere.yaml") as err:
        load_spec(path)
    assert_one_line(err.value)
