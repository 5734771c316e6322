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
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: no guard against two planners on one folder
    fcntl = None

from robustscale.errors import UserError, shown
from robustscale.store.atomic import write_json
from robustscale.store.record import now

__all__ = ["PLAN", "PLAN_LOCK", "PLAN_SCHEMA", "AdaptivePlan", "PlanRound", "read_plan", "write_plan", "plan_lock",
           "chosen_rounds"]

PLAN = "adaptive_plan.json"
PLAN_LOCK = ".adaptive.lock"
PLAN_SCHEMA = 1


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
        """A plan from the file's JSON; ``ValueError``/``TypeError``/``KeyError`` when it is not one."""
        if not isinstance(raw, dict) or raw.get("schema") != PLAN_SCHEMA:
            raise ValueError(f"not a schema-{PLAN_SCHEMA} plan")
        rounds = [PlanRound(**r) for r in raw["rounds"]]
        for number, entry in enumerate(rounds, 1):
            if entry.round != number or not entry.run_ids or not all(isinstance(i, str) for i in entry.run_ids):
                raise ValueError(f"round {number} is not round {number} with a list of run ids")
        fields = {k: raw[k] for k in ("strategy", "seed", "metric", "bins")}
        if not isinstance(fields["strategy"], str) or not isinstance(fields["metric"], str):
            raise TypeError("strategy and metric must be strings")
        return cls(**fields, rounds=rounds, spec=raw.get("spec"), stop_reason=raw.get("stop_reason"),
                   created=raw.get("created"))


def read_plan(out: str | Path) -> AdaptivePlan | None:
    """The plan in sweep folder ``out``, or None when it has none.

    Raises:
        UserError: the file exists but is not a plan (damaged or hand-edited): one line naming it.
    """
    path = Path(out) / PLAN
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    try:
        return AdaptivePlan.from_dict(json.loads(data))  # bytes: a file that is not UTF-8 is a ValueError here
    except (ValueError, TypeError, KeyError) as err:
        why = shown(str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__, 80)
        raise UserError(f"adaptive plan '{shown(path)}' is damaged ({why}): restore it, or start the sweep in a new "
                        "--out") from None


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
