"""Sweep specs: a base config and the knobs to vary, expanded into the list of runs.

A spec is YAML::

    base: ../digits.yaml            # a config file, relative to the spec
    axes:                           # grid product over dotted config keys (first axis outermost)
      model.name: [wrn_10_1, wrn_16_2]
      train.loss: [at, trades]
    zip:                            # entries stepped together (optional); or {key: [v1, v2], ...}
      - {train.epochs: 100, train.ema: false}
      - {train.epochs: 400, train.ema: true}
    overrides: {eval.autoattack_n: 1000}   # applied to every run (optional)
    rules:                          # conditional overrides, in order, after the above (optional)
      - when: {model.name: [wrn_34_20, wrn_70_16]}   # every key matches (a list: any of its values)
        set: {data.batch_size: 128}                  # applied to those runs only; a later rule wins
    seeds: [0]                      # replicates: set train.seed (optional)
    exclude: [{model.name: wrn_10_1, train.loss: trades}]   # drop runs matching every key:value (optional)
    out: runs/my_sweep              # default --out (optional)
    slurm: {timeout_min: 1440, partition: gpu, account: lab}   # submitit options (optional)
    ddp: {nodes: 1, procs_per_node: 4}   # each run one DDP job of nodes x procs_per_node processes (optional)

``ddp`` makes every run one data-parallel job (default: one process): on Slurm ``nodes`` x ``procs_per_node``
tasks with one GPU each, on the local executor ``procs_per_node`` processes (:mod:`robustscale.sweep.executors`).
It says *where* a run trains, not *what* it trains: it is not part of the run id (``data.batch_size`` stays the
global batch, split between the processes).

``rules`` say what a grid cannot: values that depend on other values (the paper's code used a smaller batch for
its largest models, ``scripts/job.sh``). A rule's ``when`` is matched against the run's values so far (axes, zip
entry, overrides, earlier rules, then the config's defaults); a rule may not set an axis key.

Every run is validated like a ``robustscale train`` command line (the values go through
:func:`robustscale.config.apply_overrides`), so a misspelt key fails before anything trains, in one line naming the
spec file. The same config always expands to the same run id, so re-expanding a spec finds the runs already done.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from robustscale.config import Config, apply_overrides, config_to_dict, parse_override, read_yaml
from robustscale.enums import Tracker
from robustscale.errors import ConfigError, ParameterError
from robustscale.store.record import run_id
from robustscale.training.distributed import DDPLayout
from robustscale.training.run_config import config_from_dict

__all__ = ["SweepSpec", "Rule", "load_spec", "expand_runs", "PlannedRun", "ddp_layout", "run_output"]

_KEYS = ("base", "axes", "zip", "overrides", "rules", "seeds", "exclude", "out", "name", "description", "slurm",
         "workers", "stale_after_s", "ddp")


@dataclass(frozen=True)
class SweepSpec:
    """A parsed spec. ``axes`` and the ``zip`` entries map dotted config keys to values."""

    path: Path
    base: Path
    axes: dict[str, list[Any]]
    zip: list[dict[str, Any]] = field(default_factory=list)
    overrides: dict[str, Any] = field(default_factory=dict)
    rules: list["Rule"] = field(default_factory=list)
    seeds: list[int] | None = None
    exclude: list[dict[str, Any]] = field(default_factory=list)
    out: Path | None = None
    name: str = ""
    slurm: dict[str, Any] = field(default_factory=dict)
    workers: int | None = None
    stale_after_s: float | None = None
    ddp: DDPLayout = field(default_factory=DDPLayout)

    def layout(self, nodes: int | None = None, procs_per_node: int | None = None) -> DDPLayout:
        """The spec's DDP layout with the command line's ``--nodes`` / ``--procs-per-node`` over it."""
        for name, value in (("nodes", nodes), ("procs_per_node", procs_per_node)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ParameterError(f"{name} {value}: use a whole number, 1 or more", name)
        return DDPLayout(nodes=nodes or self.ddp.nodes, procs_per_node=procs_per_node or self.ddp.procs_per_node)


@dataclass(frozen=True)
class Rule:
    """``set`` these dotted keys on every run whose values match all of ``when`` (a list value: any of it)."""

    when: dict[str, Any]
    set: dict[str, Any]


@dataclass(frozen=True)
class PlannedRun:
    run_id: str
    config: Config
    assignment: dict[str, Any]  # the dotted keys this run sets (axes, zip entry, seed)


# ---------------------------------------------------------------------------------------------- loading


def _fail(path: Path, message: str) -> ConfigError:
    return ConfigError(f"sweep spec '{path}': {message}")


def _mapping(path: Path, name: str, value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if isinstance(value, list) and all(isinstance(v, str) and "=" in v for v in value):  # ["train.lr=0.2", ...]
        try:
            return {".".join(keys): v for keys, v in map(parse_override, value)}
        except ConfigError as err:
            raise _fail(path, f"'{name}': {err}") from None
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        raise _fail(path, f"'{name}' must map dotted config keys to values (e.g. {{train.epochs: 10}})")
    return dict(value)


def _axes(path: Path, raw: Any) -> dict[str, list[Any]]:
    axes = _mapping(path, "axes", raw)
    for key, values in axes.items():
        if not isinstance(values, list) or not values:
            raise _fail(path, f"axis '{key}' must be a non-empty list of values (e.g. {key}: [a, b])")
    return axes


def _zip(path: Path, raw: Any) -> list[dict[str, Any]]:
    if raw is None:
        return []
    if isinstance(raw, dict):  # {key: [v1, v2], other: [w1, w2]} -> [{key: v1, other: w1}, {key: v2, other: w2}]
        lengths = {len(v) if isinstance(v, list) else -1 for v in raw.values()}
        if len(lengths) != 1 or -1 in lengths:
            raise _fail(path, "'zip' as a mapping needs lists of one common length (or use a list of mappings)")
        return [dict(zip(raw, values)) for values in zip(*raw.values())]
    if not isinstance(raw, list) or not raw or not all(isinstance(e, dict) for e in raw):
        raise _fail(path, "'zip' must be a non-empty list of mappings, e.g. [{train.epochs: 100, train.ema: false}]")
    return [_mapping(path, "zip", e) for e in raw]


def _seeds(path: Path, raw: Any) -> list[int] | None:
    if raw is None:
        return None
    if not isinstance(raw, list) or not raw or not all(isinstance(s, int) and s >= 0 for s in raw):
        raise _fail(path, "'seeds' must be a non-empty list of non-negative integers (e.g. [0, 1, 2])")
    return list(raw)


def _exclude(path: Path, raw: Any) -> list[dict[str, Any]]:
    if raw is None:
        return []
    if isinstance(raw, dict):
        raw = [raw]
    if not isinstance(raw, list):
        raise _fail(path, "'exclude' must be a list of mappings, e.g. [{model.name: wrn_10_1, train.loss: trades}]")
    return [_mapping(path, "exclude", e) for e in raw]


def _rules(path: Path, raw: Any, axes: dict[str, list[Any]]) -> list[Rule]:
    if raw is None:
        return []
    example = "[{when: {model.name: wrn_70_16}, set: {data.batch_size: 64}}]"
    if not isinstance(raw, list) or not all(isinstance(r, dict) for r in raw):
        raise _fail(path, f"'rules' must be a list of {{when: ..., set: ...}} mappings, e.g. {example}")
    rules = []
    for i, entry in enumerate(raw):
        if set(entry) != {"when", "set"}:
            raise _fail(path, f"rule {i + 1} must have exactly the keys 'when' and 'set', e.g. {example}")
        when, values = _mapping(path, "rules.when", entry["when"]), _mapping(path, "rules.set", entry["set"])
        if not when or not values:
            raise _fail(path, f"rule {i + 1}: 'when' and 'set' must each name at least one config key")
        for key in values:
            if key in axes:
                raise _fail(path, f"rule {i + 1} sets '{key}', which is an axis: vary it in one place")
        rules.append(Rule(when, values))
    return rules


def ddp_layout(raw: Any, where: str = "ddp") -> DDPLayout:
    """A :class:`DDPLayout` from ``{nodes: N, procs_per_node: P}`` (either may be left out: 1). Raises
    :class:`ConfigError` naming ``where`` and the key."""
    if raw is None:
        return DDPLayout()
    if not isinstance(raw, dict):
        raise ConfigError(f"'{where}' must be a mapping like {{nodes: 1, procs_per_node: 4}}")
    unknown = sorted(set(raw) - {"nodes", "procs_per_node"})
    if unknown:
        raise ConfigError(f"'{where}': unknown key '{unknown[0]}': allowed are nodes, procs_per_node")
    for key in ("nodes", "procs_per_node"):
        value = raw.get(key, 1)
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 4096:
            raise ConfigError(f"'{where}.{key}' must be a whole number from 1 to 4096, not {value!r}")
    return DDPLayout(nodes=raw.get("nodes", 1), procs_per_node=raw.get("procs_per_node", 1))


def load_spec(path: str | Path) -> SweepSpec:
    """Read and check a sweep spec (its shape only: the configs are checked by :func:`expand_runs`)."""
    path = Path(path)
    raw = read_yaml(path)
    unknown = sorted(set(raw) - set(_KEYS))
    if unknown:
        raise _fail(path, f"unknown key '{unknown[0]}': allowed are {', '.join(_KEYS)}")
    if not isinstance(raw.get("base"), str):
        raise _fail(path, "'base' must name a config file, relative to the spec (e.g. base: ../digits.yaml)")
    base = (path.parent / raw["base"]).resolve()
    if not base.is_file():
        raise _fail(path, f"base config '{raw['base']}' not found (looked for {base}); it is relative to the spec")
    axes, zipped = _axes(path, raw.get("axes")), _zip(path, raw.get("zip"))
    overrides = _mapping(path, "overrides", raw.get("overrides"))
    for key in sorted(set(axes) & ({k for e in zipped for k in e} | set(overrides))):
        raise _fail(path, f"'{key}' is set both as an axis and in zip/overrides: keep it in one place")
    slurm = raw.get("slurm") or {}
    if not isinstance(slurm, dict):
        raise _fail(path, "'slurm' must be a mapping of submitit options (e.g. {partition: gpu, gpus_per_node: 1})")
    workers = raw.get("workers")
    if workers is not None and (not isinstance(workers, int) or workers < 1):
        raise _fail(path, "'workers' must be a positive integer")
    try:
        ddp = ddp_layout(raw.get("ddp"))
    except ConfigError as err:
        raise _fail(path, str(err)) from None
    return SweepSpec(path=path, base=base, axes=axes, zip=zipped, overrides=overrides,
                     rules=_rules(path, raw.get("rules"), axes), seeds=_seeds(path, raw.get("seeds")),
                     exclude=_exclude(path, raw.get("exclude")), out=Path(raw["out"]) if raw.get("out") else None,
                     name=str(raw.get("name") or path.stem), slurm=dict(slurm), workers=workers,
                     stale_after_s=raw.get("stale_after_s"), ddp=ddp)


# ---------------------------------------------------------------------------------------------- expansion


def _assignments(spec: SweepSpec) -> list[dict[str, Any]]:
    """Every run's dotted-key assignment: axes (product) x zip entries x seeds, in that nesting order."""
    grid = [dict(zip(spec.axes, values)) for values in itertools.product(*spec.axes.values())]
    zipped = spec.zip or [{}]
    seeds = [{"train.seed": s} for s in spec.seeds] if spec.seeds is not None else [{}]
    return [{**g, **z, **s} for g in grid for z in zipped for s in seeds]


def _as_override(key: str, value: Any) -> str:
    # JSON is YAML: null, true, numbers, quoted strings and lists read back exactly as written in the spec
    return f"{key}={json.dumps(value, default=str)}"


def _lookup(config: dict[str, Any], key: str) -> tuple[bool, Any]:
    node: Any = config
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return False, None
        node = node[part]
    return True, node


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return float(a) == float(b)
    return a == b or str(a) == str(b)


def _excluded(spec: SweepSpec, assignment: dict[str, Any], config: dict[str, Any]) -> bool:
    for entry in spec.exclude:
        matches = True
        for key, want in entry.items():
            if key in assignment:
                got = assignment[key]
            else:
                found, got = _lookup(config, key)
                if not found:
                    raise _fail(spec.path, f"exclude key '{key}' is not a config key (e.g. train.loss)")
            matches = matches and _same(got, want)
        if matches:
            return True
    return False


def _matches(when: dict[str, Any], raw: dict[str, Any], defaults: dict[str, Any]) -> bool | str:
    """Whether a rule's ``when`` holds for a run; the first unknown key (a string) when one is not a config key."""
    for key, want in when.items():
        found, got = _lookup(raw, key)
        if not found:
            found, got = _lookup(defaults, key)
        if not found:
            return key
        wanted = want if isinstance(want, list) else [want]
        if not any(_same(got, w) for w in wanted):
            return False
    return True


def _apply_rules(spec: SweepSpec, raw: dict[str, Any], label: str) -> dict[str, Any]:
    """The run's raw config with every matching rule applied, in order (a later rule wins)."""
    if not spec.rules:
        return raw
    try:
        defaults = config_to_dict(config_from_dict(raw))
    except ConfigError as err:
        raise _fail(spec.path, f"run {label}: {err}") from None
    for i, rule in enumerate(spec.rules):
        match = _matches(rule.when, raw, defaults)
        if isinstance(match, str):
            raise _fail(spec.path, f"rule {i + 1}: 'when' key '{match}' is not a config key (e.g. model.name)")
        if match:
            try:
                raw = apply_overrides(raw, [_as_override(k, v) for k, v in rule.set.items()])
            except ConfigError as err:
                raise _fail(spec.path, f"rule {i + 1}: {err}") from None
    return raw


def expand_runs(spec: SweepSpec) -> list[PlannedRun]:
    """The runs of ``spec`` in grid order, excluded ones dropped, duplicates (same resolved config) kept once."""
    base = read_yaml(spec.base)
    try:
        common = apply_overrides(base, [_as_override(k, v) for k, v in spec.overrides.items()])
    except ConfigError as err:
        raise _fail(spec.path, f"overrides: {err}") from None
    runs: dict[str, PlannedRun] = {}
    for assignment in _assignments(spec):
        label = ", ".join(f"{k}={v}" for k, v in assignment.items()) or "the base config"
        try:
            raw = apply_overrides(common, [_as_override(k, v) for k, v in assignment.items()])
        except ConfigError as err:
            raise _fail(spec.path, f"run {label}: {err}") from None
        raw = _apply_rules(spec, raw, label)
        try:
            cfg = config_from_dict(raw)
        except ConfigError as err:
            raise _fail(spec.path, f"run {label}: {err}") from None
        resolved = config_to_dict(cfg)
        if _excluded(spec, assignment, resolved):
            continue
        rid = run_id(resolved)
        runs.setdefault(rid, PlannedRun(rid, cfg, assignment))
    if not runs:
        raise _fail(spec.path, "every run is excluded: loosen 'exclude'")
    return list(runs.values())


def run_output(run: PlannedRun, out: Path, spec: SweepSpec,
               trackers: Iterable[Tracker] | None = None) -> dict[str, Any]:
    """A run's resolved config as the sweep trains it: its folder under ``out``, its tracker runs grouped under the
    sweep's name (``output.experiment``: the MLflow experiment, the W&B group; unless the spec sets one), and
    ``--tracker`` over the spec's trackers. None of it is part of the run id."""
    config = config_to_dict(run.config)
    output = config["output"]
    output["dir"] = str(out)
    output["experiment"] = output.get("experiment") or spec.name
    if trackers:
        output["trackers"] = [Tracker(t).value for t in dict.fromkeys(trackers)]
    return config
