"""Exact FLOP counts per training sample, and a run's running total.

The paper averaged FLOPs per epoch (so 100- and 400-epoch runs looked equally expensive) and multiplied profiled
forward FLOPs by 3. Here every piece of a training step is counted with ``torch.utils.flop_counter.FlopCounterMode``
on the real graph, built on the meta device (WRN-70-16 is counted without allocating it), and a run's total is the
sum over the samples it actually processed.

What is counted: matrix multiplications and convolutions, forward and backward, at 2 FLOPs per multiply-add
(PyTorch's counter; BatchNorm, activations and the loss are not counted, as in the published 10.5 / 77.5 GFLOPs of
WRN-28-10 / WRN-70-16 at 32x32). Per sample, with ``F`` the forward FLOPs and ``K`` attack steps:

* one attack step ``A = F + B_in``: a forward on ``x + delta`` and ``torch.autograd.grad(objective, delta)``.
  Autograd skips weight gradients here (they are not asked for), so the backward computes input gradients only,
  one convolution per forward convolution: ``B_in = F`` exactly, ``A = 2F``.
* a full update ``U = F + B_full``: a forward on an input that needs no gradient and ``loss.backward()``. Each
  layer computes its weight gradient (``F`` in total) and, except the stem, its input gradient, so
  ``B_full = 2F - stem`` where ``stem`` is the first convolution's forward FLOPs (its input gradient is never needed).
* standard training: ``attack = 0``, ``update = U``.
* PGD-AT: ``attack = K * A``, ``update = U``; ``train = K * 2F + 3F - stem``. With ``train.at_clean_forward`` (the
  paper's code: a clean forward in train mode, no gradient, for BatchNorm's statistics and the train accuracy)
  ``update = U + F``: ``train = (2K + 4) F - stem``.
* TRADES: ``attack = F + K * A`` (the clean forward, without gradients, that gives the attack its target),
  ``update = 2U`` (forward on ``x`` and on ``x_adv``, and the backward of both); ``train = (2K + 7) F - 2 stem``.

``docs/flops.md`` works this through for WRN-28-10 with TRADES-10 and checks it against ``robustscale flops``.

The paper's convention, kept next to the exact count so published numbers can be compared. The paper's code
(``src/engine.py``) wrapped the model in DeepSpeed's ``FlopsProfiler`` for each training epoch and logged
``train_flops = 3 x (forward FLOPs of every forward call) / 1e12``: backward taken as 2x forward, every forward
charged 3F. Its PGD-AT step (``src/attacks.py``, ``AdvTrainingLoss``) runs ``K`` attack forwards, a clean forward
(for the logged clean accuracy; unused by the loss) and the adversarial forward: ``K + 2`` passes. Its TRADES step
(``TRADESLoss``) runs the target forward, ``K`` attack forwards, and the clean and adversarial forwards of the loss:
``K + 3``. Standard training is one pass. So the convention is ``3F``, ``3(K + 2)F`` and ``3(K + 3)F`` per sample,
which is why the paper quotes TRADES/AT overheads of 4/3 at K=1 and 13/12 at K=10. Its ``results.csv`` holds the
per-epoch average on one of 4 ranks (12,500 images): ``3(K + 2)F x 12,500 / 1e12`` matches it within 1% for every
run (``robustscale.store.paper_table``; ``docs/flops.md``). Validation FLOPs are excluded from it, as the paper
excluded them.

Evaluation: PGD-k on one point costs a clean forward, then (only for points classified correctly, which
:func:`robustscale.attacks.pgd_accuracy` attacks) ``k`` attack steps and one final forward. AutoAttack's cost is
data-dependent (it stops attacking points it has broken), so the final evaluation is counted from the model's calls
(:func:`count_model_calls`: ``F`` per forward, ``2F`` per forward with autograd on) into ``eval_flops``.
"""

from __future__ import annotations

import contextlib
import copy
from dataclasses import asdict, dataclass
from enum import Enum
from functools import lru_cache
from typing import Any, Iterator, Mapping

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.module import register_module_forward_pre_hook
from torch.utils.flop_counter import FlopCounterMode

from robustscale.config import Config
from robustscale.datasets import dataset_info
from robustscale.enums import Loss, choice
from robustscale.errors import ParameterError
from robustscale.models import create_model, parse_wrn_name

__all__ = ["StepFlops", "step_flops", "step_flops_for_config", "count_flops", "RunFlops", "count_model_calls",
           "ModelCalls"]

# forward passes per sample the paper's code ran and charged (3 x forward FLOPs each; module docstring)
PAPER_PASSES = {Loss.standard: lambda k: 1, Loss.at: lambda k: k + 2, Loss.trades: lambda k: k + 3}
COUNT_BATCH = 2  # FLOPs are linear in the batch for these nets (checked in tests); 2 keeps train-mode BN valid


@dataclass(frozen=True)
class StepFlops:
    """FLOPs per training sample of one step, split as the record reports them (all ints, 2 FLOPs per MAC)."""

    forward: int  # one forward pass
    attack_step: int  # forward + input-gradient backward
    attack: int  # the whole attack: steps * attack_step (+ TRADES' clean target forward)
    update: int  # the loss forward(s) and their full backward
    train: int  # attack + update
    paper_convention: int  # 3 * forward * passes the paper's code ran: K + 2 (AT), K + 3 (TRADES)
    params: int
    loss: Loss = Loss.at
    steps: int = 10
    stem: int = 0  # forward FLOPs of the first layer (whose input gradient a full backward skips)

    def pgd_eval(self, steps: int) -> int:
        """PGD-``steps`` evaluation of one point that is attacked: clean forward, the steps, final forward."""
        return self.forward + steps * self.attack_step + self.forward

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "loss": self.loss.value}


def count_flops(fn, *args, **kwargs) -> int:
    """FLOPs that ``fn(*args, **kwargs)`` runs, as ``FlopCounterMode`` counts them."""
    with FlopCounterMode(display=False) as counter:
        fn(*args, **kwargs)
    return counter.get_total_flops()


# ---------------------------------------------------------------------------------------------- the graph pieces


def _forward(model: nn.Module, x: torch.Tensor) -> None:
    with torch.no_grad():
        model(x)


def _objective(logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
    if target is None:
        return F.cross_entropy(logits.float(), y, reduction="sum")
    return F.kl_div(F.log_softmax(logits.float(), 1), F.softmax(target.float(), 1), reduction="sum")


def _attack_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None) -> None:
    """One PGD step's compute: the gradient is taken with respect to ``delta`` (the model sees ``x + delta``), as
    :func:`robustscale.attacks.pgd` does; parameters keep ``requires_grad`` and autograd still skips their grads."""
    delta = torch.zeros_like(x).requires_grad_(True)
    with torch.enable_grad():
        torch.autograd.grad(_objective(model(x + delta), y, target), delta)


def _update(model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss: Loss) -> None:
    """The compute of a training update of ``loss`` (its forwards and full backward), as the real step runs it."""
    with torch.enable_grad():
        logits = model(x)
        value = F.cross_entropy(logits.float(), y)
        if loss is Loss.trades:
            adv = model(x + 0.0)  # x_adv: same shape, no gradient needed with respect to it
            value = value + F.kl_div(F.log_softmax(adv.float(), 1), F.softmax(logits.float(), 1),
                                     reduction="batchmean")
        value.backward()


def _forward_and_stem(model: nn.Module, x: torch.Tensor) -> tuple[int, int]:
    """Forward FLOPs, and those of the first weight layer (what a full backward saves by not needing its input
    gradient), from one counted forward."""
    first = next((name for name, m in model.named_modules()
                  if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear))), None)
    with FlopCounterMode(display=False) as counter:
        _forward(model, x)
    per_module = counter.get_flop_counts()  # keyed "<root class>.<qualified name>"
    stem = sum(per_module.get(f"{type(model).__name__}.{first}", {}).values()) if first is not None else 0
    return counter.get_total_flops(), stem


def _count_pieces(model: nn.Module, *, image_size: int, in_chans: int, num_classes: int, loss: Loss, steps: int,
                  device: torch.device) -> StepFlops:
    """Run forward, one attack step and the update under the counter; per sample = count / batch."""
    b = COUNT_BATCH
    model.train()  # what a training step uses (batch-statistics BN); the counted ops do not depend on it
    x = torch.rand(b, in_chans, image_size, image_size, device=device)
    y = torch.zeros(b, dtype=torch.long, device=device)
    target = torch.zeros(b, num_classes, device=device) if loss is Loss.trades else None

    forward, stem = (n // b for n in _forward_and_stem(model, x))
    attack_step = count_flops(_attack_step, model, x, y, target) // b
    update = count_flops(_update, model, x, y, loss) // b
    model.zero_grad(set_to_none=True)
    params = sum(p.numel() for p in model.parameters())
    return _compose(forward, stem, attack_step, update, params, loss, steps)


def _compose(forward: int, stem: int, attack_step: int, update: int, params: int, loss: Loss, steps: int,
             clean_forward: bool = False) -> StepFlops:
    """A step's FLOPs from its counted pieces: the attack is ``steps`` identical steps (plus TRADES' target); PGD-AT's
    clean forward (``clean_forward``) joins the update."""
    if loss is Loss.standard:
        steps = 0
    attack = steps * attack_step + (forward if loss is Loss.trades else 0)
    if clean_forward and loss is Loss.at:
        update += forward
    passes = PAPER_PASSES[loss](steps)
    return StepFlops(forward=forward, attack_step=attack_step, attack=attack, update=update, train=attack + update,
                     paper_convention=3 * forward * passes, params=params, loss=loss, steps=steps, stem=stem)


# ---------------------------------------------------------------------------------------------- public entry points


def _check(loss: Loss | str, steps: int, image_size: int, in_chans: int, num_classes: int) -> Loss:
    for name, value, least in (("steps", steps, 0), ("image_size", image_size, 1), ("in_chans", in_chans, 1),
                               ("num_classes", num_classes, 1)):
        if value < least:
            raise ParameterError(f"{name} must be at least {least}, got {value}", name)
    return choice(Loss, loss, "loss")


@lru_cache(maxsize=256)
def _pieces_cached(name: str, image_size: int, in_chans: int, num_classes: int, loss: Loss,
                   kwargs: tuple[tuple[str, Any], ...]) -> StepFlops:
    """The counted pieces of a named model and loss (a 0-step attack): one count serves every ``steps``."""
    with torch.device("meta"):
        model = create_model(name, num_classes=num_classes, in_chans=in_chans, **dict(kwargs))
    return _count_pieces(model, image_size=image_size, in_chans=in_chans, num_classes=num_classes, loss=loss,
                         steps=0, device=torch.device("meta"))


def _step_flops_cached(name: str, image_size: int, in_chans: int, num_classes: int, loss: Loss, steps: int,
                       kwargs: tuple[tuple[str, Any], ...], clean_forward: bool) -> StepFlops:
    p = _pieces_cached(name, image_size, in_chans, num_classes, Loss.at if loss is Loss.standard else loss, kwargs)
    return _compose(p.forward, p.stem, p.attack_step, p.update, p.params, loss, steps, clean_forward)


def _module_flops(module: nn.Module, clean_forward: bool, **kw) -> StepFlops:
    """Count a given module on a meta copy (the caller's weights, BN statistics and grads are left alone)."""
    try:
        model = copy.deepcopy(module).to("meta")
        p = _count_pieces(model, device=torch.device("meta"), **kw)
    except (NotImplementedError, RuntimeError):  # an op without a meta kernel: count a CPU copy instead
        model = copy.deepcopy(module).to("cpu")
        p = _count_pieces(model, device=torch.device("cpu"), **kw)
    return _compose(p.forward, p.stem, p.attack_step, p.update, p.params, p.loss, p.steps, clean_forward)


def step_flops(model: str | nn.Module, *, image_size: int, in_chans: int = 3, num_classes: int = 10,
               loss: Loss | str = Loss.at, steps: int = 10, model_kwargs: Mapping[str, Any] | None = None,
               clean_forward: bool = False) -> StepFlops:
    """FLOPs per training sample of one step of ``loss`` with a ``steps``-step attack (module docstring).

    Args:
        model: a registry name (``wrn_28_10``, any timm model; built on the meta device and cached) or a module
            (counted on a meta copy, not cached).
        image_size: input height = width in pixels.
        loss: a :class:`~robustscale.enums.Loss` (or its name).
        steps: training attack steps (ignored for ``standard``).
        model_kwargs: extra ``create_model`` options (``act_layer``...): they do not change the counted FLOPs of a
            WideResNet but may change other timm models.
        clean_forward: PGD-AT's extra clean forward (``train.at_clean_forward``, the paper's code), one ``F``.
    """
    loss = _check(loss, steps, image_size, in_chans, num_classes)
    if isinstance(model, nn.Module):
        return _module_flops(model, clean_forward, image_size=image_size, in_chans=in_chans, num_classes=num_classes,
                             loss=loss, steps=steps)
    kwargs = tuple(sorted((k, str(v) if isinstance(v, Enum) else v) for k, v in (model_kwargs or {}).items()
                          if v is not None and not _flop_neutral(model, k)))
    return _step_flops_cached(model, image_size, in_chans, num_classes, loss, 0 if loss is Loss.standard else steps,
                              kwargs, clean_forward)


# a WideResNet's matmul/conv FLOPs ignore these (the styles differ in padding and initialisation, not in shapes)
_WRN_FLOP_NEUTRAL = ("act_layer", "bn_momentum", "drop_rate", "style")


def _flop_neutral(model: str, key: str) -> bool:
    """Options that cannot change a robustscale WideResNet's counted FLOPs: left out of the cache key, so a sweep
    over activations counts each architecture once."""
    return key in _WRN_FLOP_NEUTRAL and parse_wrn_name(model) is not None


def step_flops_for_config(cfg: Config) -> StepFlops:
    """:func:`step_flops` for the model, input shape, loss and attack steps a :class:`Config` trains with."""
    info = dataset_info(cfg.data.dataset)
    kwargs = dict(cfg.model.kwargs)
    if cfg.model.act_layer is not None:
        kwargs["act_layer"] = cfg.model.act_layer
    return step_flops(cfg.model.name, image_size=cfg.data.image_size, in_chans=info.channels,
                      num_classes=info.num_classes, loss=cfg.train.loss, steps=cfg.attack.steps,
                      model_kwargs=_hashable(kwargs), clean_forward=cfg.train.at_clean_forward)


def _hashable(kwargs: dict[str, Any]) -> dict[str, Any]:
    """Lists in ``model.kwargs`` (YAML sequences) become tuples so the count can be cached."""
    return {k: tuple(v) if isinstance(v, list) else v for k, v in kwargs.items()}


# ---------------------------------------------------------------------------------------------- evaluation calls


class ModelCalls:
    """Samples a model saw, split by whether autograd was on (an attack step: forward + input gradient)."""

    def __init__(self) -> None:
        self.plain = 0
        self.with_grad = 0

    @property
    def samples(self) -> int:
        return self.plain + self.with_grad

    def flops(self, step: StepFlops) -> int:
        """``F`` per plain forward, ``2F`` per forward with gradient (its input-gradient backward, docs/flops.md)."""
        return self.plain * step.forward + self.with_grad * step.attack_step


@contextlib.contextmanager
def count_model_calls(model: nn.Module) -> Iterator[ModelCalls]:
    """Count the samples ``model`` is called on inside the block (AutoAttack's cost depends on the data: it stops
    attacking points it has broken, so it is counted from its calls, not planned). A forward run with autograd on
    is taken as an attack step, whose backward computes the input gradient only.

    A copy that computes ``model``'s function and names it in its ``counted_as`` (a weak reference: the BatchNorm-
    folded copy AutoAttack runs on a CPU, :mod:`robustscale.models.folded`) is counted as ``model``, at the model's
    FLOPs per call: the work is the model's, whichever module carries it out. A global hook (PyTorch's profiling
    hook) sees calls of modules created inside the block too."""
    calls = ModelCalls()

    def hook(module, args):
        counted_as = getattr(module, "counted_as", None)
        if module is not model and (counted_as is None or counted_as() is not model):
            return
        n = int(args[0].shape[0]) if args and hasattr(args[0], "shape") and args[0].dim() > 0 else 0
        if torch.is_grad_enabled():
            calls.with_grad += n
        else:
            calls.plain += n

    handle = register_module_forward_pre_hook(hook)
    try:
        yield calls
    finally:
        handle.remove()


# ---------------------------------------------------------------------------------------------- a run's total


class RunFlops:
    """A run's FLOPs: per-sample counts times the samples actually processed, saved with every checkpoint.

    The trainer calls :meth:`add_train` once per optimiser step with the *global* batch (all ranks together), so a
    DDP run is not counted once per rank, and :meth:`add_eval` after each evaluation. After a kill, the run resumes
    from its last checkpoint and :meth:`load_state_dict` restores the totals saved there: the steps redone after the
    resume replace the ones lost, so each step is counted once.
    """

    def __init__(self, step: StepFlops):
        self.step = step
        self._samples = 0
        self._attack = 0
        self._update = 0
        self._paper = 0
        self._eval = 0  # PGD validation
        self._eval_samples = 0
        self._final = 0  # the final evaluation (clean test accuracy, AutoAttack, sanity checks)
        self._final_samples = 0

    def add_train(self, n_samples: int) -> None:
        """Count one optimiser step over ``n_samples`` (the global batch)."""
        n = int(n_samples)
        self._samples += n
        self._attack += n * self.step.attack
        self._update += n * self.step.update
        self._paper += n * self.step.paper_convention

    def add_eval(self, n_samples: int, flops_per_sample: int) -> None:
        """Count an evaluation of ``n_samples`` points (summed over ranks) at ``flops_per_sample`` each."""
        self._eval_samples += int(n_samples)
        self._eval += int(n_samples) * int(flops_per_sample)

    def add_final_eval(self, flops: int, n_samples: int) -> None:
        """Count the final evaluation: ``flops`` in all over ``n_samples`` model inputs."""
        self._final += int(flops)
        self._final_samples += int(n_samples)

    def add_pgd_eval(self, n_samples: int, steps: int, n_attacked: int | None = None) -> None:
        """Count PGD-``steps`` on ``n_samples`` points of which ``n_attacked`` (default: all) were attacked."""
        n_attacked = n_samples if n_attacked is None else n_attacked
        self._eval_samples += int(n_samples)
        self._eval += int(n_samples) * self.step.forward + int(n_attacked) * (self.step.pgd_eval(steps)
                                                                             - self.step.forward)

    @property
    def samples_seen(self) -> int:
        return self._samples

    @property
    def attack_flops(self) -> int:
        return self._attack

    @property
    def update_flops(self) -> int:
        return self._update

    @property
    def train_flops(self) -> int:
        return self._attack + self._update

    @property
    def eval_flops(self) -> int:
        """Validation and the final evaluation."""
        return self._eval + self._final

    @property
    def val_flops(self) -> int:
        return self._eval

    @property
    def final_eval_flops(self) -> int:
        return self._final

    @property
    def eval_samples(self) -> int:
        return self._eval_samples + self._final_samples

    @property
    def paper_convention_flops(self) -> int:
        return self._paper

    def state_dict(self) -> dict[str, Any]:
        return {"samples_seen": self._samples, "attack_flops": self._attack, "update_flops": self._update,
                "paper_convention_flops": self._paper, "eval_flops": self._eval, "eval_samples": self._eval_samples,
                "final_eval_flops": self._final, "final_eval_samples": self._final_samples,
                "step": self.step.as_dict()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore the totals saved in a checkpoint (the per-sample counts stay those of this run's config)."""
        self._samples = int(state["samples_seen"])
        self._attack = int(state["attack_flops"])
        self._update = int(state["update_flops"])
        self._paper = int(state["paper_convention_flops"])
        self._eval = int(state.get("eval_flops", 0))
        self._eval_samples = int(state.get("eval_samples", 0))
        self._final = int(state.get("final_eval_flops", 0))
        self._final_samples = int(state.get("final_eval_samples", 0))
