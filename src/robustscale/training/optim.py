"""SGD with momentum/Nesterov and the schedules of the paper's recipes (warm-up, then cosine or piecewise, then an
optional cool-down at ``train.min_lr``).

``timm_cosine`` is timm's ``CosineLRScheduler`` exactly as the paper's code ran it (timm a25bf974,
``timm/scheduler/cosine_lr.py`` and ``scheduler_factory.py``; ``sched: cosine`` in the paper's
``configs/sweep-cifar10.yaml``): the lr changes once per epoch (``t_in_epochs``); epoch ``e`` (0-based) trains at

* ``warmup_lr + e * (lr - warmup_lr) / warmup_epochs`` while ``e < warmup_epochs`` (so epoch 0 at ``warmup_lr``);
* ``min_lr + (lr - min_lr) * (1 + cos(pi * e / T)) / 2`` while ``e < T = epochs - cooldown_epochs``; the cosine
  counts from epoch 0, not from the end of the warm-up (timm's ``warmup_prefix=False``), so it has already decayed
  a little when the warm-up ends;
* ``min_lr`` in the ``cooldown_epochs`` after that (timm adds ``--cooldown-epochs`` to ``--epochs``: the paper's
  "100 epochs" trained 110, and its "390" 400; here ``train.epochs`` is that total).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from robustscale.config import TrainConfig
from robustscale.enums import Schedule


def effective_lr(train_cfg: TrainConfig, batch_size: int) -> float:
    """The peak lr a run uses: ``train.lr`` as given, or per ``train.lr_base_size`` images of the global batch
    (linear scaling, as timm's ``--lr-base``/``--lr-base-size`` in the paper's code, ``src/setup_task.py``)."""
    if train_cfg.lr_base_size is None:
        return train_cfg.lr
    return train_cfg.lr * batch_size / train_cfg.lr_base_size


def make_optimizer(model: nn.Module, train_cfg: TrainConfig, batch_size: int | None = None) -> torch.optim.SGD:
    """SGD as in Zhang et al. / Gowal et al. With ``decay_bn_and_bias: false``, BN and bias get no weight decay."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if (p.ndim <= 1 and not train_cfg.decay_bn_and_bias) else decay).append(p)
    groups = [{"params": decay, "weight_decay": train_cfg.weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    kwargs = {"foreach": True} if not torch.cuda.is_available() else {"fused": True}
    lr = effective_lr(train_cfg, batch_size) if batch_size is not None else train_cfg.lr
    return torch.optim.SGD(groups, lr=lr, momentum=train_cfg.momentum,
                           nesterov=train_cfg.nesterov and train_cfg.momentum > 0, **kwargs)


def lr_factor(step: int, total_steps: int, warmup_steps: int, schedule: Schedule | str, *, min_factor: float = 0.0,
              cooldown_steps: int = 0, milestones: tuple[int, ...] | None = None) -> float:
    """Multiplier of the peak learning rate at optimiser step ``step`` (0-based), for the per-step schedules.

    The schedule runs over ``total_steps - cooldown_steps``; the cool-down after it holds ``min_factor``.
    ``milestones`` (steps) replace piecewise's default decays at 50% and 75% of the schedule.
    """
    active = max(1, total_steps - cooldown_steps)
    if step >= active:
        return min_factor
    if warmup_steps and step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, active - warmup_steps)
    schedule = Schedule(schedule)
    if schedule is Schedule.cosine:
        return min_factor + (1.0 - min_factor) * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
    if schedule is Schedule.piecewise:
        if milestones is not None:
            return 0.1 ** sum(step >= m for m in milestones)
        return 0.01 if progress >= 0.75 else 0.1 if progress >= 0.5 else 1.0
    return 1.0


def timm_cosine_lr(epoch: int, *, lr: float, epochs: int, warmup_epochs: int, warmup_lr: float, min_lr: float,
                   cooldown_epochs: int) -> float:
    """The lr of 0-based ``epoch`` under timm's CosineLRScheduler as the paper ran it (module docstring)."""
    if epoch < warmup_epochs:
        return warmup_lr + epoch * (lr - warmup_lr) / warmup_epochs
    cycle = epochs - cooldown_epochs
    if epoch >= cycle:
        return min_lr
    return min_lr + 0.5 * (lr - min_lr) * (1.0 + math.cos(math.pi * epoch / cycle))


def make_scheduler(optimizer: torch.optim.Optimizer, train_cfg: TrainConfig, steps_per_epoch: int,
                   batch_size: int | None = None) -> torch.optim.lr_scheduler.LambdaLR:
    """A ``LambdaLR`` stepped once per optimiser step (so a resumed run continues at the same step)."""
    peak = effective_lr(train_cfg, batch_size) if batch_size is not None else train_cfg.lr
    total = train_cfg.epochs * steps_per_epoch
    schedule = train_cfg.schedule
    if schedule is Schedule.timm_cosine:
        kw = dict(lr=peak, epochs=train_cfg.epochs, warmup_epochs=round(train_cfg.warmup_epochs),
                  warmup_lr=train_cfg.warmup_lr, min_lr=train_cfg.min_lr, cooldown_epochs=train_cfg.cooldown_epochs)
        return torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda s: timm_cosine_lr(s // steps_per_epoch, **kw) / peak)
    warmup = round(train_cfg.warmup_epochs * steps_per_epoch)
    cooldown = train_cfg.cooldown_epochs * steps_per_epoch
    milestones = tuple(m * steps_per_epoch for m in train_cfg.milestones) if train_cfg.milestones else None
    min_factor = train_cfg.min_lr / peak
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(
        s, total, warmup, schedule, min_factor=min_factor, cooldown_steps=cooldown, milestones=milestones))
