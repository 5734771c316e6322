"""Batches with a fixed share of synthetic images, as in Gowal et al. (2021): ``fraction`` of every batch is drawn
from the synthetic set, the rest from the real training set.

An epoch is one pass worth of the *original* training set: ``ceil(n_real / batch_size)`` global batches, whatever
the mix, so 100 epochs cost the same FLOPs with and without synthetic data; ``floor`` with ``drop_last`` (``data.drop_last``),
as the paper's code: timm's training loader drops the last partial batch (``drop_last=is_training``, timm's
``create_loader_v2``) and its ``CombinedLoaders`` (``src/utils.py``) yields ``min(real, synthetic) // batch`` batches:
97 at 512 on CIFAR-10's 50,000 images, not 98. The batch at global step ``t`` is a pure
function of ``(seed, t)``: real images come from an endless stream of seeded permutations of the training set (a
pass, then the next permutation), synthetic ones are drawn uniformly. So the sampler has no state to lose: resuming
mid-epoch is "start at step t", and DDP ranks take disjoint slices of the same global batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import torch

from robustscale.datasets import epoch_steps


def _generator(*keys: int) -> torch.Generator:
    seed = 0
    for k in keys:  # a simple, stable mix of the keys (no Python hash randomisation)
        seed = (seed * 6364136223846793005 + int(k) + 1442695040888963407) % (1 << 63)
    return torch.Generator().manual_seed(seed)


@dataclass(frozen=True)
class MixedBatchSampler:
    """Indices of the real and synthetic images in each global batch, sliced for one rank.

    Args:
        n_real: size of the real training set (after the validation subset is held out).
        n_synthetic: size of the synthetic set (0: none).
        batch_size: global batch size over all ranks.
        fraction: share of each batch that is synthetic (ignored when ``n_synthetic == 0``).
        seed: the run's seed.
        rank, world_size: this process's slice of each global batch.
    """

    n_real: int
    n_synthetic: int
    batch_size: int
    fraction: float = 0.0
    seed: int = 0
    rank: int = 0
    world_size: int = 1
    drop_last: bool = False

    def __post_init__(self):
        if self.n_real < 1 or self.batch_size < 1:
            raise ValueError("need at least one real image and a positive batch size")
        if self.steps_per_epoch < 1:
            raise ValueError(f"data.drop_last with a global batch of {self.batch_size} above the {self.n_real} "
                             "training images leaves no step in an epoch: lower data.batch_size or unset drop_last")
        if self.batch_size < self.world_size:
            raise ValueError(f"global batch {self.batch_size} is smaller than the {self.world_size} ranks")

    @property
    def synthetic_per_batch(self) -> int:
        return round(self.fraction * self.batch_size) if self.n_synthetic > 0 else 0

    @property
    def real_per_batch(self) -> int:
        return self.batch_size - self.synthetic_per_batch

    @property
    def steps_per_epoch(self) -> int:
        return epoch_steps(self.n_real, self.batch_size, self.drop_last)

    def _permutation(self, cycle: int) -> torch.Tensor:
        return _cached_perm(self.n_real, self.seed, cycle)

    def _real(self, step: int) -> torch.Tensor:
        start = step * self.real_per_batch
        positions = torch.arange(start, start + self.real_per_batch)
        cycles = positions // self.n_real
        out = torch.empty(self.real_per_batch, dtype=torch.long)
        for c in torch.unique(cycles).tolist():
            mask = cycles == c
            out[mask] = self._permutation(c)[positions[mask] % self.n_real]
        return out

    def _slice(self, n: int) -> slice:
        per, extra = divmod(n, self.world_size)
        start = self.rank * per + min(self.rank, extra)
        return slice(start, start + per + (1 if self.rank < extra else 0))

    def batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``(real_idx, synthetic_idx)`` for global step ``step`` (0-based over the whole run), this rank's slice."""
        real = self._real(step)[self._slice(self.real_per_batch)]
        if self.synthetic_per_batch == 0:
            return real, torch.empty(0, dtype=torch.long)
        return real, self._synthetic(step)[self._slice(self.synthetic_per_batch)]

    def _synthetic(self, step: int) -> torch.Tensor:
        g = _generator(self.seed, 1, step)
        return torch.randint(self.n_synthetic, (self.synthetic_per_batch,), generator=g)

    def unique_images(self, steps: int) -> tuple[int, int]:
        """Distinct ``(real, synthetic)`` images in the first ``steps`` global batches, over all ranks.

        Real images come in permutation passes, so ``min(n_real, drawn)`` of them are distinct; synthetic ones are
        drawn uniformly (with replacement), so their draws are replayed: a pure function of ``(seed, step)``, exact
        after any number of resumes. The N-D law's data axis D counts samples seen; this is its uniqueness.
        """
        real = min(self.n_real, steps * self.real_per_batch)
        if self.synthetic_per_batch == 0:
            return real, 0
        seen = torch.zeros(self.n_synthetic, dtype=torch.bool)
        for step in range(steps):
            seen[self._synthetic(step)] = True
        return real, int(seen.sum())


@lru_cache(maxsize=4)
def _cached_perm(n: int, seed: int, cycle: int) -> torch.Tensor:
    return torch.randperm(n, generator=_generator(seed, 0, cycle))


def step_generator(seed: int, step: int, device: torch.device | str = "cpu", stream: int = 2) -> torch.Generator:
    """A generator for step ``step``'s randomness (augmentation, attack start), so a resumed run draws the same."""
    base = _generator(seed, stream, step).initial_seed()
    return torch.Generator(device=device).manual_seed(base)
