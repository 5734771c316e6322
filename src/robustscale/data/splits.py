"""A dataset's splits as arrays: the training split with its validation subset held out (the early-stopping set),
the test split, and the synthetic set beside them.

Images are kept as uint8 NHWC arrays (the distributed format) until a batch is formed; :func:`to_float` gives models
float NCHW in [0, 1] (normalisation lives inside the model, so eps is in pixel units everywhere).
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import import_module
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from robustscale.data.cifar import load_cifar_arrays
from robustscale.data.digits import load_digits_arrays
from robustscale.data.synthetic import content_key, load_synthetic
from robustscale.datasets import DatasetInfo, dataset_info
from robustscale.enums import Dataset, ValSource
from robustscale.errors import DataError, shown

__all__ = ["DataBundle", "VAL_SPLIT_SEED", "load_arrays", "load_data", "load_train_data", "split_validation",
           "to_float"]

VAL_SPLIT_SEED = 0  # the validation subset is the same for every run of a dataset, whatever the run's seed


def load_arrays(dataset: Dataset | str, split: str = "train", root: Path | None = None, download: bool = False,
                image_size: Optional[int] = None) -> tuple[np.ndarray, np.ndarray]:
    """``(images uint8 NHWC, labels int64)`` of one split of a dataset, in its distributed format."""
    try:
        dataset = Dataset(dataset)
    except ValueError:
        raise DataError(f"unknown dataset '{shown(dataset)}': choose {', '.join(d.value for d in Dataset)}",
                        "dataset") from None
    if split not in ("train", "test"):
        raise DataError(f"split must be 'train' or 'test', got '{shown(split)}'")
    if dataset is Dataset.digits:
        return load_digits_arrays(split, image_size or 8)
    if dataset in (Dataset.cifar10, Dataset.cifar100):
        return load_cifar_arrays(dataset, split, root, download)
    # SVHN: through torchvision, imported only here (robustscale.data.torchvision_sets)
    return import_module("robustscale.data.torchvision_sets").load_torchvision_arrays(dataset, split, root, download)


def to_float(images: np.ndarray | torch.Tensor, device: torch.device | str = "cpu") -> torch.Tensor:
    """uint8 NHWC -> float32 NCHW in [0, 1] on ``device``."""
    t = torch.as_tensor(np.asarray(images)) if not isinstance(images, torch.Tensor) else images
    return t.to(device, non_blocking=True).permute(0, 3, 1, 2).float().div_(255.0).contiguous()


def load_data(dataset: Dataset | str, split: str = "test", root: Path | None = None, image_size: Optional[int] = None,
              download: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """A whole split as ``(x float32 NCHW in [0,1], y int64)``, for datasets that fit in memory."""
    x, y = load_arrays(dataset, split, root, download, image_size)
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
    synthetic_key: Optional[str] = None  # the synthetic set's content key (synthetic.content_key): a run's record and
    # checkpoints keep it, so that a resume or a sweep notices another file at the same path

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
        raise DataError(f"data.val_size={n} exceeds the {len(x)} test points of {data_cfg.dataset}: lower it")
    return x[:n], y[:n]


def load_train_data(data_cfg) -> DataBundle:
    """Load the training split, take the validation subset from it (or from the test split with ``data.val_source:
    test``), and open the synthetic set if configured."""
    info = dataset_info(data_cfg.dataset)
    x, y = load_arrays(data_cfg.dataset, "train", data_cfg.root, data_cfg.download, data_cfg.image_size)
    if data_cfg.val_size >= len(x):
        raise DataError(f"data.val_size={data_cfg.val_size} leaves no training images ({len(x)} in "
                        f"{info.name}'s train split): lower it")
    if data_cfg.val_source is ValSource.test:
        bundle = DataBundle(info, x, y, *_first_test_points(data_cfg, data_cfg.val_size))
    else:
        train_idx, val_idx = split_validation(len(x), data_cfg.val_size)
        bundle = DataBundle(info, x[train_idx], y[train_idx], x[val_idx], y[val_idx])
    if data_cfg.synthetic.path is not None:
        sx, sy = load_synthetic(data_cfg.synthetic.path, image_size=x.shape[1], channels=x.shape[3],
                                num_classes=info.num_classes)
        bundle.synthetic_x, bundle.synthetic_y = _first(sx, sy, data_cfg.synthetic)
        bundle.synthetic_key = content_key(Path(data_cfg.synthetic.path))
    return bundle


def _first(x: np.ndarray, y: np.ndarray, synthetic_cfg) -> tuple[np.ndarray, np.ndarray]:
    """The first ``data.synthetic.n`` images of the synthetic set (all when unset); still memory-mapped."""
    n = synthetic_cfg.n
    if n is None:
        return x, y
    if n > len(x):
        raise DataError(f"data.synthetic.n={n} exceeds the {len(x)} images of '{shown(synthetic_cfg.path)}': "
                        "lower it or unset it to use them all")
    return x[:n], y[:n]
