"""CutMix as the paper's code applied it (``--cutmix 1.`` on the EMA arm, ``scripts/job.sh``).

The paper's code builds timm's ``Mixup`` with only CutMix on (``mixup_alpha 0``, ``cutmix_alpha 1.0``, ``prob 1.0``,
``mode 'batch'``, ``correct_lam True``; timm a25bf974 ``timm/data/mixup.py``), inside the data loader's collate: per
rank and per loader, so the real and the synthetic part of a batch are each mixed within themselves. Per (sub-)batch:

* ``lam ~ Beta(alpha, alpha)``; a box of side ``int(H * sqrt(1 - lam))`` x ``int(W * sqrt(1 - lam))`` centred at a
  uniformly drawn pixel, clipped to the image;
* every image ``i`` gets that box from image ``B - 1 - i`` (the batch in reverse order);
* ``lam`` becomes the share of pixels kept, and the target ``lam * onehot(y) + (1 - lam) * onehot(reversed y)``.

Label smoothing is applied on top by the loss (:mod:`robustscale.training.losses`), as timm's ``mixup_target``.
The draws come from a host RNG keyed by ``(seed, step)``, so a resumed run mixes the same way and no device sync is
needed to place the box.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

__all__ = ["cutmix", "cutmix_rng"]


def cutmix_rng(seed: int, step: int) -> np.random.Generator:
    """The host RNG of step ``step``'s CutMix draws (independent of the batch and augmentation streams)."""
    return np.random.default_rng([int(seed), 7, int(step)])


def _box(height: int, width: int, lam: float, rng: np.random.Generator) -> tuple[int, int, int, int]:
    """timm's ``rand_bbox``: a box of side ``sqrt(1 - lam)`` of the image, centred uniformly, clipped."""
    ratio = np.sqrt(1.0 - lam)
    cut_h, cut_w = int(height * ratio), int(width * ratio)
    cy, cx = int(rng.integers(0, height)), int(rng.integers(0, width))
    top, bottom = np.clip([cy - cut_h // 2, cy + cut_h // 2], 0, height)
    left, right = np.clip([cx - cut_w // 2, cx + cut_w // 2], 0, width)
    return int(top), int(bottom), int(left), int(right)


def cutmix(x: Tensor, y: Tensor, *, alpha: float, num_classes: int, rng: np.random.Generator) -> tuple[Tensor, Tensor]:
    """Mix one (sub-)batch: returns the mixed images (a new tensor) and the soft targets ``(B, num_classes)``."""
    lam = float(rng.beta(alpha, alpha))
    top, bottom, left, right = _box(x.shape[-2], x.shape[-1], lam, rng)
    out = x.clone()
    out[:, :, top:bottom, left:right] = x.flip(0)[:, :, top:bottom, left:right]
    lam = 1.0 - (bottom - top) * (right - left) / float(x.shape[-2] * x.shape[-1])  # the share actually kept
    one_hot = torch.nn.functional.one_hot(y, num_classes).to(x.dtype)
    return out, lam * one_hot + (1.0 - lam) * one_hot.flip(0)
