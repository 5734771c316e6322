"""Exponential moving average of the weights (Gowal et al.: decay 0.995), BatchNorm buffers included."""

from __future__ import annotations

import copy

import torch
from torch import nn


class ModelEMA:
    """Keeps ``ema = d * ema + (1 - d) * model`` with the usual warm-up ``d_t = min(decay, (1 + t) / (10 + t))``.

    Floating-point buffers (BN running mean/var) are averaged like weights; integer buffers (BN's
    ``num_batches_tracked``) are copied. The EMA model is the one evaluated and saved as "best" when enabled.
    """

    def __init__(self, model: nn.Module, decay: float = 0.995):
        self.decay = decay
        self.updates = 0
        self.module = copy.deepcopy(model).eval().requires_grad_(False)

    def current_decay(self) -> float:
        return min(self.decay, (1 + self.updates) / (10 + self.updates))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        d = self.current_decay()
        self.updates += 1
        ema_state = self.module.state_dict()
        floats_ema, floats_model = [], []
        for name, value in model.state_dict().items():
            target = ema_state[name]
            if value.dtype.is_floating_point:
                floats_ema.append(target)
                floats_model.append(value.detach())
            else:
                target.copy_(value)
        torch._foreach_lerp_(floats_ema, floats_model, 1.0 - d)  # ema += (1 - d) * (model - ema), one fused op

    def state_dict(self) -> dict:
        return {"module": self.module.state_dict(), "updates": self.updates, "decay": self.decay}

    def load_state_dict(self, state: dict) -> None:
        self.module.load_state_dict(state["module"])
        self.updates = int(state["updates"])
