"""`robustscale synth`: new labelled digits from a density model of the training split, in the DDPM npz format."""

import numpy as np

from robustscale.cli import main
from robustscale.data import load_arrays, load_synthetic


def test_synth_writes_valid_npz_that_is_not_a_copy_of_training_images(tmp_path, capsys):
    out = tmp_path / "syn.npz"
    assert main(["synth", "--method", "gmm", "--dataset", "digits", "--n", "600", "-o", str(out)]) == 0
    x, y = load_synthetic(out, image_size=8, channels=3, num_classes=10)  # the foundation's validation
    assert isinstance(x, np.memmap) and x.shape == (600, 8, 8, 3) and x.dtype == np.uint8
    assert set(np.unique(y)) == set(range(10))  # every class drawn
    train_x, _ = load_arrays("digits", "train")
    a = x[..., 0].reshape(len(x), -1).astype(float)
    b = train_x[..., 0].reshape(len(train_x), -1).astype(float)
    nearest = np.sqrt(((a[:, None, :] - b[None]) ** 2).sum(-1)).min(1)
    assert nearest.min() > 20.0  # no image is (close to) a copy of a training image (pixel values 0..255)
    typical = np.sqrt(((b[:200, None, :] - b[None, 200:]) ** 2).sum(-1)).min(1)
    assert np.median(nearest) > 0.5 * np.median(typical)
    assert a.std() > 30  # real structure, not a flat mean image


def test_synth_refuses_the_test_split(tmp_path, capsys):
    assert main(["synth", "--method", "gmm", "--split", "test", "-o", str(tmp_path / "x.npz")]) == 2
    assert "training split only" in capsys.readouterr().err
    assert not (tmp_path / "x.npz").exists()


def test_synth_is_seeded(tmp_path):
    for name in ("a", "b"):
        assert main(["synth", "--method", "gmm", "--n", "50", "--seed", "3", "-o", str(tmp_path / f"{name}.npz")]) == 0
    a = np.load(tmp_path / "a.npz", allow_pickle=False)
    b = np.load(tmp_path / "b.npz", allow_pickle=False)
    assert np.array_equal(a["image"], b["image"]) and np.array_equal(a["label"], b["label"])


def test_the_largest_seed_draws_with_the_gmm(tmp_path):
    """--seed allows 2**32 - 1, but the mixture of class c was seeded with seed + c: scikit-learn's
    InvalidParameterError for every class past 0 (found with issue 34's range checks)."""
    assert main(["synth", "--method", "gmm", "--n", "20", "--seed", str(2**32 - 1), "-o", str(tmp_path / "x.npz")]) == 0
    assert len(np.load(tmp_path / "x.npz", allow_pickle=False)["label"]) == 20
