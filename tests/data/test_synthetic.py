"""Synthetic images in the DDPM/EDM npz release format: memory-mapped, validated against the real dataset."""

import os
import zipfile

import numpy as np
import pytest

from robustscale.config import load_config
from robustscale.data import load_synthetic, load_train_data, save_synthetic
from robustscale.data.synthetic import cache_key, content_key
from robustscale.errors import DataError

SHAPE = dict(image_size=8, channels=3, num_classes=10)


def _arrays(n=20, size=8, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8), rng.integers(0, 10, n).astype(np.int64)


def test_save_then_load_is_memory_mapped_and_equal(tmp_path):
    x, y = _arrays()
    path = save_synthetic(tmp_path / "syn.npz", x, y)
    assert path.is_file() and [p.name for p in tmp_path.iterdir()] == ["syn.npz"]  # no temp file left
    mx, my = load_synthetic(path, **SHAPE)
    assert isinstance(mx, np.memmap) and isinstance(my, np.memmap)
    assert mx.dtype == np.uint8 and mx.shape == x.shape and np.array_equal(mx, x)
    assert np.array_equal(my, y)


def test_plain_np_savez_release_file_is_memory_mapped(tmp_path):
    x, y = _arrays(7)
    np.savez(tmp_path / "release.npz", image=x, label=y.astype(np.uint8))  # labels as any integer type
    mx, my = load_synthetic(tmp_path / "release.npz", **SHAPE)
    assert isinstance(mx, np.memmap) and np.array_equal(mx, x) and np.array_equal(my, y)


def test_compressed_npz_loads_through_a_cache(tmp_path):
    x, y = _arrays(9, seed=1)
    path = tmp_path / "c.npz"
    np.savez_compressed(path, image=x, label=y)
    for _ in range(2):  # the second call reuses the cache
        mx, my = load_synthetic(path, **SHAPE)
        assert np.array_equal(mx, x) and np.array_equal(my, y)
        assert isinstance(mx, np.memmap)


def _bad(tmp_path, **arrays):
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    return path


@pytest.mark.parametrize("case", ["no_label", "no_image", "float_images", "wrong_size", "wrong_channels", "nchw",
                                  "label_negative", "label_too_big", "labels_2d", "float_labels", "count_mismatch",
                                  "object_array", "object_array_compressed", "not_zip", "missing"])
def test_malformed_files_are_one_line_data_errors_naming_the_file(tmp_path, case, assert_one_line):
    x, y = _arrays()
    path = tmp_path / "bad.npz"
    if case == "no_label":
        _bad(tmp_path, image=x, labels=y)
    elif case == "no_image":
        _bad(tmp_path, images=x, label=y)
    elif case == "float_images":
        _bad(tmp_path, image=x.astype(np.float32) / 255, label=y)
    elif case == "wrong_size":
        _bad(tmp_path, image=_arrays(size=16)[0], label=y)
    elif case == "wrong_channels":
        _bad(tmp_path, image=x[..., :1], label=y)
    elif case == "nchw":
        _bad(tmp_path, image=np.ascontiguousarray(x.transpose(0, 3, 1, 2)), label=y)
    elif case == "label_negative":
        _bad(tmp_path, image=x, label=np.where(np.arange(len(y)) == 3, -1, y))
    elif case == "label_too_big":
        _bad(tmp_path, image=x, label=np.where(np.arange(len(y)) == 3, 10, y))
    elif case == "labels_2d":
        _bad(tmp_path, image=x, label=y[:, None])
    elif case == "float_labels":
        _bad(tmp_path, image=x, label=y.astype(np.float64))
    elif case == "count_mismatch":
        _bad(tmp_path, image=x, label=y[:-1])
    elif case == "object_array":
        np.savez(path, image=np.array([x[0], "x"], dtype=object), label=y, allow_pickle=True)
    elif case == "object_array_compressed":
        np.savez_compressed(path, image=np.array([x[0], "x"], dtype=object), label=y, allow_pickle=True)
    elif case == "not_zip":
        path.write_bytes(b"this is not a zip archive" * 10)
    with pytest.raises(DataError) as err:
        load_synthetic(path, **SHAPE)
    assert str(path) in assert_one_line(err.value)


def test_load_train_data_opens_and_validates_the_synthetic_set(tmp_path, digits_yaml, assert_one_line):
    x, y = _arrays(30)
    good = save_synthetic(tmp_path / "good.npz", x, y)
    bundle = load_train_data(load_config(digits_yaml, [f"data.synthetic.path={good}"]).data)
    assert bundle.n_synthetic == 30 and isinstance(bundle.synthetic_x, np.memmap)
    assert np.array_equal(bundle.synthetic_x, x) and np.array_equal(bundle.synthetic_y, y)
    # the same file is the wrong shape once digits are upsampled to 16x16
    cfg = load_config(digits_yaml, [f"data.synthetic.path={good}", "data.image_size=16"])
    with pytest.raises(DataError) as err:
        load_train_data(cfg.data)
    assert "good.npz" in assert_one_line(err.value)
    cfg = load_config(digits_yaml, [f"data.synthetic.path={tmp_path / 'absent.npz'}"])
    with pytest.raises(DataError, match="absent.npz"):
        load_train_data(cfg.data)


# ---------------------------------------------------------------- cache and crafted members (issue 20, items 8, 12, 13)


def test_a_replaced_archive_never_serves_the_old_cache(tmp_path):
    """Replacing a compressed npz with an older-mtime file kept serving the old decompressed cache."""
    x, y = _arrays(9, seed=1)
    path = tmp_path / "c.npz"
    np.savez_compressed(path, image=x, label=y)
    assert np.array_equal(load_synthetic(path, **SHAPE)[0], x)
    other = tmp_path / "other.npz"
    np.savez_compressed(other, image=255 - x, label=y)
    os.utime(other, (1, 1))  # older than the cache
    os.replace(other, path)
    mx, _ = load_synthetic(path, **SHAPE)
    assert np.array_equal(mx, 255 - x)
    caches = sorted(p.name for p in tmp_path.glob("c.image.*.npy"))
    assert len(caches) == 1  # the stale cache of the old content is gone


def test_the_content_key_follows_the_arrays_not_how_the_archive_was_written(tmp_path):
    """What a run's record keeps of its synthetic set: the same arrays compressed, or stamped another time, keep the
    key (the decompression cache's key does not: it keys the file); one changed pixel changes it."""
    x, y = _arrays(30)
    plain = save_synthetic(tmp_path / "plain.npz", x, y)
    np.savez_compressed(tmp_path / "packed.npz", image=x, label=y)
    stamped = tmp_path / "stamped.npz"
    with zipfile.ZipFile(plain) as src, zipfile.ZipFile(stamped, "w") as dst:
        for info in src.infolist():
            info.date_time = (2026, 12, 7, 12, 0, 0)
            dst.writestr(info, src.read(info.filename))
    assert content_key(plain) == content_key(tmp_path / "packed.npz") == content_key(stamped)
    assert len({cache_key(plain), cache_key(tmp_path / "packed.npz"), cache_key(stamped)}) == 3
    x[0, 0, 0, 0] ^= 1
    assert content_key(save_synthetic(tmp_path / "other.npz", x, y)) != content_key(plain)


def test_two_openers_of_a_fresh_archive_do_not_share_a_temp_name(tmp_path, monkeypatch):
    """Two processes opening a fresh npz shared one temp name (FileNotFoundError, EOFError in 2 of 3 rounds). The
    interleaving is forced here: while the first opener has written its temp file, a second one decompresses and
    renames; the first one's rename must still succeed."""
    x, y = _arrays(9, seed=2)
    path = tmp_path / "c.npz"
    np.savez_compressed(path, image=x, label=y)
    real_save, state = np.save, {"nested": False}

    def save_then_let_another_opener_run(file, arr, *args, **kwargs):
        real_save(file, arr, *args, **kwargs)
        if not state["nested"]:
            state["nested"] = True
            other_x, _ = load_synthetic(path, **SHAPE)  # the second process, at the worst moment
            assert np.array_equal(other_x, x)

    monkeypatch.setattr(np, "save", save_then_let_another_opener_run)
    mx, my = load_synthetic(path, **SHAPE)
    assert state["nested"] and np.array_equal(mx, x) and np.array_equal(my, y)
    assert not list(tmp_path.glob(".*tmp*"))


@pytest.mark.parametrize("case", ["negative_shape", "larger_shape", "bad_header", "object_dtype_header",
                                  "corrupt_compressed"])
def test_crafted_or_corrupt_members_are_one_line_and_say_what(tmp_path, case, assert_one_line):
    """A negative-shape member crashed np.memmap; npz problems were all reported as "cannot be read without
    pickle"."""
    x, y = _arrays(5)
    path = tmp_path / "s.npz"
    if case == "corrupt_compressed":
        np.savez_compressed(path, image=x, label=y)
        raw = bytearray(path.read_bytes())
        raw[200:260] = bytes(60)
        path.write_bytes(bytes(raw))
    else:
        np.savez(path, image=x, label=y)
        old, new = {"negative_shape": (b"(5, 8, 8, 3)", b"(-5, 8, 8,3)"),
                    "larger_shape": (b"(5, 8, 8, 3)", b"(9, 8, 8, 3)"),
                    "bad_header": (b"(5, 8, 8, 3)", b"(5, 8, 8, 3 "),
                    "object_dtype_header": (b"'<i8'", b"'|O' ")}[case]
        path.write_bytes(path.read_bytes().replace(old, new, 1))
    with pytest.raises(DataError) as err:
        load_synthetic(path, **SHAPE)
    message = assert_one_line(err.value)
    assert str(path) in message and "without pickle" not in message
    expected = {"negative_shape": "shape", "larger_shape": "shape", "bad_header": "header",
                "object_dtype_header": "objects", "corrupt_compressed": "corrupt"}[case]
    assert expected in message


def test_synthetic_n_keeps_the_first_images_and_refuses_more_than_the_file_holds(tmp_path, digits_yaml,
                                                                                  assert_one_line):
    """Issue 19: ``data.synthetic.n`` makes the reuse of synthetic images an axis (the first n of the set)."""
    x, y = _arrays(30)
    path = save_synthetic(tmp_path / "s.npz", x, y)
    bundle = load_train_data(load_config(digits_yaml, [f"data.synthetic.path={path}", "data.synthetic.n=7"]).data)
    assert bundle.n_synthetic == 7 and isinstance(bundle.synthetic_x, np.memmap)
    assert np.array_equal(bundle.synthetic_x, x[:7]) and np.array_equal(bundle.synthetic_y, y[:7])
    with pytest.raises(DataError) as err:
        load_train_data(load_config(digits_yaml, [f"data.synthetic.path={path}", "data.synthetic.n=31"]).data)
    assert "data.synthetic.n=31" in assert_one_line(err.value) and "30 images" in str(err.value)


@pytest.mark.parametrize("method", ["gmm", "ddpm"])
def test_the_generator_never_sees_an_early_stopping_image(tmp_path, monkeypatch, method):
    """``synth`` fits on the training split less its validation subset (issue 28, item 9): the images handed to
    either generator exclude every image PGD-40 early stopping of a run with ``data.val_size <= holdout`` uses."""
    import robustscale.data.generate as generate
    from robustscale.data import load_arrays, split_validation

    seen = {}

    def capture(images, labels, n, **_):
        seen["images"] = images
        return images[:n], labels[:n]

    monkeypatch.setattr(generate, "sample_class_conditional", capture)
    monkeypatch.setattr(generate.diffusion, "sample_class_conditional", capture)
    generate.synthesize("digits", 10, tmp_path / "s.npz", method=method)
    x, _ = load_arrays("digits", "train")
    fitted = {img.tobytes() for img in seen["images"]}
    assert len(seen["images"]) == len(x) - generate.HOLDOUT
    val = split_validation(len(x), generate.HOLDOUT)[1]
    assert not fitted & {img.tobytes() for img in x[val]}


def test_every_shipped_digits_config_early_stops_on_images_the_generator_left_out(repo_root):
    """The validation subset of val_size v is the first v images of one fixed permutation, so a holdout of
    max(v) covers every config; the synth default must be that large."""
    import yaml

    from robustscale.data.generate import HOLDOUT

    sizes = []
    for path in [*(repo_root / "configs").glob("*.yaml"), *(repo_root / "configs" / "sweeps").glob("*.yaml")]:
        text = yaml.safe_load(path.read_text())
        digits = "digits" in path.read_text()
        sizes += [v for k, v in _walk(text) if k.endswith("val_size") and digits]
    assert sizes and max(sizes) <= HOLDOUT


def _walk(tree, prefix=""):
    if isinstance(tree, dict):
        for key, value in tree.items():
            yield from _walk(value, f"{prefix}{key}.")
            if not isinstance(value, (dict, list)):
                yield f"{prefix}{key}", value
