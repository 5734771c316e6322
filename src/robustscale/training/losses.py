"""The paper's training losses. Each takes a batch and returns the loss to minimise plus the logits it was computed
on (for train accuracy, read on device). The attack runs with BatchNorm statistics frozen (train-mode batch stats,
running stats untouched: :func:`robustscale.attacks.frozen_bn`), as Rade and Gowal et al. do.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from robustscale.attacks import frozen_bn, pgd


class LossOutput(NamedTuple):
    loss: torch.Tensor
    clean_logits: torch.Tensor | None  # None when the loss never looked at clean inputs (AT)
    adv_logits: torch.Tensor | None  # None for standard training


def standard_loss(model: nn.Module, x, y, *, attack, label_smoothing: float = 0.0, generator=None) -> LossOutput:
    """No attack: the baseline every robustness paper compares against."""
    logits = model(x)
    return LossOutput(F.cross_entropy(logits, y, label_smoothing=label_smoothing), logits, None)


def at_loss(model: nn.Module, x, y, *, attack, attack_model: nn.Module | None = None, label_smoothing: float = 0.0,
            generator=None) -> LossOutput:
    """Madry et al.: cross-entropy on PGD examples (``attack.steps`` steps, random start)."""
    net = attack_model if attack_model is not None else model
    with frozen_bn(net):
        x_adv = pgd(net, x, y, eps=attack.eps, step_size=attack.step_size, steps=attack.steps,
                    norm=attack.norm.value, loss="ce", random_start=attack.random_start, generator=generator)
    logits = model(x_adv)
    return LossOutput(F.cross_entropy(logits, y, label_smoothing=label_smoothing), None, logits)


def trades_loss(model: nn.Module, x, y, *, attack, beta: float, attack_model: nn.Module | None = None,
                label_smoothing: float = 0.0, generator=None) -> LossOutput:
    """Zhang et al.: CE(f(x), y) + beta * KL(f(x) || f(x_adv)), x_adv maximising the KL term.

    The attack's target is a clean forward without gradients (one extra forward per sample, which the FLOP count
    includes); the two training forwards are separate, so BatchNorm sees clean and adversarial batches apart.
    """
    net = attack_model if attack_model is not None else model
    with frozen_bn(net):
        with torch.no_grad():
            target = net(x).detach()
        x_adv = pgd(net, x, y, eps=attack.eps, step_size=attack.step_size, steps=attack.steps,
                    norm=attack.norm.value, loss="kl", random_start=attack.random_start, target_logits=target,
                    generator=generator)
    clean_logits = model(x)
    adv_logits = model(x_adv)
    natural = F.cross_entropy(clean_logits, y, label_smoothing=label_smoothing)
    robust = F.kl_div(F.log_softmax(adv_logits.float(), dim=1), F.softmax(clean_logits.float(), dim=1),
                      reduction="batchmean")
    return LossOutput(natural + beta * robust, clean_logits, adv_logits)


def compute_loss(name: str, model: nn.Module, x, y, cfg, *, attack_model=None, generator=None) -> LossOutput:
    """Dispatch on ``cfg.train.loss`` (already an enum: no string parsing on the hot path beyond this lookup)."""
    ls = cfg.train.label_smoothing
    if name == "standard":
        return standard_loss(model, x, y, attack=cfg.attack, label_smoothing=ls)
    if name == "at":
        return at_loss(model, x, y, attack=cfg.attack, attack_model=attack_model, label_smoothing=ls,
                       generator=generator)
    return trades_loss(model, x, y, attack=cfg.attack, beta=cfg.train.beta, attack_model=attack_model,
                       label_smoothing=ls, generator=generator)
