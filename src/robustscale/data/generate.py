"""Synthetic data at demo scale: a class-conditional density model of the training split, sampled into new
labelled images and written in the DDPM/EDM release format (``image`` uint8 NHWC, ``label``).

The paper's most important knob is extra synthetic data (1M DDPM images for CIFAR-10). Two generators of the
embedded digits, both fitted on the training images that PGD-40 early stopping never uses: the training split less
the first ``holdout`` images of the validation split's fixed permutation (:func:`robustscale.data.splits.
split_validation`), so the validation subset of any run with ``data.val_size <= holdout`` (every shipped digits config)
is unseen by the generator too, and the test split never:

- ``gmm``: per class, a Gaussian mixture in PCA space (scikit-learn); seconds to fit.
- ``ddpm``: a small class-conditional diffusion model (EDM recipe, :mod:`robustscale.data.diffusion`); minutes.

The samples are new images drawn from the model, not copies (:mod:`robustscale.data.memorisation` measures it).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from sklearn.decomposition import PCA
from sklearn.mixture import GaussianMixture

from robustscale.data import diffusion
from robustscale.data.splits import load_arrays, split_validation
from robustscale.data.synthetic import save_synthetic
from robustscale.datasets import MAX_SYNTH_IMAGES
from robustscale.errors import ParameterError, UserError, shown

PCA_COMPONENTS = 24
HOLDOUT = 200  # validation images the generator never sees: the largest data.val_size of the shipped digits configs
MIXTURE_COMPONENTS = 6


def sample_class_conditional(images: np.ndarray, labels: np.ndarray, n: int, *, seed: int = 0,
                             components: int = MIXTURE_COMPONENTS) -> tuple[np.ndarray, np.ndarray]:
    """Fit PCA + a Gaussian mixture per class on uint8 NHWC ``images`` and draw ``n`` new labelled images.

    Classes are sampled in proportion to their training frequency. Returns ``(uint8 NHWC, int64)``.
    """
    rng = np.random.default_rng(seed)
    grey = images[..., 0].reshape(len(images), -1).astype(np.float64) / 255.0  # channels are copies for digits
    pca = PCA(n_components=min(PCA_COMPONENTS, grey.shape[1]), random_state=seed).fit(grey)
    z = pca.transform(grey)
    classes, counts = np.unique(labels, return_counts=True)
    per_class = rng.multinomial(n, counts / counts.sum())
    out_x, out_y = [], []
    for c, k in zip(classes, per_class):
        if k == 0:
            continue
        zc = z[labels == c]
        gmm = GaussianMixture(n_components=min(components, len(zc)), covariance_type="full", reg_covar=1e-3,
                              random_state=(seed + int(c)) % 2**32).fit(zc)  # scikit-learn's seeds are 32-bit
        samples, _ = gmm.sample(int(k))
        out_x.append(pca.inverse_transform(samples))
        out_y.append(np.full(int(k), c, dtype=np.int64))
    flat = np.clip(np.concatenate(out_x), 0.0, 1.0)
    h, w, ch = images.shape[1:]
    x = np.round(flat * 255.0).astype(np.uint8).reshape(-1, h, w, 1).repeat(ch, axis=3)
    y = np.concatenate(out_y)
    order = rng.permutation(len(y))
    return np.ascontiguousarray(x[order]), y[order]


METHODS = ("gmm", "ddpm")


def synthesize(dataset: str, n: int, out, *, split: str = "train", seed: int = 0, image_size: int | None = None,
               method: str = "gmm", recipe=None, log=None, holdout: int = HOLDOUT):
    """``robustscale synth``: fit on ``split`` (only "train" is allowed) of ``dataset`` and write ``out`` (npz).

    ``robustscale synth`` defaults to ``ddpm``, the better generator (BENCHMARKS.md, "Synthetic digits"); this
    function keeps ``gmm`` as its default so that a caller that names no method keeps taking seconds, not minutes.
    ``recipe`` (a :class:`robustscale.data.diffusion.DiffusionRecipe`) and ``log(step, loss, seconds)`` only apply to
    ``ddpm``. The output path is checked before any fitting, so a bad ``out`` costs no training. ``holdout``: the
    validation images left out of the fit (module docstring).
    """
    if method not in METHODS:
        raise ParameterError(f"method must be one of {', '.join(METHODS)}, got '{shown(method)}'", "method")
    if split != "train":
        raise UserError(f"synth fits on the training split only (got '{split}'): fitting on test data would leak "
                        "test images into training")
    if dataset != "digits":
        raise UserError(f"synth models the embedded digits only; for {dataset} use the public DDPM/EDM releases "
                        "(an .npz with image and label) through data.synthetic.path")
    if isinstance(n, bool) or not 1 <= n <= MAX_SYNTH_IMAGES:
        raise ParameterError(f"n {n}: draw from 1 to {MAX_SYNTH_IMAGES:,} images (all are held in memory)", "n")
    if Path(out).is_dir():
        raise UserError(f"'{shown(Path(out))}' is a folder: pass a file name to write")
    x, y = load_arrays(dataset, "train", image_size=image_size)
    if not 0 <= holdout < len(x):
        raise UserError(f"synth --holdout must be from 0 to {len(x) - 1} (the training images), got {holdout}")
    fit = split_validation(len(x), holdout)[0]  # what early stopping never looks at
    x, y = x[fit], y[fit]
    if method == "ddpm":
        images, labels = diffusion.sample_class_conditional(x, y, n, seed=seed, log=log,
                                                            recipe=recipe or diffusion.DiffusionRecipe())
    else:
        images, labels = sample_class_conditional(x, y, n, seed=seed)
    return save_synthetic(out, images, labels), len(labels)
