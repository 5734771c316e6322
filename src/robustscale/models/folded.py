"""An inference copy of a WideResNet with its eval-mode BatchNorms folded: the same function, fewer calls.

In eval mode a BatchNorm is a fixed per-channel affine map. In the pre-activation block (BN -> act -> conv -> BN ->
act -> conv) the second BN follows the first conv directly, so it folds into that conv's weights and a bias; the
others follow a residual sum and become one fused multiply-add each. With the module tree gone too, a forward pass
is a straight list of tensor calls. On a CPU, on the few points AutoAttack's FAB-T and Square iterate on thousands
of times, that fixed cost per call is most of the time: WRN-10-1 on 2 digits, 0.91 -> 0.36 ms a forward pass and
2.04 -> 1.73 ms with the input gradient; one run's AutoAttack 21.1 -> 13.2 CPU-s (BENCHMARKS.md, "AutoAttack on a
CPU").

The copy computes the model's function up to float rounding, never a different one: :func:`fold_batchnorm` returns
``None`` for anything it does not know exactly (another architecture, a model in train mode, non-fp32 weights), and
its caller checks agreement on the points before using it (:mod:`robustscale.attacks.autoattack`).
"""

from __future__ import annotations

import weakref
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from robustscale.models.normalize import NormalizedModel
from robustscale.models.wideresnet import WideResNet

__all__ = ["FoldedWideResNet", "fold_batchnorm"]


def _affine(bn: nn.BatchNorm2d) -> tuple[Tensor, Tensor]:
    """``(scale, shift)`` with ``bn(x) == x * scale + shift`` in eval mode, per channel."""
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    return scale.detach().clone(), (bn.bias - bn.running_mean * scale).detach().clone()


def _channels_last(w: Tensor) -> Tensor:
    return w.detach().clone().contiguous(memory_format=torch.channels_last)


def _act(module: nn.Module):
    return torch.relu if type(module) is nn.ReLU else module


class FoldedWideResNet(nn.Module):
    """Normalisation, then :class:`WideResNet`'s eval-mode forward with its BatchNorms folded (see the module)."""

    def __init__(self, model: NormalizedModel):
        super().__init__()
        self.counted_as = weakref.ref(model)  # whose calls these are (a FLOP counter charges them to the model)
        net: WideResNet = model.model
        self.mean, self.std = model.normalize.mean.detach().clone(), model.normalize.std.detach().clone()
        self.stem = _channels_last(net.stem.weight)
        self.blocks = []
        for b in net.blocks:
            s1, t1 = _affine(b.bn1)
            s2, t2 = _affine(b.bn2)
            self.blocks.append(dict(
                scale=s1.view(1, -1, 1, 1), shift=t1.view(1, -1, 1, 1), act1=_act(b.act1), act2=_act(b.act2),
                conv1=_channels_last(b.conv1.weight * s2.view(-1, 1, 1, 1)), bias1=t2, stride=b.conv1.stride,
                pad=b.pad, padding=b.conv1.padding,
                conv2=_channels_last(b.conv2.weight),
                shortcut=None if b.shortcut is None else _channels_last(b.shortcut.weight),
                shortcut_stride=None if b.shortcut is None else b.shortcut.stride))
        s, t = _affine(net.norm)
        self.scale, self.shift, self.act = s.view(1, -1, 1, 1), t.view(1, -1, 1, 1), _act(net.act)
        self.head_w, self.head_b = net.head.weight.detach().clone(), net.head.bias.detach().clone()

    def forward(self, x: Tensor) -> Tensor:
        x = F.conv2d((x - self.mean) / self.std, self.stem, None, 1, 1)
        for b in self.blocks:
            o = b["act1"](torch.addcmul(b["shift"], x, b["scale"]))
            shortcut = x if b["shortcut"] is None else F.conv2d(o, b["shortcut"], None, b["shortcut_stride"], 0)
            o = o if b["pad"] is None else F.pad(o, b["pad"])  # the deepmind style's 'SAME' padding
            o = b["act2"](F.conv2d(o, b["conv1"], b["bias1"], b["stride"], b["padding"]))
            x = F.conv2d(o, b["conv2"], None, 1, 1) + shortcut
        x = self.act(torch.addcmul(self.shift, x, self.scale))
        return F.linear(x.mean((2, 3)), self.head_w, self.head_b)


def fold_batchnorm(model: nn.Module) -> Optional[FoldedWideResNet]:
    """A folded copy of ``model`` when it is a :class:`NormalizedModel` around a :class:`WideResNet` in eval mode
    (where dropout is the identity) with fp32 weights on the CPU; ``None`` otherwise (the caller then uses the model
    itself)."""
    net = getattr(model, "model", None)
    if not (isinstance(model, NormalizedModel) and type(net) is WideResNet and not model.training):
        return None
    tensors = list(model.parameters()) + list(model.buffers())
    if any(t.device.type != "cpu" or (t.is_floating_point() and t.dtype != torch.float32) for t in tensors):
        return None
    if any(isinstance(m, nn.BatchNorm2d) and not m.track_running_stats for m in net.modules()):
        return None
    with torch.no_grad():
        return FoldedWideResNet(model).eval()
