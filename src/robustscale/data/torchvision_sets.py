"""What needs torchvision: SVHN from a local folder in its distributed format (``.mat`` files, read by scipy: no code
in them runs) through torchvision's class, and the download of the CIFAR archives. CIFAR is read by
:mod:`robustscale.data.cifar` instead: torchvision unpickles its batches with a plain ``pickle.load``.

``download=True`` uses torchvision's own download (needs network). Without it, missing files give one line saying
which files are expected where. Imported only for those (``import_module``): torchvision, with timm, cost 0.9 s of a
process's start on a 2-core host, which a run on CIFAR or digits does without.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torchvision
from torchvision.datasets.utils import download_and_extract_archive

from robustscale.enums import Dataset
from robustscale.errors import DataError, shown

_EXPECTED = {Dataset.svhn: "train_32x32.mat and test_32x32.mat"}


def download_archive(torchvision_class: str, root: Path) -> None:
    """Download and unpack the official archive of torchvision's ``torchvision_class`` (CIFAR10, CIFAR100) into
    ``root``, its md5 checked."""
    cls = getattr(torchvision.datasets, torchvision_class)
    try:
        download_and_extract_archive(cls.url, str(root), filename=cls.filename, md5=cls.tgz_md5)
    except Exception as err:  # network, disk, checksum: say which
        raise DataError(f"download of {torchvision_class} into '{shown(root)}' failed ({type(err).__name__}: "
                        f"{shown(err)}); check the network or fetch the files by hand") from None


def _presence_only(cls):
    """torchvision checks md5 sums of the official archives; we check the files are there and let the reader parse
    them, so a locally re-packed copy (or a test's generated one) in the same format loads too. torchvision's
    ``check_integrity`` skips the sum when it is None."""
    attrs = {}
    if hasattr(cls, "train_list"):
        attrs["train_list"] = [[f, None] for f, _ in cls.train_list]
        attrs["test_list"] = [[f, None] for f, _ in cls.test_list]
        attrs["meta"] = {**cls.meta, "md5": None}
    if hasattr(cls, "split_list"):
        attrs["split_list"] = {k: [url, f, None] for k, (url, f, _) in cls.split_list.items()}
    return type(cls.__name__, (cls,), attrs)


def load_torchvision_arrays(name: Dataset, split: str, root: Path | None, download: bool) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(images uint8 NHWC, labels int64)`` for SVHN."""
    name, root = Dataset(name), Path(root) if root is not None else Path("data")
    train = split == "train"
    try:
        if name is Dataset.svhn:
            ds = _presence_only(torchvision.datasets.SVHN)(str(root), split="train" if train else "test", download=download)
            x, y = np.asarray(ds.data).transpose(0, 2, 3, 1), np.asarray(ds.labels)
        else:
            raise DataError(f"unknown dataset '{name}'")
    except (EOFError, ValueError, KeyError, TypeError, OSError) as err:
        raise DataError(f"{name} files in '{root}' are corrupt or not in the distributed format ({type(err).__name__}"
                        f": {str(err).splitlines()[0] if str(err) else ''}); expected {_EXPECTED[name]}") from None
    except RuntimeError as err:  # torchvision: "Dataset not found or corrupted. You can use download=True ..."
        if download:
            raise DataError(f"{name}: download into '{root}' failed ({err}); check the network or fetch the files "
                            f"by hand") from None
        raise DataError(f"{name} not found: expected {_EXPECTED[name]} in '{root}'; set data.root to that folder "
                        "or data.download=true") from None
    if not np.issubdtype(y.dtype, np.integer) or len(y) != len(x) or (len(y) and (y.min() < 0 or y.max() > 9)):
        raise DataError(f"{name} files in '{root}' hold labels that are not one integer in 0..9 per image: "
                        f"re-fetch them ({_EXPECTED[name]})")
    return np.ascontiguousarray(x, dtype=np.uint8), y.astype(np.int64)
