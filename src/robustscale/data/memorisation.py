"""Does a generator copy its training images, or leak test images? Nearest-neighbour figures in pixel space.

A generator trained on a small set can memorise it (a diffusion model trained to the optimum of its loss on N
images reproduces those N images). Three checks, all Euclidean distances between grey images in pixel units
(0..255 per pixel, 64 pixels for the digits):

- copies: each sample's distance to its nearest *training* image, against each training image's distance to its
  nearest *other* training image (the spacing of real data). Memorised samples sit far below that spacing.
- closer than the test image's own neighbour: for each test image, its distance to the nearest training image; we
  count samples closer to it than that (the issue's check). A generator that generalises makes some: 20,000 new
  draws cover the space more densely than 1,437 training images. So it comes with a calibrated version:
- test-neighbour share: draw as many samples as there are training images and ask, for each test image, whether
  its nearest neighbour in (training images + samples) is a sample. A generator drawing from the data distribution
  gives about 0.5 (the two sets are exchangeable); one that copies training images gives about 0 (ties go to the
  training image); one that saw the test images gives about 1.
"""

from __future__ import annotations

import numpy as np


def _flat(images: np.ndarray) -> np.ndarray:
    """uint8 NHWC (channels are copies of the grey image) -> float64 (N, H*W)."""
    return np.asarray(images)[..., 0].reshape(len(images), -1).astype(np.float64)


def nearest_distances(a: np.ndarray, b: np.ndarray, *, exclude_self: bool = False,
                      chunk: int = 2048) -> np.ndarray:
    """Distance from each row of ``a`` to its nearest row of ``b`` (``exclude_self``: ``a is b``, skip i == i)."""
    b_sq = (b ** 2).sum(1)
    out = np.empty(len(a))
    for start in range(0, len(a), chunk):
        part = a[start:start + chunk]
        d2 = (part ** 2).sum(1)[:, None] + b_sq[None] - 2.0 * part @ b.T
        if exclude_self:
            d2[np.arange(len(part)), np.arange(start, start + len(part))] = np.inf
        out[start:start + chunk] = np.sqrt(np.maximum(d2.min(1), 0.0))
    return out


def _summary(d: np.ndarray) -> dict[str, float]:
    return {"min": float(d.min()), "p1": float(np.percentile(d, 1)), "median": float(np.median(d))}


def memorisation_report(samples: np.ndarray, train: np.ndarray, test: np.ndarray, *, seed: int = 0) -> dict:
    """Nearest-neighbour figures of ``samples`` against the ``train`` split they were fitted on and the ``test``
    split they must not know (all uint8 NHWC). See the module docstring for what each figure means.
    """
    s, tr, te = _flat(samples), _flat(train), _flat(test)
    train_spacing = nearest_distances(tr, tr, exclude_self=True)
    sample_to_train = nearest_distances(s, tr)
    test_to_train = nearest_distances(te, tr)
    closer = _closer_than_train_neighbour(s, te, test_to_train)
    return {
        "n_samples": len(s), "n_train": len(tr), "n_test": len(te),
        "train_to_train": _summary(train_spacing),
        "sample_to_train": _summary(sample_to_train),
        "samples_below_train_p1": int((sample_to_train < np.percentile(train_spacing, 1)).sum()),
        "samples_below_train_min": int((sample_to_train < train_spacing.min()).sum()),
        "test_to_train": _summary(test_to_train),
        "samples_closer_to_a_test_image": int(closer.any(1).sum()),
        "test_images_with_a_closer_sample": int(closer.any(0).sum()),
        "test_neighbour_share": _test_neighbour_share(s, tr, te, test_to_train, seed),
    }


def _closer_than_train_neighbour(s: np.ndarray, te: np.ndarray, test_to_train: np.ndarray,
                                 chunk: int = 2048) -> np.ndarray:
    """Boolean (n_samples, n_test): sample i is closer to test image j than j's nearest training image."""
    te_sq = (te ** 2).sum(1)
    rows = []
    for start in range(0, len(s), chunk):
        part = s[start:start + chunk]
        d2 = (part ** 2).sum(1)[:, None] + te_sq[None] - 2.0 * part @ te.T
        rows.append(np.sqrt(np.maximum(d2, 0.0)) < test_to_train[None])
    return np.concatenate(rows)


def _test_neighbour_share(s: np.ndarray, tr: np.ndarray, te: np.ndarray, test_to_train: np.ndarray,
                          seed: int) -> float:
    """Share of test images whose nearest neighbour among (train + len(train) samples) is a sample (0.5: ideal)."""
    rng = np.random.default_rng(seed)
    pick = rng.choice(len(s), size=min(len(tr), len(s)), replace=False)
    return float((nearest_distances(te, s[pick]) < test_to_train).mean())
