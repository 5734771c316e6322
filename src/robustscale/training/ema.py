"""Exponential moving average of the weights (Gowal et al.: decay 0.995), BatchNorm buffers included."""

from __future__ import annotations

import copy

import torch
from torch import nn


class ModelEMA:
    """Keeps ``ema = d * ema + (1 - d) * model`` with the usual warm-up ``d_t = min(decay, (1 + t) / (10 + t))``, or
    ``d_t = decay`` from the first update with ``warmup=False`` (timm's ``ModelEmaV2``, which the paper's code used).

    Floating-point buffers (BN running mean/var) are averaged like weights; integer buffers (BN's
    ``num_batches_tracked``) are copied. The EMA model is the one evaluated and saved as "best" when enabled.
    """

    def __init__(self, model: nn.Module, decay: float = 0.995, warmup: bool = True):
        self.decay = decay
        self.warmup = warmup
        self.updates = 0
        self.module = copy.deepcopy(model).eval().requires_grad_(False)
        self._cache: tuple | None = None

    def current_decay(self) -> float:
        return min(self.decay, (1 + self.updates) / (10 + self.updates)) if self.warmup else self.decay

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        d = self.current_decay()
        self.updates += 1
        floats_ema, floats_model, ints_ema, ints_model = self._pairs(model)
        for target, value in zip(ints_ema, ints_model):
            target.copy_(value)
        torch._foreach_lerp_(floats_ema, floats_model, 1.0 - d)  # ema += (1 - d) * (model - ema), one fused op

    def _pairs(self, model: nn.Module) -> tuple[list, list, list, list]:
        """The (EMA, model) tensor pairs, matched by name once per model: ``state_dict()`` on every step costs more
        than the update itself on large models. Valid while neither model's tensors are replaced
        (``load_state_dict`` copies in place)."""
        if self._cache is None or self._cache[0] is not model:
            ema_state, floats_ema, floats_model, ints_ema, ints_model = self.module.state_dict(), [], [], [], []
            for name, value in model.state_dict().items():
                floating = value.dtype.is_floating_point
                (floats_ema if floating else ints_ema).append(ema_state[name])
                (floats_model if floating else ints_model).append(value.detach())
            self._cache = (model, floats_ema, floats_model, ints_ema, ints_model)
        return self._cache[1:]

    def state_dict(self) -> dict:
        return {"module": self.module.state_dict(), "updates": self.updates, "decay": self.decay}

    def load_state_dict(self, state: dict) -> None:
        self.module.load_state_dict(state["module"])
        self.updates = int(state["updates"])
