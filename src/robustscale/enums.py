"""Every choice robustscale offers, as one leaf module of string enums (it imports only the errors).

Strings from YAML and the command line become these members once, at the edge (the config, typer's option types);
the core takes them in its signatures and compares them by identity, so no module re-parses a string or keeps a
parallel list of allowed names. Being ``str`` enums, members still compare equal to their values and serialise as
them (JSON, the results table); ``str()`` and f-strings give the value too, so messages read ``trades``, not
``Loss.trades``.
"""

from __future__ import annotations

from enum import Enum

from robustscale.errors import ParameterError, shown

__all__ = ["Dataset", "Activation", "Norm", "Loss", "Schedule", "BNMode", "TradesStart", "ValSource", "Precision",
           "AutoAttackVersion", "AutoAttackName", "PGDLoss", "StepDivisor", "WRNStyle", "AttackLoss", "Attack",
           "ExecutorKind", "Law", "CostRuns", "TableFormat", "Status", "Tracker", "OnCollapse", "StopReason", "choice"]


class _Choice(str, Enum):
    """A string enum that prints as its value (Python's own ``str(member)`` is ``Class.member``)."""

    def __str__(self) -> str:
        return self.value


class Dataset(_Choice):
    digits = "digits"
    cifar10 = "cifar10"
    cifar100 = "cifar100"
    svhn = "svhn"


class Activation(_Choice):
    relu = "relu"
    gelu = "gelu"
    silu = "silu"


class Norm(_Choice):
    linf = "linf"
    l2 = "l2"


class Loss(_Choice):
    standard = "standard"  # no attack: the baseline every robustness paper compares against
    at = "at"  # Madry et al.: cross-entropy on PGD examples
    trades = "trades"  # Zhang et al.: CE(clean) + beta * KL(f(x) || f(x_adv))


class Schedule(_Choice):
    cosine = "cosine"  # per optimiser step: linear warm-up, then cosine from train.lr to train.min_lr
    piecewise = "piecewise"  # x0.1 at train.milestones (default: at 50% and 75% of training; Madry / Rice et al.)
    constant = "constant"
    timm_cosine = "timm_cosine"  # timm's CosineLRScheduler as the paper's code ran it (training/optim.py)


class BNMode(_Choice):
    train = "train"  # batch statistics, running statistics frozen (Rade; Gowal et al.; the paper's TRADES)
    eval = "eval"  # running statistics (Zhang et al.'s TRADES code; the paper's PGD-AT, src/attacks.py)


class TradesStart(_Choice):
    normal = "normal"  # 0.001 * N(0, I): Zhang et al.'s trades.py
    uniform = "uniform"  # uniform in the eps-ball, as for PGD-AT: the paper's code (src/attacks.py, init_linf)


class ValSource(_Choice):
    train = "train"  # data.val_size points held out from the training set (never seen in training or testing)
    test = "test"  # the first data.val_size test points, as the paper's code (timm's split "validation" = test)


class WRNStyle(_Choice):
    """The two WideResNet implementations of the paper's grid (``model.kwargs.style``); same layers and FLOPs."""

    robustbench = "robustbench"  # TRADES'/RobustBench's code (the paper's ReLU arm, src/models/wide_resnet.py)
    deepmind = "deepmind"  # Gowal et al.'s code (the paper's SiLU arm, src/models/wide_resnet_deepmind.py)


class Precision(_Choice):
    fp32 = "fp32"
    bf16 = "bf16"
    fp16 = "fp16"


class AutoAttackVersion(_Choice):
    standard = "standard"
    plus = "plus"
    rand = "rand"
    none = "none"  # the config's way to skip AutoAttack at the end of a run


class AutoAttackName(_Choice):
    """pyautoattack's attacks, by its names (``eval.autoattack_attacks``)."""

    apgd_ce = "apgd-ce"
    apgd_dlr = "apgd-dlr"
    fab = "fab"
    square = "square"
    apgd_t = "apgd-t"
    fab_t = "fab-t"


class PGDLoss(_Choice):
    """The loss of the PGD metric (``eval.pgd_loss``, ``eval --loss``)."""

    ce = "ce"
    margin = "margin"  # Carlini-Wagner: best wrong logit minus the true one


class StepDivisor(_Choice):
    """What the PGD metric's step size divides ``eval.pgd_step_size_factor x eps`` by (``eval.pgd_step_divisor``)."""

    pgd_steps = "pgd_steps"  # the metric's own steps (40): robustscale's default, the same attack for every run
    attack_steps = "attack_steps"  # the training attack's K: the paper's code (src/setup_task.py, resolve_attack_cfg)


class AttackLoss(_Choice):
    """What a PGD attack ascends: the metric's losses, and TRADES' KL to the clean prediction (training only)."""

    ce = "ce"
    margin = "margin"
    kl = "kl"


class Attack(_Choice):
    """What ``robustscale eval`` runs."""

    autoattack = "autoattack"  # the paper's (and RobustBench's) number
    pgd = "pgd"


class ExecutorKind(_Choice):
    """Where a sweep's runs execute."""

    local = "local"
    slurm = "slurm"  # through submitit


class Law(_Choice):
    """What ``robustscale fit`` fits."""

    flops = "flops"  # accuracy, cost, energy and CO2 against FLOPs: the paper's laws
    nd = "nd"  # the loss as a law of model size and data (Bartoldson et al.)


class CostRuns(_Choice):
    """The runs the cost, energy and CO2 laws are fitted on."""

    envelope = "envelope"  # the accuracy envelope's runs, as the paper's Fig. 3b/c
    all = "all"


class TableFormat(_Choice):
    """How ``robustscale results`` writes the table."""

    table = "table"
    csv = "csv"
    parquet = "parquet"
    json = "json"


class Status(_Choice):
    """Where a run is (its record's ``status``)."""

    pending = "pending"  # planned by a sweep, not started
    running = "running"  # started; with no live claim it was interrupted and resumes on the next sweep
    done = "done"
    failed = "failed"  # ``reason`` says why; a sweep retries it only with --retry-failed


class Tracker(_Choice):
    """An experiment tracker a run logs to (``output.trackers``, ``--tracker``): each an optional extra of the same
    name (``pip install 'robustscale[mlflow]'``)."""

    tensorboard = "tensorboard"  # event files in the run folder's tensorboard/ (torch's SummaryWriter)
    mlflow = "mlflow"  # the run in MLFLOW_TRACKING_URI's store (e.g. sqlite:///mlruns.db)
    wandb = "wandb"  # Weights & Biases (WANDB_MODE=offline: files in the run folder's wandb/, `wandb sync` later)


class OnCollapse(_Choice):
    """What training does when the collapse detector fires (``train.on_collapse``; training/collapse.py)."""

    stop = "stop"  # end training there: the best checkpoint (from before the collapse) is evaluated as usual
    warn = "warn"  # log it, record it, train on
    ignore = "ignore"  # no detector


class StopReason(_Choice):
    """Why a run stopped before ``train.epochs`` (its record's ``stopped_early.reason``), or what an alarm saw."""

    catastrophic_overfitting = "catastrophic_overfitting"  # multi-step robustness collapsed, the training attack's not
    no_improvement = "no_improvement"  # train.patience validations without a better checkpoint (robust overfitting)


def choice(kind: type[Enum], value: object, name: str) -> Enum:
    """``value`` as a member of ``kind`` (a member, or its value as a string), for library functions that also take
    plain strings; anything else is a :class:`ParameterError` naming the parameter and the allowed values."""
    try:
        return kind(value)
    except ValueError:
        allowed = ", ".join(m.value for m in kind)
        raise ParameterError(f"{name} must be one of {allowed}, got {shown(repr(value))}", name) from None
