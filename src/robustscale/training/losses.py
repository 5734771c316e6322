"""The paper's training losses. Each takes a batch and returns the loss to minimise plus the logits it was computed
on (for train accuracy, read on device).

BatchNorm during the training attack follows ``attack.bn_mode``: ``train`` (the default) uses batch statistics with
the running statistics frozen (:func:`robustscale.attacks.frozen_bn`), as Rade, Gowal et al. and the paper's TRADES
do; ``eval`` uses the running statistics, as Zhang et al.'s TRADES code and the paper's PGD-AT do
(``src/attacks.py``: ``AdvTrainingLoss`` calls ``model.eval()`` before the attack). The default keeps the attack on
the statistics of the batch it perturbs, which early in training are far closer to the batch than the running ones.

Soft targets (CutMix, :mod:`robustscale.data.cutmix`) meet the losses as in the paper's code, where timm's
``SoftTargetCrossEntropy`` replaces the cross-entropy: every cross-entropy term takes the mixed target (with label
smoothing applied on top), while the attacks use hard labels: PGD-AT attacks the arg-max of the mixed target
(``src/attacks.py``, ``pgd``: ``y.argmax(dim=-1)``), and TRADES' KL attack and KL term never look at labels.
"""

from __future__ import annotations

import contextlib
from typing import Iterator, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from robustscale.attacks.pgd import frozen_bn, pgd
from robustscale.config import AttackConfig, Config
from robustscale.enums import AttackLoss, BNMode, Loss, choice


class LossOutput(NamedTuple):
    loss: torch.Tensor
    clean_logits: torch.Tensor | None  # None when the loss never looked at clean inputs (AT)
    adv_logits: torch.Tensor | None  # None for standard training


@contextlib.contextmanager
def _eval_bn(model: nn.Module) -> Iterator[nn.Module]:
    """Eval mode for the attack (running statistics, nothing updated), every submodule's mode restored after."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for m, training in modes:
            m.training = training


def attack_mode(model: nn.Module, bn_mode: BNMode | str) -> contextlib.AbstractContextManager:
    """The BatchNorm mode the training attack runs in (``attack.bn_mode``: ``train`` or ``eval``)."""
    return _eval_bn(model) if choice(BNMode, bn_mode, "bn_mode") is BNMode.eval else frozen_bn(model)


def _ce(logits: torch.Tensor, y: torch.Tensor, soft: torch.Tensor | None, label_smoothing: float) -> torch.Tensor:
    """Cross-entropy on hard labels, or on soft targets when a batch was mixed (CutMix), label smoothing on top."""
    return F.cross_entropy(logits, soft if soft is not None else y, label_smoothing=label_smoothing)


def standard_loss(model: nn.Module, x, y, *, attack: AttackConfig, label_smoothing: float = 0.0, generator=None,
                  soft=None) -> LossOutput:
    """No attack: the baseline every robustness paper compares against."""
    logits = model(x)
    return LossOutput(_ce(logits, y, soft, label_smoothing), logits, None)


def at_loss(model: nn.Module, x, y, *, attack: AttackConfig, attack_model: nn.Module | None = None,
            label_smoothing: float = 0.0, generator=None, soft=None, clean_forward: bool = False) -> LossOutput:
    """Madry et al.: cross-entropy on PGD examples (``attack.steps`` steps, random start).

    ``clean_forward`` (``train.at_clean_forward``) runs the clean batch through the model in train mode first, as
    the paper's ``AdvTrainingLoss.forward`` (``src/attacks.py``: ``logits, logits_adv = model(x), model(x_adv)``):
    the loss still looks at the adversarial logits only, but BatchNorm's running statistics are updated by the clean
    batch and then the adversarial one, and the clean logits give the clean train accuracy. Without a gradient here
    (the loss never reaches it), so it costs one forward and no activation memory."""
    net = attack_model if attack_model is not None else model
    with attack_mode(net, attack.bn_mode):
        x_adv = pgd(net, x, y, eps=attack.eps, step_size=attack.step_size, steps=attack.steps,
                    norm=attack.norm, loss=AttackLoss.ce, random_start=attack.random_start, generator=generator)
    clean_logits = None
    if clean_forward:
        with torch.no_grad():
            clean_logits = net(x)
    logits = model(x_adv)
    return LossOutput(_ce(logits, y, soft, label_smoothing), clean_logits, logits)


def trades_loss(model: nn.Module, x, y, *, attack: AttackConfig, beta: float, attack_model: nn.Module | None = None,
                label_smoothing: float = 0.0, generator=None, soft=None) -> LossOutput:
    """Zhang et al.: CE(f(x), y) + beta * KL(f(x) || f(x_adv)), x_adv maximising the KL term.

    The attack's target is a clean forward without gradients (one extra forward per sample, which the FLOP count
    includes); the two training forwards are separate, so BatchNorm sees clean and adversarial batches apart.
    """
    net = attack_model if attack_model is not None else model
    with attack_mode(net, attack.bn_mode):
        with torch.no_grad():
            target = net(x).detach()
        x_adv = pgd(net, x, y, eps=attack.eps, step_size=attack.step_size, steps=attack.steps,
                    norm=attack.norm, loss=AttackLoss.kl, random_start=attack.random_start, target_logits=target,
                    generator=generator, kl_start=attack.trades_start)
    clean_logits = model(x)
    adv_logits = model(x_adv)
    natural = _ce(clean_logits, y, soft, label_smoothing)
    robust = F.kl_div(F.log_softmax(adv_logits.float(), dim=1), F.softmax(clean_logits.float(), dim=1),
                      reduction="batchmean")
    return LossOutput(natural + beta * robust, clean_logits, adv_logits)


def compute_loss(loss: Loss | str, model: nn.Module, x, y, cfg: Config, *, attack_model=None, generator=None,
                 soft=None) -> LossOutput:
    """Dispatch on ``loss`` (``cfg.train.loss``, an enum compared by identity; a name works too).

    ``y`` are hard labels (the attack's, and accuracy's); ``soft`` the mixed targets of a CutMix batch, or None.
    """
    loss, ls = choice(Loss, loss, "loss"), cfg.train.label_smoothing
    if loss is Loss.standard:
        return standard_loss(model, x, y, attack=cfg.attack, label_smoothing=ls, soft=soft)
    if loss is Loss.at:
        return at_loss(model, x, y, attack=cfg.attack, attack_model=attack_model, label_smoothing=ls,
                       generator=generator, soft=soft, clean_forward=cfg.train.at_clean_forward)
    return trades_loss(model, x, y, attack=cfg.attack, beta=cfg.train.beta, attack_model=attack_model,
                       label_smoothing=ls, generator=generator, soft=soft)
