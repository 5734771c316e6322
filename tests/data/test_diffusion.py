"""The diffusion generator of the digits (`robustscale synth --method ddpm`): format, split hygiene, determinism,
and the EDM pieces it is built from. Training is a few dozen steps here: the tests check plumbing, not quality
(BENCHMARKS.md measures that)."""

from dataclasses import replace

import numpy as np
import pytest
import torch

from robustscale.cli import main
from robustscale.data import digits, load_arrays, load_synthetic, splits
from robustscale.data.diffusion import (SIGMA_MAX, SIGMA_MIN, DiffusionRecipe, denoising_loss,
                                        sample_class_conditional, sample_images, sigma_schedule, train_denoiser)
from robustscale.data.generate import synthesize

TINY = DiffusionRecipe(width=32, depth=1, train_steps=30, batch_size=64, warmup_steps=5, sample_steps=4)


def _synth(path, *extra):
    return main(["synth", "--method", "ddpm", "--n", "40", "--train-steps", "20", "-o", str(path), *extra])


def test_cli_ddpm_writes_an_npz_the_training_loader_accepts(tmp_path, capsys):
    out = tmp_path / "ddpm.npz"
    assert _synth(out) == 0
    assert "ddpm" in capsys.readouterr().out
    x, y = load_synthetic(out, image_size=8, channels=3, num_classes=10)  # the loader's own validation
    assert x.dtype == np.uint8 and x.shape == (40, 8, 8, 3)
    assert np.array_equal(x[..., 0], x[..., 1]) and np.array_equal(x[..., 0], x[..., 2])  # grey, as the dataset
    assert y.dtype == np.int64 and y.min() >= 0 and y.max() <= 9
    with np.load(out, allow_pickle=False) as npz:
        assert sorted(npz.files) == ["image", "label"]


def test_cli_refuses_the_test_split_and_an_unknown_method(tmp_path, capsys, assert_one_line):
    assert _synth(tmp_path / "x.npz", "--split", "test") == 2
    assert "training split only" in assert_one_line(capsys.readouterr().err.strip())
    assert main(["synth", "--method", "vae", "-o", str(tmp_path / "y.npz")]) == 2
    assert "gmm, ddpm" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_the_generator_reads_the_training_split_only(tmp_path, monkeypatch):
    real_loader, requested = digits.load_digits_arrays, []

    def recording_loader(split, image_size=8):
        requested.append(split)
        return real_loader(split, image_size)

    monkeypatch.setattr(splits, "load_digits_arrays", recording_loader)  # the name the data layer calls
    synthesize("digits", 20, tmp_path / "s.npz", method="ddpm", recipe=TINY)
    assert requested == ["train"]


def test_training_sees_only_the_arrays_it_is_given():
    """The denoiser is a function of the arrays passed in: training on the train split twice gives the same weights,
    and swapping in the test split changes them (so nothing else, e.g. a hidden load of the test set, feeds in)."""
    x, y = load_arrays("digits", "train")
    xt, yt = load_arrays("digits", "test")
    a, b = train_denoiser(x, y, recipe=TINY), train_denoiser(x, y, recipe=TINY)
    c = train_denoiser(xt, yt, recipe=TINY)
    for pa, pb, pc in zip(a.parameters(), b.parameters(), c.parameters()):
        assert torch.equal(pa, pb)
    assert not all(torch.equal(pa, pc) for pa, pc in zip(a.parameters(), c.parameters()))


def test_same_seed_same_npz_other_seed_other_images(tmp_path):
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        synthesize("digits", 30, tmp_path / f"{name}.npz", seed=seed, method="ddpm", recipe=TINY)
    a, b, c = (np.load(tmp_path / f"{n}.npz", allow_pickle=False) for n in "abc")
    assert np.array_equal(a["image"], b["image"]) and np.array_equal(a["label"], b["label"])
    assert not np.array_equal(a["image"], c["image"])


def test_seeded_generation_leaves_the_global_rng_alone():
    x, y = load_arrays("digits", "train")
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    sample_class_conditional(x[:100], y[:100], 5, recipe=TINY)
    assert torch.equal(torch.rand(3), expected)


def test_labels_follow_the_class_frequencies_of_the_training_split():
    x, y = load_arrays("digits", "train")
    _, labels = sample_class_conditional(x, y, 2000, recipe=DiffusionRecipe(width=16, depth=1, train_steps=2,
                                                                             sample_steps=1))
    share = np.bincount(labels, minlength=10) / len(labels)
    assert np.abs(share - np.bincount(y, minlength=10) / len(y)).max() < 0.03


def test_edm_noise_schedule_runs_from_sigma_max_to_sigma_min_then_zero():
    s = sigma_schedule(18)
    assert len(s) == 19 and s[-1] == 0
    assert s[0] == pytest.approx(SIGMA_MAX) and s[-2] == pytest.approx(SIGMA_MIN)
    assert bool((s[1:] < s[:-1]).all())  # strictly decreasing


def test_training_lowers_the_denoising_loss():
    x, y = load_arrays("digits", "train")
    recipe = DiffusionRecipe(width=64, depth=2, batch_size=64, warmup_steps=20)
    untrained = train_denoiser(x, y, recipe=replace(recipe, train_steps=0))
    trained = train_denoiser(x, y, recipe=replace(recipe, train_steps=300))
    before, after = (denoising_loss(net, x[:512], y[:512], seed=1) for net in (untrained, trained))
    assert after < 0.7 * before


def test_ddpm_is_the_default_method_and_bad_knobs_are_one_line_errors(tmp_path, capsys, assert_one_line):
    out = tmp_path / "d.npz"
    assert main(["synth", "--n", "10", "--train-steps", "3", "-o", str(out)]) == 0
    captured = capsys.readouterr()
    assert "(ddpm)" in captured.out and "training step 3" in captured.err  # progress on stderr
    for bad in (["--train-steps", "0"], ["--guidance", "-1"], ["--guidance", "inf"], ["--guidance", "nan"],
                ["--method", "gmm", "--train-steps", "5"]):
        assert main(["synth", "--n", "10", *bad, "-o", str(tmp_path / "bad.npz")]) == 2
        assert bad[-2] in assert_one_line(capsys.readouterr().err.strip())
    assert not (tmp_path / "bad.npz").exists()


def test_an_output_folder_is_refused_before_any_training(tmp_path, capsys, assert_one_line, monkeypatch):
    from robustscale.data import diffusion

    def no_training(*args, **kwargs):
        raise AssertionError("trained before checking the output")

    monkeypatch.setattr(diffusion, "train_denoiser", no_training)
    assert main(["synth", "--n", "10", "-o", str(tmp_path)]) == 2  # the default method, ddpm: minutes otherwise
    assert "is a folder" in assert_one_line(capsys.readouterr().err.strip())


def test_classifier_free_guidance_changes_the_samples_not_the_format():
    x, y = load_arrays("digits", "train")
    net = train_denoiser(x, y, recipe=TINY)
    labels = np.arange(20) % 10
    plain, guided = (sample_images(net, labels, shape=(8, 8, 3), seed=5, recipe=replace(TINY, guidance=w))
                     for w in (1.0, 3.0))
    assert guided.shape == plain.shape == (20, 8, 8, 3) and guided.dtype == np.uint8
    assert not np.array_equal(plain, guided)
