"""Batched augmentation on the device the batch lives on (no per-image Python): random crop with zero padding and,
where labels allow, horizontal flips. Inputs and outputs are float NCHW in [0, 1]."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def random_crop_flip(x: torch.Tensor, padding: int, flip: bool, generator: torch.Generator) -> torch.Tensor:
    n, _, h, w = x.shape
    dev = x.device
    if padding > 0:
        padded = F.pad(x, (padding, padding, padding, padding))
        oy = torch.randint(0, 2 * padding + 1, (n,), device=dev, generator=generator)
        ox = torch.randint(0, 2 * padding + 1, (n,), device=dev, generator=generator)
        rows = (oy[:, None] + torch.arange(h, device=dev))[:, None, :, None]  # (n, 1, h, 1)
        cols = (ox[:, None] + torch.arange(w, device=dev))[:, None, None, :]  # (n, 1, 1, w)
        batch = torch.arange(n, device=dev)[:, None, None, None]
        chans = torch.arange(x.shape[1], device=dev)[None, :, None, None]
        x = padded[batch, chans, rows, cols]
    if flip:
        mask = torch.rand(n, device=dev, generator=generator) < 0.5
        x = torch.where(mask[:, None, None, None], x.flip(3), x)
    return x
