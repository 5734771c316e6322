"""Everything that needs timm: its models by name, its activations by name, and our WideResNets in its registry.

Imported only where a config names something of timm's (any model but ``wrn_D_W``, an activation other than relu,
gelu and silu), or by a user who wants ``timm.create_model("wrn_28_10")``: timm and the torchvision it imports
cost 0.9 s of a process's start on a 2-core host (BENCHMARKS.md, "Test suite"), which a run of a WideResNet does
without.
"""

from __future__ import annotations

import sys

import timm
from timm.layers import get_act_layer
from timm.models import register_model
from torch import nn

from robustscale.models.sizes import PAPER_SIZES, check_wrn_size
from robustscale.models.wideresnet import WideResNet

__all__ = ["act_layer", "create", "is_model", "register_wrn", "register_wrns"]


def is_model(name: str) -> bool:
    return timm.is_model(name)


def create(name: str, **options) -> nn.Module:
    """``timm.create_model(name, **options)``, never with pretrained weights (nothing is downloaded)."""
    return timm.create_model(name, pretrained=False, **options)


def act_layer(name: str) -> type[nn.Module]:
    return get_act_layer(name)


def register_wrn(depth: int, width: int) -> str:
    """Register ``wrn_{depth}_{width}`` in timm's registry (idempotent) and return its name."""
    name = f"wrn_{depth}_{width}"
    if name in timm.list_models(name):
        return name
    check_wrn_size(depth, width)

    def entrypoint(pretrained: bool = False, **kwargs) -> WideResNet:
        if pretrained:
            raise ValueError(f"{name}: robustscale ships no pretrained weights")
        return WideResNet(depth, width, **kwargs)

    entrypoint.__name__ = entrypoint.__qualname__ = name
    entrypoint.__module__ = __name__
    setattr(sys.modules[__name__], name, entrypoint)  # timm's registry finds an entrypoint in its module
    register_model(entrypoint)
    return name


def register_wrns() -> list[str]:
    """Register the paper's sizes (and the small CPU ones) in timm's registry; their names."""
    return [register_wrn(depth, width) for depth, width in PAPER_SIZES]
