"""An evaluation split over the ranks of a ``torch.distributed`` group, with a result that does not depend on how
many ranks there are.

The points are cut into fixed global batches (``batch_size`` points each, in order) and rank ``r`` of ``P`` attacks
batches ``r, r + P, r + 2P, ...``. Every random draw of batch ``b`` comes from a generator seeded by
:func:`batch_seed` ``(seed, b)``, not from one stream running through the batches, so a batch is attacked the same
way whichever rank gets it. The ranks' parts are then put together without float sums in rank order: counts are
integers, per-batch sums sit in a table with one row per batch (each row filled by exactly one rank, the others
adding zeros) that every rank adds up in batch order, and per-point flags are combined with AND. One process, two or
four thus give the same number on the same weights, bit for bit (with the same kernels and thread count per process:
a different thread count can round a convolution differently).

:class:`Shard` is this process's place in the group. ``Shard()`` (the default everywhere) is the whole evaluation in
one process and never touches ``torch.distributed``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence, TypeVar

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor

__all__ = ["Shard", "batch_seed", "batch_generator", "n_batches"]

T = TypeVar("T")


def n_batches(n: int, batch_size: int) -> int:
    """Global batches of ``batch_size`` points (the last one may be short)."""
    return -(-n // batch_size)


def batch_seed(seed: int, index: int) -> int:
    """The seed of global batch ``index`` of an evaluation seeded with ``seed``: independent streams per batch
    (numpy's ``SeedSequence`` of the pair), the same whichever rank attacks the batch."""
    state = np.random.SeedSequence([int(seed), int(index)]).generate_state(1, dtype=np.uint64)[0]
    return int(state >> np.uint64(1))  # torch seeds are signed 64-bit


def batch_generator(seed: int, index: int, device: torch.device | str) -> torch.Generator:
    """A generator on ``device`` seeded with :func:`batch_seed`."""
    return torch.Generator(device=device).manual_seed(batch_seed(seed, index))


def _comm_device() -> torch.device:
    """Where a collective's tensor must live: the current GPU under NCCL, the CPU under gloo."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


@dataclass(frozen=True)
class Shard:
    """Rank ``rank`` of a group of ``world_size`` processes that evaluate together (``Shard()``: alone).

    Every method that combines the ranks' parts is a collective when ``world_size > 1``: every rank of the group must
    call it, in the same order.
    """

    rank: int = 0
    world_size: int = 1

    def __post_init__(self) -> None:
        if not 0 <= self.rank < self.world_size:
            raise ValueError(f"rank {self.rank} is not one of the {self.world_size} ranks")

    @classmethod
    def of_group(cls) -> "Shard":
        """This process's place in the initialised default process group (alone when there is none)."""
        if dist.is_available() and dist.is_initialized():
            return cls(dist.get_rank(), dist.get_world_size())
        return cls()

    @property
    def split(self) -> bool:
        return self.world_size > 1

    def mine(self, items: Sequence[T]) -> Sequence[T]:
        """This rank's items (batches, or batch indices): every ``world_size``-th from its rank on."""
        return items[self.rank::self.world_size]

    def all_sum(self, t: Tensor) -> Tensor:
        """``t`` summed over the ranks (a new tensor on ``t``'s device). Exact for integers, and for a table whose
        every entry is non-zero on one rank at most (adding zeros rounds nothing)."""
        if not self.split:
            return t
        out = t.to(_comm_device(), copy=True)
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
        return out.to(t.device)

    def all_and(self, flags: list[bool]) -> list[bool]:
        """Per position, whether every rank's flag is set (a rank sets the flags of points it did not look at)."""
        if not self.split:
            return list(flags)
        votes = self.all_sum(torch.tensor(flags, dtype=torch.int32))
        return (votes == self.world_size).tolist()

    def gather(self, obj: Any) -> list[Any]:
        """Every rank's ``obj`` (picklable), in rank order, on every rank."""
        if not self.split:
            return [obj]
        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank."""
        if not self.split:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def barrier(self) -> None:
        if self.split:
            dist.barrier()
