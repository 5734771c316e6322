"""Projected gradient descent (Madry et al.) as plain functions: the training attack and the PGD-40 metric.

Gradients are taken with respect to the input only (``torch.autograd.grad(loss, x_adv)``), so an attack never
computes or pollutes parameter gradients. Attacks never update BatchNorm running statistics: the evaluation attack
runs in eval mode (:func:`eval_fp32`), the training attack in train mode inside :func:`frozen_bn` (batch statistics
used, running statistics untouched), as Rade et al. and Gowal et al. do for TRADES. :func:`pgd` itself never changes
``model.training``: the caller decides.

:func:`pgd` is on the training hot path: no ``.item()``, no host sync and no data-dependent Python control flow in
the step loop, so it also runs on the meta device (FLOPs counted with ``FlopCounterMode``) and under
``torch.autocast`` (the objective is cast to float before the gradient).
"""

from __future__ import annotations

import contextlib
import time
from typing import Iterator, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from robustscale.attacks.sharding import Shard, batch_generator, n_batches
from robustscale.enums import AttackLoss, Norm, PGDLoss, TradesStart, choice

__all__ = ["pgd", "frozen_bn", "eval_fp32", "pgd_accuracy", "adversarial_loss", "model_device"]

TRADES_START_STD = 0.001  # Zhang et al.'s random start for the KL attack: 0.001 * N(0, I), not uniform in the ball


def _per_example(t: Tensor, like: Tensor) -> Tensor:
    """Reshape a per-example vector to broadcast against a batch of images."""
    return t.view(-1, *([1] * (like.dim() - 1)))


def _l2(t: Tensor) -> Tensor:
    return t.flatten(1).norm(dim=1)


def _project(x_adv: Tensor, x: Tensor, eps: float, norm: Norm) -> Tensor:
    """Project onto the eps ball around ``x`` and onto the image box [0, 1]."""
    delta = x_adv - x
    if norm is Norm.linf:
        delta = delta.clamp(-eps, eps)
    else:
        delta = delta * _per_example((eps / _l2(delta).clamp_min(1e-12)).clamp(max=1.0), delta)
    return (x + delta).clamp(0.0, 1.0)


def _ascent_direction(grad: Tensor, norm: Norm) -> Tensor:
    """Steepest ascent for the norm: the sign for L-inf, the normalised gradient for L2."""
    if norm is Norm.linf:
        return grad.sign()
    return grad / _per_example(_l2(grad).clamp_min(1e-12), grad)


def _draw(kind: str, shape: tuple[int, ...], x: Tensor, generator: Optional[torch.Generator]) -> Tensor:
    """Noise of ``shape`` on ``x``'s device, drawn where the generator lives (so a CPU generator works with a CUDA
    or meta batch)."""
    device = generator.device if generator is not None else x.device
    out = torch.empty(shape, device=device, dtype=x.dtype)
    out = out.normal_(generator=generator) if kind == "normal" else out.uniform_(generator=generator)
    return out.to(x.device)


def _random_start(x: Tensor, eps: float, norm: Norm, loss: AttackLoss, generator: Optional[torch.Generator],
                  kl_start: TradesStart = TradesStart.normal) -> Tensor:
    """TRADES (``kl_start`` normal): 0.001 * N(0, I); otherwise uniform in the L-inf cube, or uniform in the L2 ball
    (direction x radius)."""
    if loss is AttackLoss.kl and kl_start is TradesStart.normal:
        return TRADES_START_STD * _draw("normal", x.shape, x, generator)
    if norm is Norm.linf:
        return eps * (2.0 * _draw("uniform", x.shape, x, generator) - 1.0)
    direction = _draw("normal", x.shape, x, generator)
    direction = direction / _per_example(_l2(direction).clamp_min(1e-12), direction)
    radius = eps * _draw("uniform", x.shape[:1], x, generator).pow(1.0 / x[0].numel())
    return direction * _per_example(radius, direction)


def _objective(logits: Tensor, y: Tensor, loss: AttackLoss, target_logits: Optional[Tensor]) -> Tensor:
    """The summed per-example loss the attack ascends (summed, so one example's step ignores the batch size)."""
    z = logits.float()
    if loss is AttackLoss.ce:
        return F.cross_entropy(z, y, reduction="sum")
    if loss is AttackLoss.margin:  # Carlini-Wagner: best wrong logit minus the true one
        return _margin(z, y).sum()
    return F.kl_div(F.log_softmax(z, dim=1), F.softmax(target_logits.float(), dim=1), reduction="sum")


def _per_example_kl(model: nn.Module, x_adv: Tensor, target_logits: Tensor) -> Tensor:
    with torch.no_grad():
        z = model(x_adv).float()
    p = F.softmax(target_logits.float(), dim=1)
    return (p * (F.log_softmax(target_logits.float(), dim=1) - F.log_softmax(z, dim=1))).sum(1)


def _run(model: nn.Module, x: Tensor, y: Tensor, start: Tensor, *, eps: float, step_size: float, steps: int,
         norm: Norm, loss: AttackLoss, target_logits: Optional[Tensor]) -> tuple[Tensor, Tensor]:
    """One PGD run from ``x + start``. Returns the last iterate and whether any iterate before it was misclassified
    (read from logits the step computes anyway, so the PGD metric counts every adversarial example it met).

    The gradient is taken with respect to the perturbation ``delta`` (the model sees ``x + delta``, not a leaf), which
    is also what lets ``FlopCounterMode``'s module hooks run alongside ``torch.autograd.grad``.
    """
    x_adv = _project(x + start, x, eps, norm).detach()
    fooled = torch.zeros_like(y, dtype=torch.bool)
    for _ in range(steps):
        delta = (x_adv - x).requires_grad_(True)
        with torch.enable_grad():
            logits = model(x + delta)
            (grad,) = torch.autograd.grad(_objective(logits, y, loss, target_logits), delta)
        fooled = fooled | (logits.detach().argmax(1) != y)
        x_adv = _project(x_adv + step_size * _ascent_direction(grad, norm), x, eps, norm).detach()
    return x_adv, fooled


def _keep(model: nn.Module, x_adv: Tensor, y: Tensor, loss: AttackLoss, target_logits: Optional[Tensor],
          best: Optional[Tensor], score: Optional[Tensor]) -> tuple[Tensor, Tensor]:
    """Restart selection without host sync. ce/margin: per example, the first restart that fools the model (score =
    fooled); kl: the restart with the largest KL to the clean prediction (score = KL)."""
    if loss is AttackLoss.kl:
        new = _per_example_kl(model, x_adv, target_logits)
        take = new > score if score is not None else torch.ones_like(y, dtype=torch.bool)
        merged = new if score is None else torch.maximum(new, score)
    else:
        with torch.no_grad():
            new = model(x_adv).argmax(1) != y
        take = new & ~score if score is not None else torch.ones_like(y, dtype=torch.bool)
        merged = new if score is None else new | score
    best = x_adv if best is None else torch.where(_per_example(take, x_adv), x_adv, best)
    return best, merged


def pgd(model: nn.Module, x: Tensor, y: Tensor, *, eps: float, step_size: float, steps: int,
        norm: Norm | str = Norm.linf, loss: AttackLoss | str = AttackLoss.ce, random_start: bool = True,
        restarts: int = 1, target_logits: Optional[Tensor] = None, generator: Optional[torch.Generator] = None,
        kl_start: TradesStart | str = TradesStart.normal) -> Tensor:
    """PGD adversarial examples within the ``norm`` ball of radius ``eps`` around ``x`` (pixel units, [0, 1]).

    Args:
        model: maps images in [0, 1] to logits; its mode (train / eval / :func:`frozen_bn`) is the caller's choice.
        eps, step_size, steps: radius, step length (in the norm) and number of steps. ``steps == 0`` returns ``x``
            unchanged (no random start), so PGD-0 accuracy is clean accuracy.
        loss: ``ce``, ``margin`` (Carlini-Wagner) or ``kl`` (TRADES' inner maximisation of
            KL(softmax(target_logits) || softmax(model(x_adv))); needs ``target_logits``, the detached clean logits).
        random_start: uniform in the ball (L2: uniform in volume); 0.001 * N(0, I) for ``kl`` as in Zhang et al.
            (``kl_start="uniform"``: uniform in the ball for ``kl`` too, as the paper's code starts TRADES).
        restarts: independent runs; per example the first one that fools the model is kept (ce / margin), or the
            one with the largest KL (kl).
        generator: the random start's generator, for runs that replay exactly.

    Returns:
        ``x_adv``, detached, in [0, 1], the last iterate of the chosen restart.
    """
    norm, loss = choice(Norm, norm, "norm"), choice(AttackLoss, loss, "loss")
    kl_start = choice(TradesStart, kl_start, "kl_start")
    if loss is AttackLoss.kl and target_logits is None:
        raise ValueError("loss='kl' needs target_logits (the detached clean logits)")
    if steps == 0:
        return x.detach().clone()
    x, best, score = x.detach(), None, None
    for _ in range(max(restarts, 1)):
        start = _random_start(x, eps, norm, loss, generator, kl_start) if random_start else torch.zeros_like(x)
        x_adv, _ = _run(model, x, y, start, eps=eps, step_size=step_size, steps=steps, norm=norm, loss=loss,
                        target_logits=target_logits)
        if restarts <= 1:
            return x_adv
        best, score = _keep(model, x_adv, y, loss, target_logits, best, score)
    return best


@contextlib.contextmanager
def frozen_bn(model: nn.Module) -> Iterator[nn.Module]:
    """Train-mode BatchNorm (batch statistics) whose running statistics do not move: the training attack's mode.

    Sets ``track_running_stats=False`` on every ``_BatchNorm`` for the duration: in train mode the forward then uses
    batch statistics and updates neither ``running_mean``/``running_var`` nor ``num_batches_tracked``; in eval mode
    it still uses the running statistics. The attack's many forwards thus never leak into the statistics the
    evaluation uses (Rade et al.; Gowal et al.). The previous flags are restored on exit, even after an exception.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [m.track_running_stats for m in norms]
    for m in norms:
        m.track_running_stats = False
    try:
        yield model
    finally:
        for m, flag in zip(norms, saved):
            m.track_running_stats = flag


def model_device(model: nn.Module) -> torch.device:
    """Where the model's weights live (CPU for a parameter-free model)."""
    for t in model.parameters():
        return t.device
    for t in model.buffers():
        return t.device
    return torch.device("cpu")


@contextlib.contextmanager
def eval_fp32(model: nn.Module) -> Iterator[nn.Module]:
    """Eval mode (running statistics, no dropout) in fp32 with autocast off: how every robustness number is measured.

    Each submodule's own mode is restored on exit, so a model with some frozen parts comes back exactly as it was.
    TF32 matmuls stay as the caller configured them.
    """
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        with torch.autocast(device_type=model_device(model).type, enabled=False):
            yield model
    finally:
        for m, training in modes:
            m.training = training


def _predict(model: nn.Module, x: Tensor) -> Tensor:
    with torch.no_grad():
        return model(x).argmax(1)


def _robust_flags(model: nn.Module, x: Tensor, y: Tensor, *, restarts: int, generator: torch.Generator,
                  **attack) -> Tensor:
    """Per example: no iterate of any restart was misclassified (the any-iterate count makes more steps or more
    restarts never report higher accuracy for the same start)."""
    robust = torch.ones_like(y, dtype=torch.bool)
    for _ in range(max(restarts, 1)):
        start = _random_start(x, attack["eps"], attack["norm"], attack["loss"], generator)
        x_adv, fooled = _run(model, x, y, start, target_logits=None, **attack)
        robust &= ~fooled & (_predict(model, x_adv) == y)
    return robust


def _metric_setup(model: nn.Module, y: Tensor, eps: float, steps: int, step_size: Optional[float],
                  name: str) -> tuple[float, torch.device, float]:
    """What both PGD metrics start with: a start time, the model's device and the step size (Madry et al.'s
    2.5 * eps / steps unless given)."""
    if len(y) == 0:
        raise ValueError(f"{name} needs at least one example")
    if step_size is None:
        step_size = 2.5 * eps / steps if steps > 0 else 0.0
    return time.perf_counter(), model_device(model), step_size


def _batches(x: Tensor, y: Tensor, batch_size: int, shard: Shard,
             device: torch.device) -> Iterator[tuple[int, Tensor, Tensor]]:
    """``(global batch index, x, y)`` of this rank's batches, on ``device`` in fp32."""
    for b in shard.mine(range(n_batches(len(y), batch_size))):
        rows = slice(b * batch_size, (b + 1) * batch_size)
        yield b, x[rows].to(device, torch.float32), y[rows].to(device)


def pgd_accuracy(model: nn.Module, x: Tensor, y: Tensor, *, eps: float, steps: int = 40,
                 step_size: Optional[float] = None, norm: Norm | str = Norm.linf, loss: PGDLoss | str = PGDLoss.ce,
                 batch_size: int = 500, seed: int = 0, restarts: int = 1, shard: Optional[Shard] = None) -> dict:
    """Clean and PGD accuracy (the early-stopping metric: PGD-40 on the held-out validation subset).

    Runs in eval mode and fp32 whatever the caller's mode and autocast, restoring the mode after. A point counts as
    robust only if it is classified correctly clean and at every PGD iterate; misclassified points are not attacked.
    The random start of batch ``b`` comes from a generator seeded by ``(seed, b)`` (:func:`batch_seed`), so two calls
    give the same number, and so does the same call split over the ranks of a group.

    Args:
        shard: this process's part of an evaluation split over the ranks of a process group
            (:mod:`robustscale.attacks.sharding`; every rank calls this function); default: all of it here.

    Returns:
        ``clean_acc`` and ``robust_acc`` (fractions, over all ranks), ``n``, ``eps``, ``norm``, ``steps``,
        ``step_size``, ``loss``, ``seconds``.
    """
    norm, loss = choice(Norm, norm, "norm"), AttackLoss(choice(PGDLoss, loss, "loss"))
    shard = shard or Shard()
    t0, device, step_size = _metric_setup(model, y, eps, steps, step_size, "pgd_accuracy")
    attack = dict(eps=eps, step_size=step_size, steps=steps, norm=norm, loss=loss)
    counts = torch.zeros(2, dtype=torch.long, device=device)  # clean, robust
    with eval_fp32(model):
        for b, xb, yb in _batches(x, y, batch_size, shard, device):
            ok = _predict(model, xb) == yb
            counts[0] += ok.sum()
            if steps > 0 and bool(ok.any()):
                ok_adv = _robust_flags(model, xb[ok], yb[ok], restarts=restarts,
                                       generator=batch_generator(seed, b, device), **attack)
                counts[1] += ok_adv.sum()
    clean, robust = shard.all_sum(counts).tolist()
    robust = robust if steps > 0 else clean
    n = len(y)
    return {"clean_acc": clean / n, "robust_acc": robust / n, "n": n, "eps": eps, "norm": norm,
            "steps": steps, "step_size": step_size, "loss": loss, "seconds": time.perf_counter() - t0}


def _margin(logits: Tensor, y: Tensor) -> Tensor:
    """Per example, Carlini-Wagner's margin: the best wrong logit minus the true one (> 0: misclassified)."""
    z = logits.float()
    true_mask = torch.zeros_like(z, dtype=torch.bool).scatter_(1, y[:, None], True)
    return z.masked_fill(true_mask, float("-inf")).amax(1) - z.gather(1, y[:, None]).squeeze(1)


def adversarial_loss(model: nn.Module, x: Tensor, y: Tensor, *, eps: float, steps: int = 40,
                     step_size: Optional[float] = None, norm: Norm | str = Norm.linf, batch_size: int = 500,
                     seed: int = 0, shard: Optional[Shard] = None) -> dict:
    """The adversarial test loss: mean cross-entropy and mean CW margin at PGD-CE examples of every point.

    The loss-type metric of Bartoldson et al.'s (ICML 2024) L(N, D) law (``robustscale fit --law nd``): unlike an
    accuracy it keeps moving once a point is misclassified, so it resolves large models and long schedules. Every
    point is attacked (misclassified ones too: their loss counts), in eval mode and fp32, batch ``b`` from a random
    start seeded by ``(seed, b)``. The per-batch sums are added in batch order, so ``shard`` (as for
    :func:`pgd_accuracy`) changes nothing in the result.

    Returns:
        ``adv_loss`` (mean CE), ``adv_margin`` (mean margin, best wrong minus true logit), ``n``, ``eps``, ``norm``,
        ``steps``, ``step_size``, ``seconds``.
    """
    norm, shard = choice(Norm, norm, "norm"), shard or Shard()
    t0, device, step_size = _metric_setup(model, y, eps, steps, step_size, "adversarial_loss")
    sums = torch.zeros(n_batches(len(y), batch_size), 2, dtype=torch.float64, device=device)  # per batch: CE, margin
    with eval_fp32(model):
        for b, xb, yb in _batches(x, y, batch_size, shard, device):
            x_adv = pgd(model, xb, yb, eps=eps, step_size=step_size, steps=steps, norm=norm, loss=AttackLoss.ce,
                        generator=batch_generator(seed, b, device))
            with torch.no_grad():
                logits = model(x_adv).float()
            sums[b, 0] = F.cross_entropy(logits, yb, reduction="sum").double()
            sums[b, 1] = _margin(logits, yb).sum().double()
    ce, margin = shard.all_sum(sums).sum(0).tolist()
    n = len(y)
    return {"adv_loss": ce / n, "adv_margin": margin / n, "n": n, "eps": eps, "norm": norm,
            "steps": steps, "step_size": step_size, "seconds": time.perf_counter() - t0}
