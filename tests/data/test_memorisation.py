"""The memorisation check separates copies of training images, leaked test images and new draws."""

import numpy as np
import pytest

from robustscale.data import load_arrays
from robustscale.data.memorisation import memorisation_report, nearest_distances

pytestmark = pytest.mark.xdist_group("test_memorisation")  # module fixtures built once (conftest.py)


@pytest.fixture(scope="module")
def splits():
    return load_arrays("digits", "train")[0], load_arrays("digits", "test")[0]


def test_nearest_distances_match_brute_force():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(7, 5)), rng.normal(size=(9, 5))
    brute = np.sqrt(((a[:, None] - b[None]) ** 2).sum(-1))
    assert np.allclose(nearest_distances(a, b, chunk=3), brute.min(1))
    self_brute = np.sqrt(((a[:, None] - a[None]) ** 2).sum(-1)) + np.diag(np.full(7, np.inf))
    assert np.allclose(nearest_distances(a, a, exclude_self=True, chunk=2), self_brute.min(1))


def test_copies_of_training_images_are_flagged(splits):
    train, test = splits
    report = memorisation_report(train[::-1].copy(), train, test)
    assert report["sample_to_train"]["median"] == 0.0
    assert report["samples_below_train_min"] == len(train)
    assert report["test_neighbour_share"] == 0.0  # a copy ties with its training image, never beats it


def test_leaked_test_images_are_flagged(splits):
    train, test = splits
    report = memorisation_report(np.concatenate([test] * 4), train, test)
    assert report["test_images_with_a_closer_sample"] == len(test)
    assert report["test_neighbour_share"] == 1.0


def test_unseen_real_images_look_like_new_draws(splits):
    """Three disjoint parts of the real training split as 'samples', 'train' and 'test': a perfect generator. Its
    samples sit at the training spacing and win about half the nearest-neighbour contests (the calibration)."""
    train, _ = splits
    samples, fitted, held_out = train[:500], train[500:1000], train[1000:1300]
    report = memorisation_report(samples, fitted, held_out)
    assert report["samples_below_train_min"] <= 5
    ratio = report["sample_to_train"]["median"] / report["train_to_train"]["median"]
    assert 0.8 < ratio < 1.2
    assert 0.35 < report["test_neighbour_share"] < 0.65
