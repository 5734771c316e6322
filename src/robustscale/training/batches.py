"""A run's training batches on the device: the real training set resident there (uint8), synthetic images read
from their memory map on the host, mixed into every batch, augmented on the device, CutMix on top when configured.

Batch ``t`` is a function of ``(seed, t)`` (:class:`~robustscale.data.MixedBatchSampler`), so a resumed run draws the
same batches as an uninterrupted one.
"""

from __future__ import annotations

import numpy as np
import torch

from robustscale.config import Config
from robustscale.data import DataBundle, MixedBatchSampler, random_crop_flip
from robustscale.data.cutmix import cutmix, cutmix_rng

__all__ = ["BatchSource"]


class BatchSource:
    """The real training set resident on the device (uint8), synthetic images memory-mapped on the host."""

    def __init__(self, data: DataBundle, sampler: MixedBatchSampler, cfg: Config, device: torch.device):
        self.data, self.sampler, self.cfg, self.device = data, sampler, cfg, device
        self.real_x = torch.as_tensor(data.train_x).to(device)
        self.real_y = torch.as_tensor(data.train_y).to(device)

    def batch(self, step: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """This rank's slice of global batch ``step``: real then synthetic images, augmented."""
        return self._assemble(step, gen)[:2]

    def training_batch(self, step: int, gen: torch.Generator):
        """:meth:`batch` plus CutMix when ``train.cutmix > 0``: ``(x, hard labels, soft targets or None)``.

        The real and synthetic parts are mixed apart, as the paper's two data loaders each mixed their own batch;
        the hard labels are the arg-max of the mixed targets (the label the paper's PGD-AT attack used)."""
        x, y, n_real = self._assemble(step, gen)
        if not self.cfg.train.cutmix:
            return x, y, None
        rng, xs, softs = cutmix_rng(self.cfg.train.seed, step), [], []
        for part in (slice(0, n_real), slice(n_real, len(y))):
            if part.stop > part.start:
                xp, sp = cutmix(x[part], y[part], alpha=self.cfg.train.cutmix,
                                num_classes=self.data.info.num_classes, rng=rng)
                xs.append(xp)
                softs.append(sp)
        soft = torch.cat(softs)
        return torch.cat(xs), soft.argmax(1), soft

    def _assemble(self, step: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, int]:
        real_idx, syn_idx = self.sampler.batch(step)
        real_idx = real_idx.to(self.device, non_blocking=True)
        x, y = self.real_x[real_idx], self.real_y[real_idx]
        if len(syn_idx):
            order = np.argsort(syn_idx.numpy())  # sorted reads from the memory map, then back to the drawn order
            idx = syn_idx.numpy()[order]
            sx = torch.from_numpy(np.ascontiguousarray(self.data.synthetic_x[idx]))
            sy = torch.from_numpy(np.asarray(self.data.synthetic_y[idx], dtype=np.int64))
            inv = torch.from_numpy(np.argsort(order))
            x = torch.cat([x, sx[inv].to(self.device, non_blocking=True)])
            y = torch.cat([y, sy[inv].to(self.device, non_blocking=True)])
        x = x.permute(0, 3, 1, 2).float().div_(255.0)
        if self.cfg.data.augment:
            x = random_crop_flip(x, self.data.info.crop_padding, self.data.info.flip, gen)
        if self.cfg.train.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x, y, len(real_idx)
