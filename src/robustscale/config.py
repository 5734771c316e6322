"""One typed config tree: YAML in, ``section.key=value`` overrides on the command line, validated once at the edge.

Strings from YAML and the CLI become enums (:mod:`robustscale.enums`) and numbers here; the rest of the package
never re-parses them. Every mistake (unknown key, wrong type, out-of-range value) raises :class:`ConfigError` with one
line naming the key and what is allowed. The resolved config (defaults filled in, dataset defaults applied) is saved
with every run.

This module is the schema only (pydantic and YAML; no torch, no model registry), at the bottom of the layers. The
checks that need timm (the model name exists and builds at the dataset's image size) run in
:mod:`robustscale.training.run_config`, whose ``load_config`` / ``config_from_dict`` are what a run uses.
"""

from __future__ import annotations

import copy
import logging
import re
from fractions import Fraction
from functools import lru_cache
from pathlib import Path
from typing import Any, Optional

import yaml
from pydantic import BaseModel, ConfigDict, Field, JsonValue, ValidationError, field_validator, model_validator

from robustscale.config_checks import MAX_BATCH, MAX_SEED, check_limits, check_model_kwargs
from robustscale.datasets import dataset_info
from robustscale.enums import (Activation, AutoAttackName, AutoAttackVersion, BNMode, Dataset, Loss, Norm, OnCollapse,
                               PGDLoss, Precision, Schedule, StepDivisor, Tracker, TradesStart, ValSource)
from robustscale.errors import ConfigError, one_line, shown
from robustscale.safe_yaml import YamlSyntaxError, load_yaml_text, read_yaml_file

# the enums are re-exported: ``robustscale.config.Loss`` is ``robustscale.enums.Loss``
__all__ = ["Config", "load_config", "apply_overrides", "parse_override", "config_to_yaml", "config_from_dict",
           "config_to_dict", "read_yaml", "parse_number", "Dataset", "Activation", "Norm", "Loss", "Schedule",
           "BNMode", "TradesStart", "ValSource", "Precision", "AutoAttackVersion", "PGDLoss", "StepDivisor",
           "Tracker", "OnCollapse", "pgd_eval_step_size"]

log = logging.getLogger(__name__)


def parse_number(value: Any) -> Any:
    """Accept ``8/255`` (and ``"8/255"``) for eps-like values; leave everything else to pydantic."""
    if isinstance(value, str) and re.fullmatch(r"\s*[0-9.eE+-]+\s*/\s*[0-9.eE+-]+\s*", value):
        num, den = (s.strip() for s in value.split("/"))
        try:
            return float(Fraction(num) / Fraction(den))
        except (ValueError, ZeroDivisionError, OverflowError):
            return value
    return value


_NUMBERS = (int, float, Optional[int], Optional[float])


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, use_enum_values=False, allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _no_booleans_for_numbers(cls, value: Any, info) -> Any:
        """``attack.eps=true`` is a typo, not 1.0 (pydantic's lax mode would read it so)."""
        if isinstance(value, bool) and cls.model_fields[info.field_name].annotation in _NUMBERS:
            raise ValueError(f"a number is needed here, not {str(value).lower()}")
        return value


class SyntheticConfig(_Section):
    path: Optional[Path] = None  # .npz with `image` (uint8 NHWC) and `label`, as the public DDPM/EDM releases
    fraction: float = Field(0.7, ge=0.0, lt=1.0)  # share of every batch drawn from the synthetic set (Gowal et al.)
    n: Optional[int] = Field(None, ge=1)  # use only the first n images of the set: how often each is reused
    # becomes a sweepable axis (Bartoldson et al. 2024 vary unique data at fixed samples seen); null: all of them


class DataConfig(_Section):
    dataset: Dataset = Dataset.digits
    root: Optional[Path] = None  # folder holding the dataset in its distributed format
    download: bool = False  # torchvision download when the machine has network
    batch_size: int = Field(128, ge=1, le=MAX_BATCH)  # global batch: split across DDP ranks
    val_size: int = Field(1024, ge=1)  # points for PGD-40 early stopping, from data.val_source
    val_source: ValSource = ValSource.train  # test: the paper's choice (selects on test points; see README)
    augment: bool = True  # random crop with padding + horizontal flip (no flip for digits)
    image_size: Optional[int] = Field(None, ge=4)  # digits only: 8 (native) or 16 (upsampled)
    # per-channel normalisation inside the model, (x - mean) / std: null is the dataset's own statistics (true std);
    # the paper's code passed CIFAR-10's std as (0.2023, 0.1994, 0.2010) (scripts/job.sh STD)
    mean: Optional[list[float]] = None
    std: Optional[list[float]] = None
    drop_last: bool = False  # true: an epoch is floor(n_train / batch) steps (timm's training loader drops the last
    # partial batch: the paper's code); false: ceil (every image once per epoch)
    synthetic: SyntheticConfig = SyntheticConfig()

    @field_validator("mean", "std")
    @classmethod
    def _three_channels(cls, value: Optional[list[float]], info) -> Optional[list[float]]:
        if value is not None and (len(value) != 3 or (info.field_name == "std" and min(value) <= 0)):
            raise ValueError("three per-channel values (RGB; digits repeat one channel), std > 0, or null for the "
                             "dataset's own statistics")
        return value


class ModelConfig(_Section):
    name: str = "wrn_28_10"  # any timm model name; wrn_D_W for any valid depth/width
    act_layer: Optional[Activation] = Activation.relu  # null: the model's own default
    kwargs: dict[str, JsonValue] = {}  # passed to timm.create_model (e.g. bn_momentum, drop_rate)

    _kwargs = field_validator("kwargs")(check_model_kwargs)


class AttackConfig(_Section):
    norm: Norm = Norm.linf
    eps: Optional[float] = Field(None, ge=0.0)  # pixel units in [0,1]; null: the dataset's default (8/255 for CIFAR)
    steps: int = Field(10, ge=0)  # training attack steps (the paper: 1, 2, 5, 7, 10)
    step_size: Optional[float] = Field(None, ge=0.0)  # null: step_size_factor * eps / steps
    step_size_factor: float = Field(2.5, gt=0.0)  # 2.5: Madry et al.'s rule; 1.5: the paper's code (setup_task.py)
    random_start: bool = True
    trades_start: TradesStart = TradesStart.normal  # where TRADES' KL attack starts when random_start is true
    bn_mode: BNMode = BNMode.train  # BatchNorm during the training attack

    _parse = field_validator("eps", "step_size", mode="before")(parse_number)


class TrainConfig(_Section):
    loss: Loss = Loss.at
    beta: float = Field(6.0, ge=0.0)  # TRADES robustness weight
    epochs: int = Field(100, ge=1)  # epochs trained in all, cool-down included; one epoch = one pass worth of the
    # *original* training set
    lr: float = Field(0.1, gt=0.0)  # peak lr; per train.lr_base_size images of global batch when that is set
    lr_base_size: Optional[int] = Field(None, ge=1)  # set: lr used = lr * data.batch_size / lr_base_size (linear)
    momentum: float = Field(0.9, ge=0.0, lt=1.0)
    nesterov: bool = True
    weight_decay: float = Field(5e-4, ge=0.0)
    decay_bn_and_bias: bool = True  # false: no weight decay on BatchNorm and bias parameters
    schedule: Schedule = Schedule.cosine
    warmup_epochs: float = Field(0.0, ge=0.0)
    warmup_lr: float = Field(0.0, ge=0.0)  # timm_cosine: the lr of the first warm-up epoch (timm's warmup_lr)
    min_lr: float = Field(0.0, ge=0.0)  # cosine schedules decay to it; the cool-down holds it (timm's min_lr)
    cooldown_epochs: int = Field(0, ge=0)  # the last epochs of train.epochs, at train.min_lr (timm's cooldown)
    milestones: Optional[list[int]] = None  # piecewise: 0-based epochs from which the lr is x0.1 (again)
    label_smoothing: float = Field(0.0, ge=0.0, lt=1.0)
    cutmix: float = Field(0.0, ge=0.0)  # CutMix Beta(alpha, alpha) on every batch (timm's --cutmix); 0: off
    ema: bool = False  # evaluate and save an exponential moving average of the weights (Gowal et al.)
    ema_decay: float = Field(0.995, gt=0.0, lt=1.0)
    ema_warmup: bool = True  # decay min(ema_decay, (1+t)/(10+t)); false: ema_decay from the first step (timm)
    at_clean_forward: bool = False  # PGD-AT only: also a forward of the clean batch in train mode, no gradient, so
    # BatchNorm's running statistics see clean and adversarial batches and the clean logits give the train accuracy
    # (the paper's code: src/attacks.py, AdvTrainingLoss.forward); false: adversarial batches only (Madry et al.)
    precision: Precision = Precision.fp32  # autocast for attack and update; evaluation is always fp32
    channels_last: bool = False
    compile: bool = False
    sync_bn: bool = False  # SyncBatchNorm under DDP
    grad_clip: Optional[float] = Field(None, gt=0.0)
    seed: int = Field(0, ge=0, le=MAX_SEED)
    checkpoint_every: int = Field(1, ge=1)  # epochs between checkpoints
    max_steps: Optional[int] = Field(None, ge=1)  # stop after this many optimiser steps (tests, smoke runs)
    # catastrophic overfitting caught while training (training/collapse.py; README "Early stops"): the PGD-40
    # validation accuracy falls to (1 - collapse_drop) of its best or below while the training attack's accuracy
    # stays above (1 - collapse_train_drop) of its value at that best
    on_collapse: OnCollapse = OnCollapse.stop  # stop: end training, evaluate the best checkpoint; warn; ignore
    collapse_drop: float = Field(0.5, gt=0.0, lt=1.0)  # relative; Wong et al.'s early stop: 0.2 absolute at ~0.45;
    # digits runs that did not collapse fell by at most 38% from a best of 0.2 or more (BENCHMARKS.md)
    collapse_train_drop: float = Field(0.1, ge=0.0, lt=1.0)  # relative: how far the training attack may fall
    collapse_sigmas: float = Field(4.0, ge=0.0)  # and the fall exceeds this many standard errors of the validation
    # subset (falls from a best under 0.2, before the model is robust, reached 3.6 on digits)
    patience: Optional[int] = Field(None, ge=1)  # stop after this many validations without a better checkpoint
    # (robust overfitting, Rice et al. 2020); null: off


class EvalConfig(_Section):
    pgd_steps: int = Field(40, ge=1)  # PGD-40 on the validation subset: the early-stopping metric
    pgd_every: int = Field(1, ge=1)  # epochs between PGD evaluations
    pgd_step_size_factor: float = Field(2.5, gt=0.0)  # PGD-40 step = factor * eps / divisor (paper's code: 1.5)
    pgd_step_divisor: StepDivisor = StepDivisor.pgd_steps  # pgd_steps: / eval.pgd_steps, the same attack for every
    # run; attack_steps: / attack.steps, the training K, as the paper's code (src/setup_task.py, resolve_attack_cfg)
    pgd_loss: PGDLoss = PGDLoss.ce
    autoattack: AutoAttackVersion = AutoAttackVersion.standard  # at the end, on the best checkpoint
    # only these of the version's attacks, with the version's settings and in its order (null: all of them). The
    # demo runs standard's apgd-ce and apgd-t: the same accuracy as all four on every demo run (BENCHMARKS.md); a study
    # keeps them all (FAB-T, and Square, the black-box check against gradient masking)
    autoattack_attacks: Optional[list[AutoAttackName]] = Field(None, min_length=1)
    autoattack_n: int = Field(10000, ge=1)  # test points (a seeded subset when smaller than the test set)
    batch_size: int = Field(500, ge=1, le=MAX_BATCH)


class AccountingConfig(_Section):
    pue: float = Field(1.58, ge=1.0)  # power usage effectiveness (global data-centre average, 2018)
    price_per_kwh: float = Field(0.12, ge=0.0)  # USD, US average
    carbon_g_per_kwh: float = Field(566.3, ge=0.0)  # gCO2e/kWh, the US figure the paper used
    region: Optional[str] = None  # a preset from robustscale.accounting.cost.REGIONS; overrides the two above
    gpu_hour_usd: Optional[float] = Field(None, ge=0.0)  # cloud price per GPU-hour, for a cloud cost next to energy
    power_sample_s: float = Field(1.0, gt=0.0)  # power sampling interval for the trace and fallback meters


class OutputConfig(_Section):
    """Where a run is written and which experiment trackers watch it. Not part of a run's id: the same run logged to
    another tracker, or written elsewhere, is the same run."""

    dir: Path = Path("runs")  # parent folder of run folders
    trackers: list[Tracker] = []  # tensorboard, mlflow, wandb (optional extras; README "Experiment trackers")
    experiment: Optional[str] = Field(None, min_length=1, max_length=200)  # the MLflow experiment and W&B group;
    # a sweep sets its name; null: $MLFLOW_EXPERIMENT_NAME, else "robustscale" (and no W&B group)
    tensorboard: bool = Field(False, exclude=True)  # deprecated: read as trackers: [tensorboard], never written

    @model_validator(mode="before")
    @classmethod
    def _tensorboard_alias(cls, raw: Any) -> Any:
        """``tensorboard: true`` (robustscale 0.1, when it did nothing) becomes ``trackers: [..., tensorboard]``."""
        if not isinstance(raw, dict) or raw.get("tensorboard") is not True:
            return raw
        _deprecated("config key 'output.tensorboard' is deprecated: write output.trackers: [tensorboard]")
        trackers = raw.get("trackers") or []
        if isinstance(trackers, list) and "tensorboard" not in trackers and Tracker.tensorboard not in trackers:
            trackers = [*trackers, Tracker.tensorboard]
        return {**raw, "trackers": trackers, "tensorboard": False}

    @field_validator("trackers")
    @classmethod
    def _each_once(cls, value: list[Tracker]) -> list[Tracker]:
        return list(dict.fromkeys(value))


@lru_cache(maxsize=None)
def _deprecated(message: str) -> None:
    """Say a deprecation once per process (a sweep validates its base config once per run)."""
    log.warning(message)


class Config(_Section):
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    attack: AttackConfig = AttackConfig()
    train: TrainConfig = TrainConfig()
    eval: EvalConfig = EvalConfig()
    accounting: AccountingConfig = AccountingConfig()
    output: OutputConfig = OutputConfig()

    @model_validator(mode="after")
    def _dataset_defaults(self) -> "Config":
        info = dataset_info(self.data.dataset)
        if self.attack.eps is None:
            self.attack.eps = info.default_eps
        if self.data.image_size is None:
            self.data.image_size = info.image_size
        elif self.data.dataset is Dataset.digits and self.data.image_size not in (8, 16):
            raise ValueError(f"data.image_size: digits are 8px (native) or 16 (upsampled), got {self.data.image_size}")
        elif self.data.dataset is not Dataset.digits and self.data.image_size != info.image_size:
            raise ValueError(f"data.image_size: {self.data.dataset} images are {info.image_size}px; "
                             "only digits can be resized (8 or 16)")
        check_limits(self, info)
        if self.attack.step_size is None and self.attack.steps > 0:
            self.attack.step_size = self.attack.step_size_factor * self.attack.eps / self.attack.steps
        if self.attack.step_size == 0 and self.attack.eps > 0:
            raise ValueError("config key 'attack.step_size': must be greater than 0 when attack.eps > 0")
        _check_recipe(self)
        return self


def _check_recipe(cfg: "Config") -> None:
    """Combinations that cannot train as meant: one line naming the key to change."""
    info = dataset_info(cfg.data.dataset)
    n_real = info.train_size - (cfg.data.val_size if cfg.data.val_source is ValSource.train else 0)
    if cfg.data.drop_last and 0 < n_real < cfg.data.batch_size:
        raise ValueError(f"config key 'data.drop_last': a global batch of {cfg.data.batch_size} above the {n_real} "
                         f"training images of {info.name} leaves no step in an epoch: lower data.batch_size or set "
                         "drop_last to false")
    if cfg.eval.pgd_step_divisor is StepDivisor.attack_steps and cfg.attack.steps == 0:
        raise ValueError("config key 'eval.pgd_step_divisor': attack_steps divides by attack.steps, which is 0 here: "
                         "use pgd_steps")
    if cfg.train.loss is Loss.trades and not cfg.attack.random_start and cfg.attack.steps > 0:
        raise ValueError("config key 'attack.random_start': TRADES' attack cannot start at x (the KL gradient is "
                         "exactly zero there, so x_adv never moves): set it to true")
    if cfg.train.cooldown_epochs >= cfg.train.epochs:
        raise ValueError(f"config key 'train.cooldown_epochs': {cfg.train.cooldown_epochs} leaves no epoch before "
                         f"the cool-down (train.epochs={cfg.train.epochs} counts it): lower it")
    if cfg.train.warmup_epochs + cfg.train.cooldown_epochs > cfg.train.epochs:
        raise ValueError("config key 'train.warmup_epochs': warm-up and cool-down together exceed train.epochs")
    if cfg.train.milestones is not None and any(m < 0 or m >= cfg.train.epochs for m in cfg.train.milestones):
        raise ValueError(f"config key 'train.milestones': epochs must lie in [0, train.epochs={cfg.train.epochs})")


def pgd_eval_step_size(cfg: "Config") -> float:
    """The PGD metric's step size (validation and the final adversarial loss): ``eval.pgd_step_size_factor x eps``
    over ``eval.pgd_steps``, or over the training ``attack.steps`` as the paper's code (``eval.pgd_step_divisor``).

    The paper's rule (``src/setup_task.py``, ``resolve_attack_cfg(args, eval=True)``: ``1.5 * eps /
    args.attack_steps`` with ``steps = args.eval_attack_steps``) takes 40 steps of 1.5 eps / K: a K=1 model is
    evaluated with steps of 1.5 eps, a K=10 model with 0.15 eps."""
    divisor = cfg.eval.pgd_steps if cfg.eval.pgd_step_divisor is StepDivisor.pgd_steps else cfg.attack.steps
    return cfg.eval.pgd_step_size_factor * cfg.attack.eps / divisor


# ---------------------------------------------------------------- loading, overrides, errors


def _show(text: Any) -> str:
    """User text in a one-line message: control characters escaped, cut when very long (:func:`errors.shown`)."""
    return shown(text)


def _format_error(err: ValidationError) -> str:
    e = err.errors()[0]
    key = _show(".".join(str(p) for p in e["loc"]))
    if e["type"] == "extra_forbidden":
        return f"unknown config key '{key}': check the spelling (`robustscale config` prints every key)"
    if e["type"] == "value_error" and not e["loc"]:
        return str(e.get("ctx", {}).get("error", e["msg"]))
    got = e.get("input")
    got = "" if isinstance(got, dict) else f" (got {_show(repr(got))})"
    msg = e["msg"].removeprefix("Value error, ")  # pydantic's prefix for a validator's own message
    return one_line(f"config key '{key}': {msg}{got}")


def _leaf_path(value: Any, prefix: str) -> str:
    """The dotted path of the first leaf under ``prefix`` (so ``no.such.key=1`` is reported whole)."""
    while isinstance(value, dict) and len(value) == 1:
        key, value = next(iter(value.items()))
        prefix = f"{prefix}.{key}"
    return prefix


def _check_keys(raw: dict[str, Any], section: type[BaseModel], prefix: str = "") -> None:
    """Reject unknown keys by their full dotted path, listing what is allowed at that level."""
    for key, value in raw.items():
        path = f"{prefix}{key}"
        field = section.model_fields.get(str(key))
        if field is None:
            allowed = ", ".join(section.model_fields)
            raise ConfigError(f"unknown config key '{_show(_leaf_path(value, path))}': allowed under "
                              f"'{_show(prefix[:-1]) or 'the top level'}' are {allowed}")
        sub = field.annotation
        if isinstance(sub, type) and issubclass(sub, _Section) and isinstance(value, dict):
            _check_keys(value, sub, f"{path}.")


def config_from_dict(raw: dict[str, Any]) -> Config:
    """Validate a plain dict into a :class:`Config`, or raise one-line :class:`ConfigError`."""
    if not isinstance(raw, dict):
        raise ConfigError(f"a config must be a mapping of sections (data, model, ...), got {type(raw).__name__}")
    _check_keys(raw, Config)
    try:
        return Config.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(_format_error(err)) from None


def parse_override(item: str) -> tuple[list[str], Any]:
    """``"train.lr=0.2"`` -> ``(["train", "lr"], 0.2)``; values are read as YAML (``8/255`` kept as text)."""
    key, sep, value = item.partition("=")
    key = key.strip()
    if not sep or not key or not re.fullmatch(r"[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*", key):
        raise ConfigError(f"override '{_show(item)}' must look like section.key=value (e.g. train.epochs=10)")
    try:
        parsed = load_yaml_text(value, f"override '{_show(item)}'") if value.strip() else None
    except YamlSyntaxError:  # not YAML: the text itself (a model name with a colon, say)
        parsed = value
    return key.split("."), parsed


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Return a copy of ``raw`` with each ``section.key=value`` applied (nested keys create mappings)."""
    out = copy.deepcopy(raw)
    for item in overrides:
        path, value = parse_override(item)
        node = out
        for part in path[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ConfigError(f"override '{_show(item)}': '{_show(part)}' is a value, not a section")
            node = child
        node[path[-1]] = value
    return out


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping from ``path``, with one-line errors for a missing, unreadable, malformed, too deep or
    alias-bombed file (:mod:`robustscale.safe_yaml`)."""
    raw = read_yaml_file(path) or {}
    if not isinstance(raw, dict):
        raise ConfigError(f"config file '{_show(path)}' must hold a mapping of sections (data, model, ...)")
    return raw


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Load a YAML config (or the defaults when ``path`` is None) and apply ``section.key=value`` overrides.

    The schema's checks only: a run loads through :func:`robustscale.training.run_config.load_config`, which also
    checks that the model builds."""
    raw = read_yaml(path) if path is not None else {}
    return config_from_dict(apply_overrides(raw, overrides or []))


def config_to_dict(cfg: Config) -> dict[str, Any]:
    """Plain JSON/YAML-friendly dict of the resolved config."""
    return cfg.model_dump(mode="json")


def config_to_yaml(cfg: Config) -> str:
    """The resolved config as YAML (what ``robustscale config`` prints and a run saves as ``config.yaml``)."""
    return yaml.safe_dump(config_to_dict(cfg), sort_keys=False)
