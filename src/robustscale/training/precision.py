"""Training precision: ``train.precision`` as a torch dtype and as the autocast context of the attack and update.

The one place a :class:`~robustscale.enums.Precision` becomes a dtype: the training step and the benchmark (its
measured peak, its fast path) both use it. Evaluation always runs in fp32 (:func:`robustscale.attacks.eval_fp32`).
"""

from __future__ import annotations

import contextlib

import torch

from robustscale.enums import Precision, choice

__all__ = ["DTYPES", "dtype", "autocast"]

DTYPES = {Precision.fp32: torch.float32, Precision.bf16: torch.bfloat16, Precision.fp16: torch.float16}


def dtype(precision: Precision | str) -> torch.dtype:
    """The torch dtype of ``precision``."""
    return DTYPES[choice(Precision, precision, "precision")]


def autocast(precision: Precision | str, device: torch.device | str) -> contextlib.AbstractContextManager:
    """``torch.autocast`` to ``precision`` on ``device``'s type; no autocast (a null context) for fp32."""
    precision = choice(Precision, precision, "precision")
    if precision is Precision.fp32:
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=DTYPES[precision])
