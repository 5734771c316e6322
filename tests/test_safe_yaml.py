"""YAML from users within bounds: alias bombs, deep nesting, bad explicit tags and odd files are one ConfigError line.

Items 4, 12 (YAML nested 3,000 deep), 13 (a folder or /dev/null as the config) and 14 of issue 20.
"""

import os

import pytest

from robustscale.cli import main
from robustscale.config import load_config, parse_override
from robustscale.errors import ConfigError


def _bomb(levels: int = 9, width: int = 9) -> str:
    """375 bytes or so of nested aliases under model.kwargs: 9^9 (387M) values once expanded."""
    lines = ["model:", "  name: wrn_10_1", "  kwargs:", f"    a0: &a0 [{', '.join(['x'] * width)}]"]
    for i in range(1, levels):
        lines.append(f"    a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * width)}]")
    return "\n".join(lines) + "\n"


@pytest.mark.timeout(60)  # the landed loader ran 61 s to a 3 GB MemoryError: fail, don't hang
def test_alias_bomb_is_refused_at_load(tmp_path, assert_one_line):
    path = tmp_path / "bomb.yaml"
    path.write_text(_bomb())
    assert len(path.read_bytes()) < 600
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert "aliases" in assert_one_line(err.value) and "bomb.yaml" in str(err.value)


def test_alias_bomb_through_the_cli_exits_2(tmp_path, capsys, assert_one_line):
    path = tmp_path / "bomb.yaml"
    path.write_text(_bomb())
    assert main(["config", str(path)]) == 2
    assert "aliases" in assert_one_line(capsys.readouterr().err)


def test_modest_aliases_still_work(tmp_path):
    """Anchors are YAML; only their expansion is bounded."""
    path = tmp_path / "anchors.yaml"
    path.write_text("train: &t {epochs: 7}\nmodel: {name: wrn_10_1, kwargs: {drop_rate: &d 0.1}}\n")
    cfg = load_config(path)
    assert cfg.train.epochs == 7 and cfg.model.kwargs == {"drop_rate": 0.1}


def test_recursive_alias_is_refused():
    from robustscale.safe_yaml import load_yaml_text

    with pytest.raises(ConfigError, match="aliases"):
        load_yaml_text("a: &x [1, *x]\n", "text")


def test_expanded_size_counts_each_use_of_an_alias():
    from robustscale.safe_yaml import MAX_VALUES, expanded_size

    shared = [1, 2, 3]
    assert expanded_size([shared, shared]) == 1 + 2 * 4
    assert expanded_size({"k": shared}) == 1 + 1 + 4
    nested = [1]
    for _ in range(40):
        nested = [nested, nested]
    assert expanded_size(nested, limit=MAX_VALUES) is None


@pytest.mark.parametrize("text", ["x: " + "[" * 3000 + "]" * 3000 + "\n",
                                  "".join(f"{' ' * i}k{i}:\n" for i in range(3000)),
                                  "x: " + "{a: " * 200 + "1" + "}" * 200 + "\n"])
def test_deep_nesting_is_refused_in_one_line(tmp_path, text, assert_one_line):
    """3,000 levels hit Python's recursion limit inside PyYAML (RecursionError, a traceback before)."""
    path = tmp_path / "deep.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert "deep" in assert_one_line(err.value) or "nests" in str(err.value)


def test_nesting_up_to_the_limit_is_parsed():
    from robustscale.safe_yaml import MAX_DEPTH, load_yaml_text

    text = "x: " + "[" * (MAX_DEPTH - 1) + "]" * (MAX_DEPTH - 1) + "\n"
    assert isinstance(load_yaml_text(text, "text")["x"], list)


@pytest.mark.parametrize("text", ["0: !!int A\n", "train: {seed: !!int ''}\n", "a: !!float x\n",
                                  "a: !!timestamp 2020-13-45\n", "a: !!binary YQ\n", "a: !!python/name:os.system\n",
                                  "? [1, 2]\n: 3\n", "a: !!int 0x\n"])
def test_bad_explicit_tags_are_one_line(tmp_path, text, assert_one_line):
    """PyYAML's safe loader raises ValueError / IndexError (not YAMLError) for some bad tagged values."""
    path = tmp_path / "tag.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert "tag.yaml" in assert_one_line(err.value)


def test_a_bad_tag_in_an_override_is_a_config_error_not_a_crash(assert_one_line):
    with pytest.raises(ConfigError) as err:
        load_config(None, ["train.lr=!!int A"])
    assert "train.lr" in assert_one_line(err.value)


def test_an_override_that_is_not_yaml_stays_text():
    assert parse_override("model.name=a: b: c") == (["model", "name"], "a: b: c")


@pytest.mark.parametrize("kind", ["folder", "devnull", "missing"])
def test_the_config_path_problem_is_named_truthfully(tmp_path, kind, assert_one_line):
    """A folder or /dev/null was reported as "not found"."""
    path = {"folder": tmp_path, "devnull": os.devnull, "missing": tmp_path / "nope.yaml"}[kind]
    with pytest.raises(ConfigError) as err:
        load_config(path)
    message = assert_one_line(err.value)
    expected = {"folder": "is a folder", "devnull": "not a regular file", "missing": "not found"}[kind]
    assert expected in message and str(path) in message


def test_an_oversized_config_is_refused_before_parsing(tmp_path):
    path = tmp_path / "big.yaml"
    path.write_bytes(b"# " + b"x" * (5 << 20) + b"\n")
    with pytest.raises(ConfigError, match="larger than"):
        load_config(path)
