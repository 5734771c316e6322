"""The run record: one ``record.json`` per run, the only thing sweeps and analysis read.

Schema (``schema: 1``): ``run_id``, ``status`` (pending|running|done|failed), ``reason`` (one line, for failed runs),
``config`` (resolved), ``metrics`` {clean_acc, pgd40_acc, autoattack_acc (fractions), best_epoch, ...},
``evaluations`` (attack results), ``params``, ``epochs_run``, ``samples_seen``, ``wall_s``, ``accounting`` (FLOPs,
energy, cost, CO2), ``versions`` (robustscale, torch, timm, python), ``hardware``, ``created``/``updated`` (UTC
ISO-8601). Written atomically: a reader sees the previous record or the next one, never half of one.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import platform
from datetime import datetime, timezone
from enum import Enum
from pathlib import Path
from typing import Any

from robustscale.errors import UserError
from robustscale.store.atomic import write_json
from robustscale.store.safe_paths import safe_component

__all__ = ["SCHEMA_VERSION", "RECORD", "Status", "run_id", "recipe_id", "new_record", "failed_record", "read_record",
           "write_record", "mark_failed_if_running", "record_problems", "versions", "now"]

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
RECORD = "record.json"
REQUIRED_KEYS = ("schema", "run_id", "status", "reason", "config", "metrics", "evaluations", "params", "epochs_run",
                 "samples_seen", "wall_s", "accounting", "versions", "hardware", "created", "updated")


class Status(str, Enum):
    pending = "pending"  # planned by a sweep, not started
    running = "running"  # started; with no live claim it was interrupted and resumes on the next sweep
    done = "done"
    failed = "failed"  # ``reason`` says why; a sweep retries it only with --retry-failed


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def versions() -> dict[str, str]:
    import timm
    import torch

    from robustscale import __version__

    return {"robustscale": __version__, "torch": torch.__version__, "timm": timm.__version__,
            "python": platform.python_version()}


def _identity(config: dict[str, Any]) -> dict[str, Any]:
    """The part of a resolved config that defines *what* is trained (not where it is written)."""
    return {k: v for k, v in config.items() if k != "output"}


def run_id(config: dict[str, Any]) -> str:
    """Stable id from the resolved config and seed: the same config always maps to the same run folder."""
    digest = hashlib.sha256(json.dumps(_identity(config), sort_keys=True).encode()).hexdigest()[:10]
    m, t = config["model"], config["train"]
    steps = config["attack"]["steps"] if t["loss"] != "standard" else 0
    # the readable part is made safe (the digest keeps ids distinct): a run id names a folder, never a path
    name = safe_component(f"{config['data']['dataset']}-{m['name']}-{t['loss']}{steps}-s{t['seed']}", limit=100)
    return f"{name}-{digest}"


def recipe_id(config: dict[str, Any]) -> str:
    """The run id without the seed: runs whose configs differ only in ``train.seed`` are replicates of one recipe."""
    identity = _identity(config)
    identity["train"] = {k: v for k, v in identity["train"].items() if k != "seed"}
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:10]
    m, t = config["model"], config["train"]
    steps = config["attack"]["steps"] if t["loss"] != "standard" else 0
    return f"{config['data']['dataset']}-{m['name']}-{t['loss']}{steps}-{digest}"


def new_record(config: dict[str, Any], status: Status = Status.pending) -> dict[str, Any]:
    stamp = now()
    return {"schema": SCHEMA_VERSION, "run_id": run_id(config), "status": status.value, "reason": None,
            "config": config, "metrics": {}, "evaluations": {}, "params": None, "epochs_run": 0, "samples_seen": 0,
            "wall_s": 0.0, "accounting": {}, "versions": versions(), "hardware": {}, "created": stamp,
            "updated": stamp}


def failed_record(config: dict[str, Any], reason: str, previous: dict[str, Any] | None = None) -> dict[str, Any]:
    """``previous`` (what training got to write, if anything) marked failed with a one-line ``reason``."""
    record = dict(previous) if previous else new_record(config)
    record.update(status=Status.failed.value, reason=" ".join(str(reason).split()) or "unknown error")
    return record


def read_record(run_dir: str | Path) -> dict[str, Any] | None:
    """The record of a run folder, or None when there is none (or it is unreadable)."""
    path = Path(run_dir) / RECORD
    try:
        record = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError, RecursionError):  # JSONDecodeError is a ValueError
        return None
    return record if isinstance(record, dict) else None


def write_record(run_dir: str | Path, record: dict[str, Any]) -> Path:
    """Write the record atomically. On a full disk (no room for the temp file) the record is rewritten in place
    when the new text fits in the blocks the old one already holds, so a run that stops on a full disk can still
    say ``failed`` instead of staying ``running``."""
    record["updated"] = now()
    path = Path(run_dir) / RECORD
    try:
        return write_json(path, record)
    except OSError as err:
        if err.errno not in (errno.ENOSPC, errno.EDQUOT) or not _overwrite_in_place(path, record):
            raise
        return path


def _overwrite_in_place(path: Path, record: dict[str, Any]) -> bool:
    """Last resort on a full disk: overwrite the existing file's allocated blocks (no new block is needed), padding
    with spaces (valid JSON). Not atomic: a reader may see a torn record for a moment, which it skips."""
    data = (json.dumps(record, default=str) + "\n").encode()
    try:
        fd = os.open(path, os.O_WRONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError:
        return False
    try:
        info = os.fstat(fd)
        room = max(info.st_size, getattr(info, "st_blocks", 0) * 512)
        if len(data) > room:
            return False
        os.write(fd, data + b" " * max(0, info.st_size - len(data)))
        os.fsync(fd)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


def mark_failed_if_running(run_dir: str | Path, err: BaseException) -> None:
    """After an error stopped a run: a record still saying ``running`` says ``failed`` with a one-line reason.

    Best effort (the error being reported may be the very full disk or lost claim that stops this write too): a
    failure to write is logged, never raised over the original error.
    """
    record = read_record(run_dir)
    if record is None or record.get("status") != Status.running.value:
        return
    message = str(err).strip().splitlines()[0] if str(err).strip() else ""
    reason = message if isinstance(err, UserError) else f"{type(err).__name__}: {message}".rstrip(": ")
    try:
        write_record(run_dir, failed_record(record.get("config") or {}, reason, record))
    except Exception as write_err:  # noqa: BLE001 - reporting the first error matters more
        log.warning("could not mark %s failed (%s)", run_dir, write_err)


def record_problems(record: Any) -> list[str]:
    """What is wrong with a record (empty when it is intact): missing keys, unknown status, a done run without
    metrics, an id that does not match its config. Sweeps and tests use it to check that nothing was half-written."""
    if not isinstance(record, dict):
        return ["not a JSON object"]
    problems = [f"missing key '{k}'" for k in REQUIRED_KEYS if k not in record]
    if record.get("status") not in {s.value for s in Status}:
        problems.append(f"unknown status {record.get('status')!r}")
    config = record.get("config")
    if isinstance(config, dict):
        try:
            if run_id(config) != record.get("run_id"):
                problems.append("run_id does not match the config")
        except (KeyError, TypeError):
            problems.append("config is not a resolved config")
    if record.get("status") == Status.done.value and not record.get("metrics"):
        problems.append("done without metrics")
    if record.get("status") == Status.failed.value and not record.get("reason"):
        problems.append("failed without a reason")
    return problems
