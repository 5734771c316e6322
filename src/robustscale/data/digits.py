"""The embedded dataset: scikit-learn's 1,797 real 8x8 handwritten digits, so everything runs anywhere offline.

Pixels (0..16) are scaled to [0, 1] and copied to 3 channels, so every model and attack sees an RGB-shaped image.
The train/test split is fixed (seed 0, 20% test, stratified) and never depends on a run's seed, nor on the installed
scikit-learn: ``digits_split.npy`` holds it (``train_test_split(arange(1797), test_size=0.2, random_state=0,
stratify=labels)`` as scikit-learn 1.9.1 draws it: the 1,437 train indices in its order, then the 360 test indices;
tests/data/test_datasets.py checks it against the installed scikit-learn). The pixels come from the CSV
scikit-learn ships, read as ``sklearn.datasets.load_digits`` reads it, without importing scikit-learn (about 0.8 s of
every process that trains on digits: a sweep worker, each DDP rank); a DataError says so where the file is not
there. ``image_size=16`` upsamples with nearest neighbours (each pixel becomes a 2x2 block), which keeps the data
identical in content.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from robustscale.errors import DataError

TEST_FRACTION = 0.2  # the stored split's recipe (SPLIT_FILE), checked against scikit-learn by the tests
SPLIT_SEED = 0
N_TRAIN = 1437  # of 1,797: what a 20% stratified test split leaves
SPLIT_FILE = Path(__file__).with_name("digits_split.npy")


def _pixels_and_labels() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits: ``(pixels (1797, 8, 8) float 0..16, labels int64)``, from the CSV it ships."""
    spec = importlib.util.find_spec("sklearn")  # finds the package without running it
    folders = list(spec.submodule_search_locations or []) if spec else []
    csv = Path(folders[0]) / "datasets" / "data" / "digits.csv.gz" if folders else None
    if csv is None or not csv.is_file():
        raise DataError(f"digits: scikit-learn's digits.csv.gz not found ({csv or 'scikit-learn not installed'}); "
                        "reinstall it: pip install --force-reinstall 'scikit-learn>=1.3'")
    data = np.loadtxt(csv, delimiter=",")  # 64 pixels and the label per row, as load_digits reads it
    return data[:, :-1].reshape(-1, 8, 8), data[:, -1].astype(np.int64)


def load_digits_arrays(split: str, image_size: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(images uint8 NHWC, labels int64)`` for ``split`` in {"train", "test"}."""
    pixels, labels = _pixels_and_labels()
    images = np.round(pixels / 16.0 * 255.0).astype(np.uint8)  # (N, 8, 8)
    order = np.load(SPLIT_FILE, allow_pickle=False).astype(np.int64)
    idx = order[:N_TRAIN] if split == "train" else order[N_TRAIN:]
    x = images[idx]
    if image_size != 8:
        if image_size % 8:
            raise DataError(f"digits image_size must be 8 or 16, got {image_size}")
        r = image_size // 8
        x = x.repeat(r, axis=1).repeat(r, axis=2)
    x = np.repeat(x[..., None], 3, axis=3)  # NHWC, 3 channels
    return np.ascontiguousarray(x), labels[idx]
