"""CIFAR-10 and CIFAR-100 from their "python version" folders, read without executing anything in the files.

The batches are pickles (see :mod:`robustscale.data.safe_pickle`): each is read with the restricted unpickler and
checked (a dict with a uint8 ``data`` array of 3072-byte rows and one integer label in range per row) before its
pixels are used, so a crafted or damaged file is one :class:`DataError` line naming it. ``download=True`` fetches
the official archive through torchvision (checksum verified; :mod:`robustscale.data.torchvision_sets`, imported only
then) and then reads it the same way; torchvision's own loader, a plain ``pickle.load``, is never used.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from importlib import import_module
from pathlib import Path

import numpy as np

from robustscale.data.safe_pickle import UnsafePickle, safe_load_file
from robustscale.enums import Dataset
from robustscale.errors import DataError, shown

__all__ = ["CIFAR_FILES", "load_cifar_arrays"]

ROW_BYTES = 3 * 32 * 32  # one image: all red, then green, then blue, each 32x32 row-major


@dataclass(frozen=True)
class CifarFiles:
    folder: str
    train: tuple[str, ...]
    test: tuple[str, ...]
    labels: str  # the key of the labels the paper trains on
    num_classes: int
    torchvision_class: str  # whose url / filename / tgz_md5 the download uses
    expected: str  # the folder as distributed, for messages


CIFAR_FILES = {
    Dataset.cifar10: CifarFiles("cifar-10-batches-py", tuple(f"data_batch_{i}" for i in range(1, 6)), ("test_batch",),
                          "labels", 10, "CIFAR10", "cifar-10-batches-py/ (data_batch_1..5, test_batch, batches.meta)"),
    Dataset.cifar100: CifarFiles("cifar-100-python", ("train",), ("test",), "fine_labels", 100, "CIFAR100",
                           "cifar-100-python/ (train, test, meta)"),
}


def _read_batch(path: Path, files: CifarFiles) -> tuple[np.ndarray, np.ndarray]:
    """One batch file as ``(uint8 NHWC, int64 labels)``, every field checked."""
    try:
        entry = safe_load_file(path)
    except UnsafePickle as err:
        raise DataError(f"'{shown(path)}' is not a CIFAR batch and was not loaded: {err}") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, KeyError, IndexError, AttributeError,
            OverflowError, MemoryError, RecursionError, UnicodeError) as err:
        raise DataError(f"'{shown(path)}' is corrupt or not in the CIFAR python format ({type(err).__name__}: "
                        f"{shown(err)})") from None
    if not isinstance(entry, dict) or "data" not in entry or files.labels not in entry:
        raise DataError(f"'{shown(path)}' is not a CIFAR batch: expected a dict with 'data' and '{files.labels}'")
    data, labels = entry["data"], entry[files.labels]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != ROW_BYTES:
        got = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise DataError(f"'{shown(path)}': 'data' must be uint8 rows of {ROW_BYTES} bytes, got {shown(got)}")
    if not isinstance(labels, list) or len(labels) != len(data) or \
            not all(type(v) is int and 0 <= v < files.num_classes for v in labels):
        raise DataError(f"'{shown(path)}': '{files.labels}' must hold one integer in 0..{files.num_classes - 1} per "
                        f"image ({len(data)})")
    images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return images, np.asarray(labels, dtype=np.int64)


def load_cifar_arrays(name: Dataset, split: str, root: Path | None, download: bool) -> tuple[np.ndarray, np.ndarray]:
    """``(images uint8 NHWC, labels int64)`` of one split of CIFAR-10 or CIFAR-100 under ``root``."""
    files = CIFAR_FILES[Dataset(name)]
    root = Path(root) if root is not None else Path("data")
    folder = root / files.folder
    names = files.train if split == "train" else files.test
    if download and not all((folder / n).is_file() for n in names):
        import_module("robustscale.data.torchvision_sets").download_archive(files.torchvision_class, root)
    missing = [n for n in names if not (folder / n).is_file()]
    if missing:
        raise DataError(f"{name} not found: expected {files.expected} in '{shown(root)}' (missing {missing[0]}); set "
                        "data.root to that folder or data.download=true")
    parts = [_read_batch(folder / n, files) for n in names]
    return (np.ascontiguousarray(np.concatenate([p[0] for p in parts])),
            np.concatenate([p[1] for p in parts]))
