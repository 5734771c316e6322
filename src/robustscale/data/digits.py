"""The embedded dataset: scikit-learn's 1,797 real 8x8 handwritten digits, so everything runs anywhere offline.

Pixels (0..16) are scaled to [0, 1] and copied to 3 channels, so every model and attack sees an RGB-shaped image.
The train/test split is fixed (seed 0, 20% test, stratified) and never depends on a run's seed. ``image_size=16``
upsamples with nearest neighbours (each pixel becomes a 2x2 block), which keeps the data identical in content.
"""

from __future__ import annotations

import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from robustscale.errors import DataError

TEST_FRACTION = 0.2
SPLIT_SEED = 0


def load_digits_arrays(split: str, image_size: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(images uint8 NHWC, labels int64)`` for ``split`` in {"train", "test"}."""
    bunch = load_digits()
    images = np.round(bunch.images / 16.0 * 255.0).astype(np.uint8)  # (N, 8, 8)
    labels = bunch.target.astype(np.int64)
    idx_train, idx_test = train_test_split(np.arange(len(labels)), test_size=TEST_FRACTION, random_state=SPLIT_SEED,
                                           stratify=labels)
    idx = idx_train if split == "train" else idx_test
    x = images[idx]
    if image_size != 8:
        if image_size % 8:
            raise DataError(f"digits image_size must be 8 or 16, got {image_size}")
        r = image_size // 8
        x = x.repeat(r, axis=1).repeat(r, axis=2)
    x = np.repeat(x[..., None], 3, axis=3)  # NHWC, 3 channels
    return np.ascontiguousarray(x), labels[idx]
