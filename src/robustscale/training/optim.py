"""SGD with momentum/Nesterov and the schedules of the paper's recipes (warm-up, then cosine or piecewise)."""

from __future__ import annotations

import math

import torch
from torch import nn


def make_optimizer(model: nn.Module, train_cfg) -> torch.optim.SGD:
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
    return torch.optim.SGD(groups, lr=train_cfg.lr, momentum=train_cfg.momentum,
                           nesterov=train_cfg.nesterov and train_cfg.momentum > 0, **kwargs)


def lr_factor(step: int, total_steps: int, warmup_steps: int, schedule: str) -> float:
    """Multiplier of the base learning rate at optimiser step ``step`` (0-based)."""
    if warmup_steps and step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
    if schedule == "piecewise":  # x0.1 at 50% and 75% of training
        return 0.01 if progress >= 0.75 else 0.1 if progress >= 0.5 else 1.0
    return 1.0


def make_scheduler(optimizer: torch.optim.Optimizer, train_cfg, steps_per_epoch: int):
    total = train_cfg.epochs * steps_per_epoch
    warmup = round(train_cfg.warmup_epochs * steps_per_epoch)
    schedule = train_cfg.schedule.value
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, total, warmup, schedule))
