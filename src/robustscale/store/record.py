"""The run record: one ``record.json`` per run, the only thing sweeps and analysis read, as one typed object.

:class:`RunRecord` (schema 2) holds ``run_id``, ``status`` (pending|running|done|failed), ``reason`` (one line, for
failed runs), ``config`` (resolved, as a plain dict), :class:`Metrics` (accuracies as fractions, the best epoch),
``evaluations`` (attack results), ``params``, ``epochs_run``, :class:`Accounting` (FLOPs, samples seen, time,
energy, cost, CO2), ``versions`` (robustscale, torch, timm, python), :class:`Hardware` (the GPUs the run used and the
host), ``stopped_early`` and ``alarms`` (what the loop's stop rules saw: :class:`Alarm`) and
``created``/``updated`` (UTC ISO-8601). Each fact is stated once: ``samples_seen`` and ``wall_s`` live in
the accounting (they are the scope of its FLOPs and energy), ``hardware`` at the top.

Schema 1 (before robustscale 0.1's layering pass) also wrote ``samples_seen`` and ``wall_s`` at the top level and a
second ``hardware`` inside ``accounting`` (whose ``gpu_count`` was the GPUs used, the top level's the GPUs visible);
:meth:`RunRecord.from_dict` migrates such a record on read. Written atomically: a reader sees the previous record or
the next one, never half of one. Keys added to schema 2 since (``stopped_early``, ``alarms``, new metrics) are
optional: a record written before them reads as none.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import platform
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timezone
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Any, Mapping

from robustscale._version import __version__
from robustscale.config import Config, config_to_dict
from robustscale.enums import Status, StopReason
from robustscale.errors import UserError
from robustscale.store.atomic import write_json
from robustscale.store.safe_json import read_json
from robustscale.store.safe_paths import safe_component

__all__ = ["SCHEMA_VERSION", "RECORD", "Status", "RunRecord", "Metrics", "Accounting", "Hardware", "Alarm",
           "RecordError", "run_id", "recipe_id", "new_record", "failed_record", "read_record", "read_record_json",
           "write_record", "mark_failed_if_running", "record_problems", "versions", "now"]

log = logging.getLogger(__name__)

SCHEMA_VERSION = 2
RECORD = "record.json"


class RecordError(ValueError):
    """A record.json whose structure is not a record's (a section that is not an object, an unknown status)."""


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@lru_cache(maxsize=1)
def versions() -> dict[str, str]:
    """The software a record was written with, read from the installed packages' metadata (nothing is imported)."""
    def installed(name: str) -> str:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return "unknown"

    return {"robustscale": __version__, "torch": installed("torch"), "timm": installed("timm"),
            "python": platform.python_version()}


# ---------------------------------------------------------------------------------------------- ids


# The config keys of run-id scheme 1 (robustscale 0.1, as of the paper-grid fidelity pass): always part of a run's
# identity. A key added since joins it only when set to something other than its default, so a new knob leaves every
# existing run's id, and so its folder, as it was: a sweep resumed after an upgrade finds its finished runs.
_SCHEME1_KEYS = frozenset(f"{section}.{key}" for section, keys in {
    "data": "dataset root download batch_size val_size val_source augment image_size synthetic",
    "data.synthetic": "path fraction",
    "model": "name act_layer kwargs",
    "attack": "norm eps steps step_size step_size_factor random_start trades_start bn_mode",
    "train": "loss beta epochs lr lr_base_size momentum nesterov weight_decay decay_bn_and_bias schedule warmup_epochs "
             "warmup_lr min_lr cooldown_epochs milestones label_smoothing cutmix ema ema_decay ema_warmup precision "
             "channels_last compile sync_bn grad_clip seed checkpoint_every max_steps",
    "eval": "pgd_steps pgd_every pgd_step_size_factor pgd_loss autoattack autoattack_n batch_size",
    "accounting": "pue price_per_kwh carbon_g_per_kwh region gpu_hour_usd power_sample_s",
}.items() for key in keys.split())
_SCHEME1_SECTIONS = frozenset({"data", "data.synthetic", "model", "attack", "train", "eval", "accounting"})
_ABSENT = object()


@lru_cache(maxsize=1)
def _defaults() -> dict[str, Any]:
    return config_to_dict(Config())


def _without_new_defaults(tree: dict[str, Any], defaults: Any, prefix: str) -> dict[str, Any]:
    out = {}
    for key, value in tree.items():
        path, default = f"{prefix}{key}", defaults.get(key, _ABSENT) if isinstance(defaults, dict) else _ABSENT
        if isinstance(value, dict) and path != "model.kwargs":
            section = _without_new_defaults(value, default, path + ".")
            if section or path in _SCHEME1_SECTIONS:  # a new section left at its defaults leaves no trace
                out[key] = section
        elif path in _SCHEME1_KEYS or value != default:
            out[key] = value
    return out


def _identity(config: dict[str, Any]) -> dict[str, Any]:
    """The part of a resolved config that defines *what* is trained (not where it is written): every key of scheme
    1, and any later key set away from its default."""
    return _without_new_defaults({k: v for k, v in config.items() if k != "output"}, _defaults(), "")


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


# ---------------------------------------------------------------------------------------------- the parts


@dataclass
class Metrics:
    """What the run measured; accuracies are fractions. None: not measured (yet)."""

    pgd40_acc: float | None = None  # PGD-40 on the validation subset at the best epoch: the early-stopping metric
    val_clean_acc: float | None = None  # clean accuracy on the validation subset at the best epoch
    best_epoch: int | None = None
    clean_acc: float | None = None  # the best checkpoint on the whole test split
    autoattack_acc: float | None = None  # AutoAttack on eval.autoattack_n test points
    autoattack_clean_acc: float | None = None  # clean accuracy on those points
    adv_loss: float | None = None  # mean cross-entropy at PGD examples of those points (the N-D law's loss)
    adv_margin: float | None = None  # mean CW margin there: best wrong logit minus the true one


@dataclass
class Alarm:
    """What a stop rule of the training loop saw (``robustscale.training.collapse``), at the validation it fired.

    Accuracies are fractions on the validation subset (PGD-40) and the epoch's training batches (the training
    attack); ``best_*`` are the values at the validation with the best PGD-40 accuracy so far.
    """

    reason: StopReason
    epoch: int  # epochs completed when it fired
    best_epoch: int | None = None
    val_pgd_acc: float | None = None
    best_val_pgd_acc: float | None = None
    train_adv_acc: float | None = None
    best_train_adv_acc: float | None = None
    validations_since_best: int | None = None  # train.patience: validations without a better checkpoint

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "reason": self.reason.value}

    @classmethod
    def from_dict(cls, raw: Any) -> "Alarm":
        """An alarm from its JSON (``record.json``, a checkpoint's progress); a structure that is not one is a
        :class:`RecordError`."""
        if not isinstance(raw, dict):
            raise RecordError(f"an alarm is a {type(raw).__name__}, not an object")
        try:
            reason = StopReason(raw.get("reason"))
        except (ValueError, TypeError):
            raise RecordError(f"an alarm's reason is {str(raw.get('reason'))[:40]!r}, not one of "
                              f"{', '.join(r.value for r in StopReason)}") from None
        if "epoch" not in raw:
            raise RecordError("an alarm has no 'epoch'")
        return _known(cls, {**raw, "reason": reason})


@dataclass
class Hardware:
    """The machines a run used: the GPUs it trained on (their metered names when known), its DDP layout, and the
    host of rank 0."""

    gpu_name: str | None = None
    gpus: list[str] = field(default_factory=list)  # each rank's GPU, in rank order
    gpu_count: int = 0  # GPUs the run used, over all ranks (0 on CPU): gpu_hours = wall_s x gpu_count / 3600
    cpu: str | None = None
    cpu_count: int | None = None
    platform: str | None = None
    world_size: int = 1  # DDP processes (ranks) the run trained on
    nodes: int = 1  # machines they ran on


@dataclass
class Accounting:
    """FLOPs, time, energy, cost and CO2 of a run (``robustscale.accounting.run``; the notes say the scopes).

    ``wall_s``, ``metered_s``, ``train_flops``, ``energy_kwh``, ``cost_usd`` and ``co2_kg`` cover the training steps;
    ``eval_*`` PGD validation and the final evaluation; ``total_*`` everything metered. Energy is after PUE unless
    the name ends in ``_it`` (IT energy, as metered).
    """

    train_flops: int | None = None
    attack_flops: int | None = None
    update_flops: int | None = None
    eval_flops: int | None = None
    val_flops: int | None = None
    final_eval_flops: int | None = None
    flops_per_sample: int | None = None
    paper_convention_flops: int | None = None
    samples_seen: int = 0  # training samples processed, over all ranks (the N-D law's D)
    unique_images: int | None = None  # distinct training images among them, real + synthetic
    unique_synthetic_images: int | None = None  # of which synthetic
    eval_samples: int | None = None
    flops_note: str | None = None
    scope_note: str | None = None
    gpu_hours: float | None = None
    wall_s: float = 0.0  # training wall time (the scope of train_flops and energy_kwh)
    metered_s: float | None = None
    eval_wall_s: float | None = None
    eval_metered_s: float | None = None
    eval_energy_kwh: float | None = None
    eval_energy_kwh_it: float | None = None
    eval_cost_usd: float | None = None
    eval_co2_kg: float | None = None
    total_metered_s: float | None = None
    total_energy_kwh: float | None = None
    total_energy_kwh_it: float | None = None
    total_cost_usd: float | None = None
    total_co2_kg: float | None = None
    energy_kwh: float | None = None
    energy_kwh_it: float | None = None
    energy_kwh_gpu: float | None = None
    energy_kwh_cpu: float | None = None
    energy_estimated: bool | None = None
    energy_gpu_estimated: bool | None = None
    energy_cpu_estimated: bool | None = None
    energy_sources: dict[str, str] = field(default_factory=dict)
    energy_warnings: list[str] = field(default_factory=list)
    mean_power_w: float | None = None
    pue: float | None = None
    price_per_kwh: float | None = None
    carbon_g_per_kwh: float | None = None
    region: str | None = None
    cost_source: str | None = None
    cost_usd: float | None = None
    co2_kg: float | None = None
    gpu_hour_usd: float | None = None
    cloud_cost_usd: float | None = None


def _known(cls: type, values: Mapping[str, Any]) -> Any:
    """``cls`` from the keys of ``values`` it has (a newer record's extra keys are left out)."""
    names = {f.name for f in fields(cls)}
    return cls(**{k: v for k, v in values.items() if k in names})


# ---------------------------------------------------------------------------------------------- the record


@dataclass
class RunRecord:
    """One run's record; :meth:`to_dict` is ``record.json``, :meth:`from_dict` reads it back (any schema)."""

    run_id: str
    config: dict[str, Any]
    status: Status = Status.pending
    reason: str | None = None
    metrics: Metrics = field(default_factory=Metrics)
    evaluations: dict[str, Any] = field(default_factory=dict)
    params: int | None = None
    epochs_run: int = 0
    # the per-channel (x - mean) / std the model applied (data.mean / data.std, or the dataset's statistics)
    normalization: dict[str, list[float]] | None = None
    # the content key of the synthetic set it trained on (data.synthetic.path; robustscale.data.synthetic.content_key):
    # the path is part of the run id, the file's content is not, so this is what tells another file at that path
    synthetic_key: str | None = None
    accounting: Accounting = field(default_factory=Accounting)
    versions: dict[str, str] = field(default_factory=versions)
    hardware: Hardware = field(default_factory=Hardware)
    stopped_early: Alarm | None = None  # training ended before train.epochs on this alarm (status still done)
    alarms: list[Alarm] = field(default_factory=list)  # the alarms it trained on past (train.on_collapse: warn)
    created: str | None = field(default_factory=now)
    updated: str | None = None
    schema: int = SCHEMA_VERSION

    @classmethod
    def new(cls, config: dict[str, Any], status: Status = Status.pending) -> "RunRecord":
        """The record of a run not trained yet (its id derived from the resolved ``config``)."""
        record = cls(run_id(config), config, status)
        record.updated = record.created
        return record

    def to_dict(self) -> dict[str, Any]:
        """``record.json``'s content (plain JSON types)."""
        return {"schema": self.schema, "run_id": self.run_id, "status": self.status.value, "reason": self.reason,
                "config": self.config, "metrics": asdict(self.metrics), "evaluations": self.evaluations,
                "params": self.params, "epochs_run": self.epochs_run, "normalization": self.normalization,
                "synthetic_key": self.synthetic_key,
                "accounting": asdict(self.accounting), "versions": self.versions, "hardware": asdict(self.hardware),
                "stopped_early": self.stopped_early.to_dict() if self.stopped_early is not None else None,
                "alarms": [a.to_dict() for a in self.alarms], "created": self.created, "updated": self.updated}

    @classmethod
    def from_dict(cls, raw: Any) -> "RunRecord":
        """A record from ``record.json``'s content, schema 1 migrated. Values are taken as written (the results
        table checks their types); a structure that is not a record's is a :class:`RecordError`.
        """
        if not isinstance(raw, dict):
            raise RecordError(f"not a JSON object but a {type(raw).__name__}")
        raw = _migrate(raw)
        for name in ("config", "metrics", "evaluations", "accounting", "hardware", "versions", "normalization"):
            if raw.get(name) is not None and not isinstance(raw[name], dict):
                raise RecordError(f"'{name}' is a {type(raw[name]).__name__}, not an object")
        try:
            status = Status(raw.get("status", Status.pending.value))
        except (ValueError, TypeError):
            raise RecordError(f"'status' is {str(raw.get('status'))[:40]!r}, not one of "
                              f"{', '.join(s.value for s in Status)}") from None
        return cls(run_id=raw.get("run_id"), config=raw.get("config") or {}, status=status, reason=raw.get("reason"),
                   metrics=_known(Metrics, raw.get("metrics") or {}), evaluations=raw.get("evaluations") or {},
                   params=raw.get("params"), epochs_run=raw.get("epochs_run", 0),
                   normalization=raw.get("normalization"), synthetic_key=raw.get("synthetic_key"),
                   accounting=_known(Accounting, raw.get("accounting") or {}),
                   versions=raw.get("versions") or {}, hardware=_known(Hardware, raw.get("hardware") or {}),
                   stopped_early=Alarm.from_dict(raw["stopped_early"]) if raw.get("stopped_early") else None,
                   alarms=[Alarm.from_dict(a) for a in _list(raw, "alarms")],
                   created=raw.get("created"), updated=raw.get("updated"))

    def failed(self, reason: object) -> "RunRecord":
        """This record marked failed with a one-line ``reason`` (what training got to write is kept)."""
        self.status, self.reason = Status.failed, " ".join(str(reason).split()) or "unknown error"
        return self


def _list(raw: dict[str, Any], name: str) -> list[Any]:
    value = raw.get(name) or []
    if not isinstance(value, list):
        raise RecordError(f"'{name}' is a {type(value).__name__}, not a list")
    return value


def _migrate(raw: dict[str, Any]) -> dict[str, Any]:
    """Schema 1 -> 2: ``samples_seen`` and ``wall_s`` move into ``accounting`` (where schema 1 also had them once
    the run ended), and ``accounting.hardware`` (the GPUs the run used) becomes the top-level ``hardware`` (whose
    ``gpu_count`` counted the GPUs visible)."""
    if raw.get("schema", 1) != 1:
        return raw
    raw = dict(raw, schema=SCHEMA_VERSION)
    accounting = dict(raw["accounting"]) if isinstance(raw.get("accounting"), dict) else raw.get("accounting")
    for key in ("samples_seen", "wall_s"):
        if key in raw:
            value = raw.pop(key)
            if isinstance(accounting, dict):
                accounting.setdefault(key, value)
    if isinstance(accounting, dict) and "hardware" in accounting:
        used = accounting.pop("hardware")
        visible = raw.get("hardware") if isinstance(raw.get("hardware"), dict) else {}
        raw["hardware"] = {**visible, **used} if isinstance(used, dict) else visible
    if accounting is not None:
        raw["accounting"] = accounting
    return raw


def new_record(config: dict[str, Any], status: Status = Status.pending) -> RunRecord:
    """:meth:`RunRecord.new`."""
    return RunRecord.new(config, status)


def failed_record(config: dict[str, Any], reason: object, previous: RunRecord | None = None) -> RunRecord:
    """``previous`` (what training got to write, if anything) marked failed with a one-line ``reason``."""
    return (previous or RunRecord.new(config)).failed(reason)


# ---------------------------------------------------------------------------------------------- on disk


def read_record_json(run_dir: str | Path) -> Any:
    """The JSON in a run folder's record.json as written, or None when there is none or it is not JSON a reader may
    take (a link, a FIFO, too large or too deep: :mod:`robustscale.store.safe_json`)."""
    try:
        return read_json(Path(run_dir) / RECORD)
    except (OSError, ValueError):  # JsonFileError is a ValueError
        return None


def read_record(run_dir: str | Path) -> RunRecord | None:
    """The record of a run folder, or None when there is none or it is unreadable or not a record."""
    raw = read_record_json(run_dir)
    try:
        return RunRecord.from_dict(raw) if raw is not None else None
    except RecordError:
        return None


def write_record(run_dir: str | Path, record: RunRecord) -> Path:
    """Write the record atomically. On a full disk (no room for the temp file) the record is rewritten in place
    when the new text fits in the blocks the old one already holds, so a run that stops on a full disk can still
    say ``failed`` instead of staying ``running``."""
    record.updated = now()
    path = Path(run_dir) / RECORD
    data = record.to_dict()
    try:
        return write_json(path, data)
    except OSError as err:
        if err.errno not in (errno.ENOSPC, errno.EDQUOT) or not _overwrite_in_place(path, data):
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
    if record is None or record.status is not Status.running:
        return
    message = str(err).strip().splitlines()[0] if str(err).strip() else ""
    reason = message if isinstance(err, UserError) else f"{type(err).__name__}: {message}".rstrip(": ")
    try:
        write_record(run_dir, record.failed(reason))
    except Exception as write_err:  # noqa: BLE001 - reporting the first error matters more
        log.warning("could not mark %s failed (%s)", run_dir, write_err)


REQUIRED_KEYS = ("schema", "run_id", "status", "reason", "config", "metrics", "evaluations", "params", "epochs_run",
                 "accounting", "versions", "hardware", "created", "updated")


def record_problems(record: Any) -> list[str]:
    """What is wrong with a record (empty when it is intact): missing keys, unknown status, a done run without
    metrics, an id that does not match its config, a fact stated twice. Sweeps and tests use it to check that nothing
    was half-written. Takes ``record.json``'s content or a :class:`RunRecord`."""
    if isinstance(record, RunRecord):
        record = record.to_dict()
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
    accounting = record.get("accounting")
    if isinstance(accounting, dict):
        problems += [f"'{k}' both at the top level and in accounting" for k in accounting if k in record]
    metrics = record.get("metrics")
    if record.get("status") == Status.done.value and not (isinstance(metrics, dict) and any(
            v is not None for v in metrics.values())):
        problems.append("done without metrics")
    if record.get("status") == Status.failed.value and not record.get("reason"):
        problems.append("failed without a reason")
    return problems
