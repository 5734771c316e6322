"""What each dataset is: shape, classes, normalisation statistics, the default threat model.

A leaf table (no torch, no numpy): the config fills its dataset defaults from it, the data loaders, models and
FLOP counts read shapes from it, all without importing each other.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from robustscale.enums import Dataset, choice

__all__ = ["DatasetInfo", "dataset_info", "epoch_steps", "MAX_SYNTH_IMAGES"]

# images `robustscale synth` draws for the embedded digits, all held in memory at once (the GMM's draw is ~2 KiB an
# image in float64 before it is quantised: 2 GiB at this cap; 1e11 was a MemoryError, 2**63 an OverflowError). A
# million synthetic digits are 700 times the 1,437 real training images; the README draws 20,000.
MAX_SYNTH_IMAGES = 1_000_000


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    num_classes: int
    image_size: int
    channels: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    default_eps: float  # L-inf, pixel units in [0, 1]
    flip: bool  # horizontal flips are label-preserving
    crop_padding: int
    train_size: int  # images in the distributed train split (before the validation subset is held out)
    test_size: int


_INFO = {
    Dataset.cifar10: DatasetInfo("cifar10", 10, 32, 3, (0.4914, 0.4822, 0.4465), (0.2471, 0.2435, 0.2616), 8 / 255,
                                 True, 4, 50000, 10000),
    Dataset.cifar100: DatasetInfo("cifar100", 100, 32, 3, (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762),
                                  8 / 255, True, 4, 50000, 10000),
    Dataset.svhn: DatasetInfo("svhn", 10, 32, 3, (0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970), 8 / 255, False,
                              4, 73257, 26032),
    # scikit-learn's 8x8 digits (0..16 scaled to [0, 1], grey copied to 3 channels). eps 0.15 is where a normally
    # trained WRN-10-1 falls to 0% PGD-20 accuracy (15% at 0.1) while PGD-AT keeps ~64% and TRADES ~74% (measured:
    # see README "Digits").
    Dataset.digits: DatasetInfo("digits", 10, 8, 3, (0.3, 0.3, 0.3), (0.4, 0.4, 0.4), 0.15, False, 1, 1437, 360),
}


def dataset_info(dataset: Dataset | str) -> DatasetInfo:
    """Info for a :class:`~robustscale.enums.Dataset` (or its name)."""
    return _INFO[choice(Dataset, dataset, "dataset")]


def epoch_steps(n_real: int, batch_size: int, drop_last: bool = False) -> int:
    """Global batches in one epoch: one pass worth of the ``n_real`` real training images, the last partial batch
    kept (ceil) or dropped (floor, ``data.drop_last``: timm's training loader, as the paper's code ran it)."""
    return n_real // batch_size if drop_last else math.ceil(n_real / batch_size)
