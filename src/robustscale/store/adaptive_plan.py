"""The plan of an adaptive sweep, kept in its output folder (``adaptive_plan.json``) so that a rerun continues it.

An adaptive sweep (:mod:`robustscale.sweep.adaptive`) trains the runs of a spec in rounds chosen by a strategy. Each
round's choice is written here, atomically, *before* any of its runs starts; what the round cost and the law fitted
after it are added when it ends. A rerun after a kill therefore replays the recorded rounds as they were chosen (a
round whose runs were interrupted is finished with the same runs) and only then asks the strategy for new ones: a
strategy asked again after a partial round would see different finished runs and could choose differently.

The file also tells the results table which runs the strategy chose and in which round (:func:`chosen_rounds`). An
``flock`` on ``.adaptive.lock`` (:func:`plan_lock`) keeps two adaptive sweeps from planning one folder at once; the
kernel releases it when its holder dies.
"""

from __future__ import annotations

import contextlib
import math
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Collection, Iterator

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: no guard against two planners on one folder
    fcntl = None

from robustscale.config_checks import MAX_BINS, MAX_SEED
from robustscale.errors import UserError, shown
from robustscale.store.atomic import write_json
from robustscale.store.record import now
from robustscale.store.safe_json import read_json

__all__ = ["PLAN", "PLAN_LOCK", "PLAN_SCHEMA", "AdaptivePlan", "PlanRound", "PlanError", "read_plan", "write_plan",
           "plan_lock", "chosen_rounds"]

PLAN = "adaptive_plan.json"
PLAN_LOCK = ".adaptive.lock"
PLAN_SCHEMA = 1
MAX_PLAN_BYTES = 16 << 20  # a plan lists run ids: the paper's 320-run grid is 30 KiB
MAX_TEXT_CHARS = 1000  # a run id, a strategy's name, a time stamp


@dataclass
class PlanRound:
    """One round: the runs chosen (in the strategy's order) and, once they ended, what the sweep had spent and the
    law fitted on every run chosen so far (None: not ended yet, or no law yet)."""

    round: int
    run_ids: list[str]
    chosen: str | None = None  # when the strategy chose them (ISO time)
    planned_flops: float | None = None  # the round's planned train FLOPs
    ended: str | None = None
    spent_flops: float | None = None  # cumulative, every round so far
    spent_gpu_hours: float | None = None  # cumulative
    alpha: float | None = None
    alpha_ci: list[float] | None = None
    law_points: int | None = None


_ROUND_FIELDS = {f.name for f in fields(PlanRound)}


@dataclass
class AdaptivePlan:
    """The whole plan: how the runs are chosen (fixed for the folder) and the rounds so far."""

    strategy: str
    seed: int
    metric: str
    bins: int
    rounds: list[PlanRound] = field(default_factory=list)
    spec: str | None = None
    stop_reason: str | None = None  # why the last call stopped (a rerun may go on, e.g. with a larger budget)
    created: str | None = field(default_factory=now)
    schema: int = PLAN_SCHEMA

    def chosen_ids(self) -> list[str]:
        return [rid for r in self.rounds for rid in r.run_ids]

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "rounds": [asdict(r) for r in self.rounds]}

    @classmethod
    def from_dict(cls, raw: Any) -> "AdaptivePlan":
        """A plan from the file's JSON, every key checked; :class:`PlanError` naming the first bad key."""
        if not isinstance(raw, dict):
            raise PlanError("(top level)", "not a JSON object")
        if raw.get("schema") != PLAN_SCHEMA:
            raise PlanError("schema", f"{_shown(raw.get('schema'))} is not {PLAN_SCHEMA}")
        strategy, metric = (_text(raw.get(k), k, optional=False) for k in ("strategy", "metric"))
        seed = _integer(raw.get("seed"), "seed", 0, MAX_SEED)
        bins = _integer(raw.get("bins"), "bins", 2, MAX_BINS)
        if not isinstance(raw.get("rounds"), list):
            raise PlanError("rounds", "not a list of rounds")
        rounds = [_round(entry, number) for number, entry in enumerate(raw["rounds"], 1)]
        _no_run_twice(rounds)
        spec, stop, created = (_text(raw.get(k), k) for k in ("spec", "stop_reason", "created"))
        return cls(strategy, seed, metric, bins, rounds=rounds, spec=spec, stop_reason=stop, created=created)


class PlanError(ValueError):
    """A plan file's content is not a plan: ``key`` says where (``rounds[2].run_ids``)."""

    def __init__(self, key: str, why: str):
        self.key = key
        super().__init__(f"key '{key}': {why}")


def _shown(value: Any) -> str:
    return shown(repr(value), 40)


def _integer(value: Any, key: str, low: int, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low or high is not None and value > high:
        limit = f"from {low} to {high}" if high is not None else f"of at least {low}"
        raise PlanError(key, f"{_shown(value)} is not an integer {limit}")
    return value


def _text(value: Any, key: str, optional: bool = True) -> str | None:
    if value is None and optional:
        return None
    if not isinstance(value, str) or len(value) > MAX_TEXT_CHARS:
        raise PlanError(key, f"{_shown(value)} is not a string{' or null' if optional else ''}")
    return value


def _number(value: Any, key: str, low: float | None = None) -> float | None:
    """A finite number (at least ``low``) or None."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or low is not None and value < low:
        raise PlanError(key, f"{_shown(value)} is not a finite number{f' >= {low:g}' if low is not None else ''} or "
                             "null")
    return float(value)


def _round(raw: Any, number: int) -> PlanRound:
    """Round ``number`` of the file (1-based), every field checked."""
    where = f"rounds[{number - 1}]"
    if not isinstance(raw, dict):
        raise PlanError(where, "not a JSON object")
    unknown = sorted(set(raw) - _ROUND_FIELDS)
    if unknown:
        raise PlanError(f"{where}.{shown(unknown[0], 40)}", "not a key of a round")
    if raw.get("round") != number or isinstance(raw.get("round"), bool):
        raise PlanError(f"{where}.round", f"{_shown(raw.get('round'))} is not {number} (rounds are numbered in order)")
    ids = raw.get("run_ids")
    if not isinstance(ids, list) or not ids:
        raise PlanError(f"{where}.run_ids", "not a non-empty list of run ids")
    for i, rid in enumerate(ids):
        if not isinstance(rid, str) or not rid or len(rid) > MAX_TEXT_CHARS:
            raise PlanError(f"{where}.run_ids[{i}]", f"{_shown(rid)} is not a run id")
    ci = raw.get("alpha_ci")
    if ci is not None and not (isinstance(ci, list) and len(ci) == 2):
        raise PlanError(f"{where}.alpha_ci", "not a [low, high] pair or null")
    law_points = raw.get("law_points")
    return PlanRound(
        number, list(ids), chosen=_text(raw.get("chosen"), f"{where}.chosen"),
        planned_flops=_number(raw.get("planned_flops"), f"{where}.planned_flops", 0.0),
        ended=_text(raw.get("ended"), f"{where}.ended"),
        spent_flops=_number(raw.get("spent_flops"), f"{where}.spent_flops", 0.0),
        spent_gpu_hours=_number(raw.get("spent_gpu_hours"), f"{where}.spent_gpu_hours", 0.0),
        alpha=_number(raw.get("alpha"), f"{where}.alpha"),
        alpha_ci=None if ci is None else [_number(c, f"{where}.alpha_ci[{i}]") for i, c in enumerate(ci)],
        law_points=None if law_points is None else _integer(law_points, f"{where}.law_points", 0))


def _no_run_twice(rounds: list[PlanRound]) -> None:
    """A run is chosen once: a run id listed twice would be counted twice (its FLOPs, its share of the grid)."""
    first: dict[str, int] = {}
    for entry in rounds:
        for i, rid in enumerate(entry.run_ids):
            if rid in first:
                raise PlanError(f"rounds[{entry.round - 1}].run_ids[{i}]", f"run {shown(rid, 80)} is already chosen "
                                f"in round {first[rid]}; a run is chosen once")
            first[rid] = entry.round


def read_plan(out: str | Path, *, strategies: Collection[str] | None = None,
              metrics: Collection[str] | None = None) -> AdaptivePlan | None:
    """The plan in sweep folder ``out``, or None when it has none.

    Args:
        out: the sweep folder.
        strategies, metrics: the names the plan's ``strategy`` and ``metric`` must be among (the sweep passes its
            registries; the results table, which only shows the strategy's name, passes none).

    Raises:
        UserError: the file exists but is not a plan (damaged or hand-edited, a link, a FIFO, too large or too deep):
            one line naming it and the key.
    """
    path = Path(out) / PLAN
    try:
        plan = AdaptivePlan.from_dict(read_json(path, max_bytes=MAX_PLAN_BYTES))
        for key, names in (("strategy", strategies), ("metric", metrics)):
            if names is not None and getattr(plan, key) not in names:
                raise PlanError(key, f"{_shown(getattr(plan, key))} is not one of {', '.join(names)}")
        return plan
    except FileNotFoundError:
        return None
    except ValueError as err:  # PlanError, or safe_json's JsonFileError (which names the file itself)
        why = str(err) if isinstance(err, PlanError) else str(err).replace(f"'{shown(path)}' ", "", 1)
        raise UserError(f"adaptive plan '{shown(path)}' is damaged ({shown(why, 160)}): restore it, or start the "
                        "sweep in a new --out") from None


def write_plan(out: str | Path, plan: AdaptivePlan) -> Path:
    """Write the plan atomically (temp file, fsync, rename): a kill leaves the previous plan or this one."""
    return write_json(Path(out) / PLAN, plan.to_dict())


@contextlib.contextmanager
def plan_lock(out: str | Path) -> Iterator[None]:
    """Hold the folder's planning lock for the duration; one line when another adaptive sweep holds it."""
    if fcntl is None:  # pragma: no cover
        yield
        return
    fd = os.open(Path(out) / PLAN_LOCK, os.O_CREAT | os.O_RDWR | getattr(os, "O_NOFOLLOW", 0), 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UserError(f"another adaptive sweep is planning '{shown(out)}' (it holds {PLAN_LOCK}): wait for it, "
                            "or use another --out") from None
        except OSError:  # a file system without flock: no guard
            pass
        yield
    finally:
        os.close(fd)


def chosen_rounds(out: str | Path) -> tuple[str, dict[str, int]] | None:
    """``(strategy, {run_id: round})`` of the adaptive sweep in ``out``, or None when ``out`` holds no plan."""
    plan = read_plan(out)
    if plan is None:
        return None
    return plan.strategy, {rid: r.round for r in plan.rounds for rid in r.run_ids}
