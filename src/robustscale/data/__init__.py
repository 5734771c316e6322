"""Datasets: CIFAR-10/100 and SVHN from disk, scikit-learn's digits embedded, synthetic npz memory-mapped.

Images are kept as uint8 NHWC arrays (the distributed format) until a batch is formed; models see float NCHW in
[0, 1], and normalisation lives inside the model, so eps is in pixel units everywhere. The CIFAR batches are pickles
and are read with a restricted unpickler (:mod:`robustscale.data.safe_pickle`): a dataset file executes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from robustscale.data.augment import random_crop_flip
from robustscale.data.mixing import MixedBatchSampler, step_generator
from robustscale.data.registry import DatasetInfo, dataset_info
from robustscale.data.synthetic import load_synthetic, save_synthetic
from robustscale.errors import DataError

__all__ = ["DataBundle", "DatasetInfo", "MixedBatchSampler", "dataset_info", "load_arrays", "load_data",
           "load_train_data", "load_synthetic", "save_synthetic", "random_crop_flip", "step_generator", "to_float",
           "VAL_SPLIT_SEED"]

VAL_SPLIT_SEED = 0  # the validation subset is the same for every run of a dataset, whatever the run's seed


def load_arrays(name, split: str = "train", root: Path | None = None, download: bool = False,
                image_size: Optional[int] = None) -> tuple[np.ndarray, np.ndarray]:
    """``(images uint8 NHWC, labels int64)`` of one split of a dataset, in its distributed format."""
    name = getattr(name, "value", name)
    if split not in ("train", "test"):
        raise DataError(f"split must be 'train' or 'test', got '{split}'")
    if name == "digits":
        from robustscale.data.digits import load_digits_arrays

        return load_digits_arrays(split, image_size or 8)
    if name in ("cifar10", "cifar100"):
        from robustscale.data.cifar import load_cifar_arrays

        return load_cifar_arrays(name, split, root, download)
    if name == "svhn":
        from robustscale.data.torchvision_sets import load_torchvision_arrays

        return load_torchvision_arrays(name, split, root, download)
    raise DataError(f"unknown dataset '{name}': choose digits, cifar10, cifar100 or svhn")


def to_float(images: np.ndarray | torch.Tensor, device: torch.device | str = "cpu") -> torch.Tensor:
    """uint8 NHWC -> float32 NCHW in [0, 1] on ``device``."""
    t = torch.as_tensor(np.asarray(images)) if not isinstance(images, torch.Tensor) else images
    return t.to(device, non_blocking=True).permute(0, 3, 1, 2).float().div_(255.0).contiguous()


def load_data(name, split: str = "test", root: Path | None = None, image_size: Optional[int] = None,
              download: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """A whole split as ``(x float32 NCHW in [0,1], y int64)``, for datasets that fit in memory."""
    x, y = load_arrays(name, split, root, download, image_size)
    return to_float(x), torch.as_tensor(y, dtype=torch.long)


@dataclass
class DataBundle:
    """Everything a run trains and early-stops on. The test split is loaded separately, only for evaluation."""

    info: DatasetInfo
    train_x: np.ndarray  # uint8 NHWC, validation subset removed
    train_y: np.ndarray
    val_x: np.ndarray
    val_y: np.ndarray
    synthetic_x: Optional[np.ndarray] = None  # memory-mapped
    synthetic_y: Optional[np.ndarray] = None

    @property
    def n_synthetic(self) -> int:
        return 0 if self.synthetic_x is None else len(self.synthetic_x)


def split_validation(n: int, val_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Fixed (seed-independent) train/validation index split of the training set."""
    perm = np.random.default_rng(VAL_SPLIT_SEED).permutation(n)
    return np.sort(perm[val_size:]), np.sort(perm[:val_size])


def _first_test_points(data_cfg, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The first ``n`` test points: the paper's early-stopping set (``data.val_source: test``)."""
    x, y = load_arrays(data_cfg.dataset, "test", data_cfg.root, data_cfg.download, data_cfg.image_size)
    if n > len(x):
        raise DataError(f"data.val_size={n} exceeds the {len(x)} test points of {data_cfg.dataset.value}: lower it")
    return x[:n], y[:n]


def load_train_data(data_cfg) -> DataBundle:
    """Load the training split, take the validation subset from it (or from the test split with ``data.val_source:
    test``), and open the synthetic set if configured."""
    info = dataset_info(data_cfg.dataset)
    x, y = load_arrays(data_cfg.dataset, "train", data_cfg.root, data_cfg.download, data_cfg.image_size)
    if data_cfg.val_size >= len(x):
        raise DataError(f"data.val_size={data_cfg.val_size} leaves no training images ({len(x)} in "
                        f"{info.name}'s train split): lower it")
    if getattr(data_cfg.val_source, "value", data_cfg.val_source) == "test":
        bundle = DataBundle(info, x, y, *_first_test_points(data_cfg, data_cfg.val_size))
    else:
        train_idx, val_idx = split_validation(len(x), data_cfg.val_size)
        bundle = DataBundle(info, x[train_idx], y[train_idx], x[val_idx], y[val_idx])
    if data_cfg.synthetic.path is not None:
        bundle.synthetic_x, bundle.synthetic_y = load_synthetic(
            data_cfg.synthetic.path, image_size=x.shape[1], channels=x.shape[3], num_classes=info.num_classes)
    return bundle
