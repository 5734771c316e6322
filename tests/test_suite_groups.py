"""The suite's own rule for pytest-xdist (tests/conftest.py): a test module whose fixtures live for the module (or
the session) carries ``pytestmark = ... xdist_group(...)``, so that under README command 2 (``-n 2 --dist
loadgroup``) one worker builds them once. Without it both workers build them when the module's tests are dealt to
both: a costly fixture (a trained run, a sweep on Slurm) is then paid twice, which nothing else would show."""

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parent


def _wide_fixtures(tree: ast.Module) -> list[str]:
    """Names of the module's fixtures with scope "module", "package" or "session"."""
    names = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.FunctionDef):
            continue
        for deco in node.decorator_list:
            if isinstance(deco, ast.Call) and ast.unparse(deco.func).endswith("fixture") and any(
                    k.arg == "scope" and isinstance(k.value, ast.Constant) and k.value.value != "function"
                    for k in deco.keywords):
                names.append(node.name)
    return names


def _grouped(tree: ast.Module) -> bool:
    """Whether a top-level ``pytestmark`` names an ``xdist_group``."""
    return any(isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "pytestmark" for t in node.targets)
               and "xdist_group(" in ast.unparse(node.value) for node in tree.body)


def _ungrouped(source: str) -> list[str]:
    tree = ast.parse(source)
    return [] if _grouped(tree) else _wide_fixtures(tree)


def test_every_module_with_module_scoped_fixtures_is_one_xdist_group():
    offenders = {path.relative_to(TESTS).as_posix(): names for path in sorted(TESTS.rglob("test_*.py"))
                 if (names := _ungrouped(path.read_text()))}
    assert not offenders, f"add pytestmark = pytest.mark.xdist_group('<module>') to: {offenders}"


def test_the_check_finds_a_module_fixture_without_a_group_and_accepts_one_with():
    fixture = '@pytest.fixture(scope="module")\ndef trained(tmp_path_factory):\n    return 1\n'
    assert _ungrouped("import pytest\n" + fixture) == ["trained"]
    assert _ungrouped("import pytest\n@pytest.fixture\ndef cheap():\n    return 1\n") == []
    grouped = 'import pytest\npytestmark = [pytest.mark.slow, pytest.mark.xdist_group("m")]\n' + fixture
    assert _ungrouped(grouped) == []
