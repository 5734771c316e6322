"""Pre-activation WideResNets as used across the adversarial-training literature (timm-compatible: registered into
timm on request).

The block follows Zhang et al. (TRADES) / Gowal et al. (2020): BN -> act -> conv3x3 -> BN -> act -> conv3x3, with a
1x1 projection on the pre-activated input where the shape changes. Depth ``d`` gives ``(d - 4) / 6`` blocks in each of
three groups of widths ``16k, 32k, 64k``. Inputs are whatever the caller feeds (normalisation lives in
:class:`robustscale.models.normalize.Normalize`), so the model works at any resolution (adaptive pooling).

Two implementations of that block ran in the paper's grid, and ``style`` picks one (same layers, shapes and FLOPs):

* ``robustbench`` (the default): TRADES'/RobustBench's code, the paper's ReLU arm (``src/models/wide_resnet.py`` of
  dedeswim/timm-adv-training). Convolutions padded symmetrically; every convolution ``N(0, 2 / (k * k * out))``
  (He, fan-out), BatchNorm weight 1 and bias 0, the classifier's bias 0 and its weight PyTorch's default.
* ``deepmind``: Gowal et al.'s code, the paper's SiLU arm (``src/models/wide_resnet_deepmind.py``). A stride-2
  convolution is padded TensorFlow-'SAME' style, one pixel on the right and bottom only (``F.pad(v, (0, 1, 0, 1))``
  in ``_Block.forward``), so it sees another window than a symmetric padding. Its initialisation is PyTorch's
  default everywhere except the classifier, whose weight and bias are zero: ``DMWideResNet._init_weights`` zeroes
  ``logits`` and then calls ``init_modules(self)``, which only acts on a module that is itself a ``Conv2d`` or
  ``BatchNorm2d``, and the root module is neither, so its ``trunc_normal_`` never runs.

Nothing here imports timm: a run of a WideResNet never loads it (timm and the torchvision it imports cost 0.9 s of every
process's start on a 2-core host, and a sweep starts a process per run and rank). An activation named other than
``relu``, ``gelu`` or ``silu`` is looked up in timm, and :mod:`robustscale.models.timm_models` registers these
models into timm's registry (``register_wrns()``, then ``timm.create_model("wrn_28_10", act_layer="gelu")``).
"""

from __future__ import annotations

from importlib import import_module

import torch
import torch.nn.functional as F
from torch import nn

from robustscale.enums import WRNStyle, choice

__all__ = ["WideResNet", "same_padding", "activation_layer"]

# the activations a config can name (robustscale.enums.Activation): the classes timm's get_act_layer gives for relu
# and silu; for gelu timm gives a GELU of its own whose forward is F.gelu(x), as nn.GELU's is
_ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "silu": nn.SiLU}


def activation_layer(name: str | type[nn.Module]) -> type[nn.Module]:
    """The class of activation ``name``: ``relu``, ``gelu``, ``silu``, else whatever timm calls it; a class as is."""
    if not isinstance(name, str):
        return name
    if name in _ACTIVATIONS:
        return _ACTIVATIONS[name]
    return import_module("robustscale.models.timm_models").act_layer(name)  # imports timm (module docstring)


def same_padding(stride: int) -> tuple[int, int, int, int] | None:
    """The explicit padding (left, right, top, bottom) of a 3x3 convolution in the ``deepmind`` style, None where it
    is the symmetric padding of 1 (stride 1)."""
    return (0, 1, 0, 1) if stride == 2 else None


class _Block(nn.Module):
    def __init__(self, in_planes: int, out_planes: int, stride: int, act_layer: type[nn.Module], bn_momentum: float,
                 style: WRNStyle = WRNStyle.robustbench):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes, momentum=bn_momentum)
        self.act1 = act_layer()
        self.pad = same_padding(stride) if style is WRNStyle.deepmind else None
        self.conv1 = nn.Conv2d(in_planes, out_planes, 3, stride, 0 if self.pad else 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_planes, momentum=bn_momentum)
        self.act2 = act_layer()
        self.conv2 = nn.Conv2d(out_planes, out_planes, 3, 1, 1, bias=False)
        self.shortcut = None
        if stride != 1 or in_planes != out_planes:
            self.shortcut = nn.Conv2d(in_planes, out_planes, 1, stride, 0, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        o = self.act1(self.bn1(x))
        # the projection reads the pre-activated input, the identity reads the raw one (as TRADES' and DM's code)
        shortcut = x if self.shortcut is None else self.shortcut(o)
        o = self.conv2(self.act2(self.bn2(self.conv1(o if self.pad is None else F.pad(o, self.pad)))))
        return o + shortcut


class WideResNet(nn.Module):
    """WRN-``depth``-``width`` (Zagoruyko & Komodakis), pre-activation variant.

    Args:
        depth: total depth; ``(depth - 4)`` must be divisible by 6.
        width: widening factor ``k``.
        num_classes: logits out.
        in_chans: input channels.
        act_layer: activation class or timm name (``relu``, ``gelu``, ``silu``...).
        bn_momentum: BatchNorm momentum in PyTorch's convention (Gowal et al. use 0.01; 0.1 suits short runs).
        drop_rate: dropout before the classifier.
        style: ``robustbench`` or ``deepmind``: whose padding and initialisation (module docstring).
    """

    def __init__(self, depth: int = 28, width: int = 10, num_classes: int = 10, in_chans: int = 3,
                 act_layer: str | type[nn.Module] = "relu", bn_momentum: float = 0.1, drop_rate: float = 0.0,
                 style: WRNStyle | str = WRNStyle.robustbench, **_):
        super().__init__()
        self.style = style = choice(WRNStyle, style, "style")
        if depth < 10 or (depth - 4) % 6:
            raise ValueError(f"WideResNet depth must be 6n+4 with n >= 1 (10, 16, 22, 28, 34, 40, 70...), got {depth}")
        if width < 1:
            raise ValueError(f"WideResNet width must be >= 1, got {width}")
        act = activation_layer(act_layer)
        n = (depth - 4) // 6
        widths = [16, 16 * width, 32 * width, 64 * width]
        self.num_classes, self.num_features, self.drop_rate = num_classes, widths[3], drop_rate
        self.stem = nn.Conv2d(in_chans, widths[0], 3, 1, 1, bias=False)
        blocks = []
        for g, stride in enumerate((1, 2, 2)):
            for i in range(n):
                blocks.append(_Block(widths[g] if i == 0 else widths[g + 1], widths[g + 1], stride if i == 0 else 1,
                                     act, bn_momentum, style))
        self.blocks = nn.Sequential(*blocks)
        self.norm = nn.BatchNorm2d(widths[3], momentum=bn_momentum)
        self.act = act()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(widths[3], num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        if self.stem.weight.is_meta:  # built to be counted or checked: no values to initialise
            return
        if self.style is WRNStyle.deepmind:  # PyTorch's defaults but a zero classifier (module docstring)
            nn.init.zeros_(self.head.weight)
            nn.init.zeros_(self.head.bias)
            return
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.norm(self.blocks(self.stem(x))))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.pool(x).flatten(1)
        if self.drop_rate:
            x = nn.functional.dropout(x, self.drop_rate, self.training)
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        return self.head
