"""The package's shape: layers point down, no import cycles, imports at the top, package faces that only re-export,
and a command line whose help loads none of the heavy libraries.

The import graph is read from the source with ``ast`` (module-level and function-level imports; ``TYPE_CHECKING``
blocks are not imports at run time), so a cycle hidden inside a function is found too.
"""

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = "robustscale"
CLI = ("robustscale.cli", "robustscale._cli", "robustscale.__main__")  # the one place that imports lazily

# Bottom to top; a module may import its own layer and the ones below, never one above. The longest matching prefix
# names a module's layer.
LAYERS = {
    "robustscale._version": 0, "robustscale._lazy": 0, "robustscale.errors": 0, "robustscale.enums": 0,
    "robustscale.datasets": 0, "robustscale.safe_yaml": 0, "robustscale.config_checks": 0,
    "robustscale.config": 1,  # the pure schema: pydantic and YAML
    "robustscale.store": 1,  # records, atomic writes, claims, the results table: nothing of torch
    "robustscale.data": 2, "robustscale.models": 2, "robustscale.attacks": 2,
    "robustscale.tracking": 2,  # experiment trackers: their libraries imported only when a run asks for one
    "robustscale.training": 3, "robustscale.accounting": 3,
    "robustscale.evaluate": 4, "robustscale.bench": 4, "robustscale.sweep": 4, "robustscale.analysis": 4,
    "robustscale.demo": 4,
    "robustscale": 5,  # the package face: lazy re-exports of any layer
}
HEAVY = ("torch", "timm", "pandas", "sklearn", "matplotlib", "tensorboard", "mlflow", "wandb")


def _modules() -> dict[str, Path]:
    found = {}
    for path in (SRC / PACKAGE).rglob("*.py"):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


MODULES = _modules()
BELOW_CLI = {name: path for name, path in MODULES.items()
             if not any(name == c or name.startswith(c + ".") for c in CLI)}


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    skipped = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped.update(id(n) for n in ast.walk(node))
    return skipped


def _imports(name: str, path: Path) -> list[tuple[ast.AST, str]]:
    """``(node, imported robustscale module)`` for every import in the file, resolved to a module of the package."""
    tree = ast.parse(path.read_text())
    skipped, out = _type_checking_nodes(tree), []
    is_package = path.name == "__init__.py"
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = name.split(".")[: len(name.split(".")) - (node.level - (1 if is_package else 0))]
                base = ".".join(parts + ([node.module] if node.module else []))
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]
        else:
            continue
        for target in targets:
            while target and target not in MODULES:
                target = target.rpartition(".")[0]
            if target and target != name:
                out.append((node, target))
    return out


def _ancestors(module: str) -> list[str]:
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def _graph() -> dict[str, set[str]]:
    """Module -> the modules importing it runs: the target, and its packages' ``__init__`` files (those that are not
    the importer's own packages, which are already running)."""
    edges: dict[str, set[str]] = {name: set() for name in BELOW_CLI}
    for name, path in BELOW_CLI.items():
        own = set(_ancestors(name))
        for _, target in _imports(name, path):
            edges[name].add(target)
            edges[name].update(p for p in _ancestors(target) if p not in own and p != name)
    return {name: {t for t in targets if t in BELOW_CLI} for name, targets in edges.items()}


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for v in edges:
        if v not in index:
            visit(v)
    return out


def _layer(module: str) -> int:
    prefix = max((p for p in LAYERS if module == p or module.startswith(p + ".")), key=len)
    return LAYERS[prefix]


def test_the_graph_is_read_from_the_source():
    """The checks below see the package: the loop imports the accounting, a package face its modules."""
    edges = _graph()
    assert "robustscale.accounting.run" in edges["robustscale.training.loop"]
    assert "robustscale.training.loop" in edges["robustscale.training"]
    assert len(BELOW_CLI) > 60


def test_every_import_names_a_module_that_exists():
    """``from robustscale.x.y import z`` names a module (a moved one leaves no stale path behind)."""
    stale = []
    for name, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text())):
            named = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module] if isinstance(node, ast.ImportFrom) and not node.level else [])
            stale += [f"{name}: {m}" for m in named if m and m.split(".")[0] == PACKAGE and m not in MODULES]
    assert stale == []


def test_no_import_cycles_below_the_cli():
    assert _cycles(_graph()) == []


def test_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_layers_point_down():
    every = [name for name in BELOW_CLI if name != PACKAGE]
    assert all(any(n == p or n.startswith(p + ".") for p in LAYERS if p != PACKAGE) for n in every), \
        "a module outside the layer table: give it a layer"
    upward = [f"{name} (layer {_layer(name)}) imports {target} (layer {_layer(target)})"
              for name, path in BELOW_CLI.items() for _, target in _imports(name, path)
              if target in BELOW_CLI and _layer(target) > _layer(name)]
    assert upward == []


def test_imports_at_the_top_below_the_cli():
    """A function-local import hides a layering mistake (or makes the first call slow); only a package face's lazy
    ``__getattr__`` may import on first use."""
    inside = []
    for name, path in BELOW_CLI.items():
        tree = ast.parse(path.read_text())
        for func in ast.walk(tree):
            if isinstance(func, (ast.FunctionDef, ast.AsyncFunctionDef)) and func.name != "__getattr__":
                inside += [f"{name}:{node.lineno}" for node in ast.walk(func)
                           if isinstance(node, (ast.Import, ast.ImportFrom))]
    assert inside == []


def test_package_faces_only_re_export():
    """Logic lives in named modules; an ``__init__`` imports and lists (a lazy ``__getattr__`` excepted)."""
    defined = []
    for path in (SRC / PACKAGE).rglob("__init__.py"):
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and node.name != "__getattr__":
                defined.append(f"{path.relative_to(SRC)}: {node.name}")
    assert defined == []


def _in_a_fresh_interpreter(code: str, *args: str) -> dict:
    """Run ``code`` in a new Python on this source tree; the JSON object its last line prints."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


HELP = """
import contextlib, io, json, sys
from robustscale.cli import app, main
names = sorted(c.name or c.callback.__name__ for c in app.registered_commands)
codes = {}
for argv in [["--help"], *[[name, "--help"] for name in names]]:
    with contextlib.redirect_stdout(io.StringIO()) as out:
        codes[" ".join(argv)] = (main(argv), "Usage" in out.getvalue())
print(json.dumps({"commands": names, "codes": codes, "loaded": sorted(m for m in sys.modules
                  if m.split(".")[0] in json.loads(sys.argv[1]))}))
"""


def test_help_loads_no_heavy_library():
    """``robustscale --help`` and every ``robustscale <command> --help`` in a fresh interpreter: the command modules
    import the library inside each command, so help never waits for torch (9 s before this test existed)."""
    result = _in_a_fresh_interpreter(HELP, json.dumps(HEAVY))
    assert {"train", "eval", "sweep", "fit", "budget", "bench", "results"} <= set(result["commands"])
    assert all(code == 0 and usage for code, usage in result["codes"].values()), result["codes"]
    assert result["loaded"] == []


ANALYSIS = """
import contextlib, io, json, sys
from robustscale.cli import main
codes = {}
for argv in [["fit", sys.argv[1], "--json"], ["extrapolate", sys.argv[1], "--target", "0.6", "--json"],
             ["predict", sys.argv[1], "--json"], ["plan", sys.argv[1], "--flops", "1e18", "--json"]]:
    with contextlib.redirect_stdout(io.StringIO()):
        codes[argv[0]] = main(argv)
print(json.dumps({"codes": codes, "loaded": sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "timm"))}))
"""


def test_the_analysis_of_a_table_loads_no_torch(tmp_path):
    """``robustscale fit``, ``extrapolate``, ``predict`` and ``plan`` on a results table never build a model, so
    they do not wait for torch (about 2 s of each command's 6 on a 2-core host): the cost and hardware tables and
    the WideResNets' sizes they read are torch-free modules behind lazy package faces."""
    header = "run_id,status,model,params,samples_seen,train_flops,adv_loss,autoattack_acc,clean_acc,loss,ema"
    rows = []  # a loss that falls with both parameters N and samples D, L = 0.5 + 50 / N^0.3 + 30 / D^0.3
    for i, (n, d) in enumerate([(n, d) for n in (1e4, 1e5, 1e6) for d in (1e4, 1e5, 1e6)]):
        loss = 0.5 + 50 / n**0.3 + 30 / d**0.3
        rows.append(f"r{i},done,wrn_{10 + 6 * (i % 3)}_1,{n:.0f},{d:.0f},{6 * n * d:.3g},{loss:.4f},"
                    f"{1.5 / (1 + loss):.4f},0.9,at,{i % 2 == 0}")
    table = tmp_path / "results.csv"
    table.write_text("\n".join([header, *rows]) + "\n")
    result = _in_a_fresh_interpreter(ANALYSIS, str(table))
    assert result["codes"] == {"fit": 0, "extrapolate": 0, "predict": 0, "plan": 0}
    assert result["loaded"] == []


@pytest.mark.parametrize("name", ["load_config", "Config", "create_model", "load_model", "load_data"])
def test_the_package_face_still_exports_its_names(name):
    import robustscale

    assert callable(getattr(robustscale, name))
    with pytest.raises(AttributeError):
        getattr(robustscale, "no_such_name")
