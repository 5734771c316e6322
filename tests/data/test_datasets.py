"""Datasets in their distributed formats: CIFAR-10/100 pickles, SVHN .mat files, and the embedded digits."""

import hashlib
import pickle
import subprocess
import sys
from collections import Counter

import numpy as np
import pytest
import torch

from robustscale.config import load_config
from robustscale.data import load_arrays, load_data, load_train_data
from robustscale.errors import DataError

from .py2_pickle import dump_py2 as _dump


def _cifar_rows(images_nhwc):
    """NHWC uint8 -> the CIFAR row format: 3072 bytes per image, all red, then green, then blue, each row-major."""
    return np.ascontiguousarray(images_nhwc.transpose(0, 3, 1, 2).reshape(len(images_nhwc), 3072))


def _pattern(n, seed):
    return np.random.default_rng(seed).integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)


def _write_cifar10(root, per_batch=3):
    folder = root / "cifar-10-batches-py"
    folder.mkdir()
    train, test = [], []
    for i in range(1, 6):
        x, y = _pattern(per_batch, i), [(i + j) % 10 for j in range(per_batch)]
        _dump(folder / f"data_batch_{i}", {b"batch_label": f"batch {i}".encode(), b"labels": y,
                                          b"data": _cifar_rows(x), b"filenames": [b"f.png"] * per_batch})
        train.append((x, y))
    x, y = _pattern(per_batch, 99), [9 - j for j in range(per_batch)]
    _dump(folder / "test_batch", {b"batch_label": b"test", b"labels": y, b"data": _cifar_rows(x)})
    test.append((x, y))
    _dump(folder / "batches.meta", {b"label_names": [f"c{i}".encode() for i in range(10)],
                                    b"num_cases_per_batch": per_batch, b"num_vis": 3072})
    cat = lambda parts: (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]))  # noqa: E731
    return cat(train), cat(test)


def test_fake_cifar_pickles_read_like_the_real_ones(tmp_path):
    (x, y), _ = _write_cifar10(tmp_path)
    for encoding, key in (("bytes", b"data"), ("latin1", "data")):
        with open(tmp_path / "cifar-10-batches-py" / "data_batch_1", "rb") as fh:
            entry = pickle.load(fh, encoding=encoding)
        assert entry[key].dtype == np.uint8 and entry[key].shape == (3, 3072)
        assert np.array_equal(entry[key][0, :1024].reshape(32, 32), x[0, :, :, 0])


def test_cifar10_from_a_local_folder(tmp_path):
    (train_x, train_y), (test_x, test_y) = _write_cifar10(tmp_path)
    x, y = load_arrays("cifar10", "train", root=tmp_path)
    assert x.dtype == np.uint8 and x.shape == (15, 32, 32, 3) and y.dtype == np.int64
    assert np.array_equal(x, train_x) and np.array_equal(y, train_y)
    x, y = load_arrays("cifar10", "test", root=tmp_path)
    assert np.array_equal(x, test_x) and np.array_equal(y, test_y)


def test_cifar10_pixel_layout(tmp_path):
    """One bright pixel at (h=3, w=17, c=2) of the row format must land at x[n, 3, 17, 2]."""
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        rows = np.zeros((2, 3072), np.uint8)
        rows[1, 2 * 1024 + 3 * 32 + 17] = 255
        rows[0, 0 * 1024 + 30 * 32 + 1] = 7
        _dump(folder / name, {b"data": rows, b"labels": [0, 1]})
    _dump(folder / "batches.meta", {b"label_names": [b"c"] * 10})
    x, _ = load_arrays("cifar10", "test", root=tmp_path)
    assert x.shape == (2, 32, 32, 3)
    assert x[1, 3, 17, 2] == 255 and x[1].sum() == 255
    assert x[0, 30, 1, 0] == 7 and x[0].sum() == 7


def test_cifar100_fine_labels(tmp_path):
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    tr, te = _pattern(4, 1), _pattern(2, 2)
    _dump(folder / "train", {b"data": _cifar_rows(tr), b"fine_labels": [0, 42, 99, 7], b"coarse_labels": [0, 1, 2, 3]})
    _dump(folder / "test", {b"data": _cifar_rows(te), b"fine_labels": [98, 1], b"coarse_labels": [0, 1]})
    _dump(folder / "meta", {b"fine_label_names": [b"f"] * 100, b"coarse_label_names": [b"c"] * 20})
    x, y = load_arrays("cifar100", "train", root=tmp_path)
    assert np.array_equal(x, tr) and y.tolist() == [0, 42, 99, 7]
    x, y = load_arrays("cifar100", "test", root=tmp_path)
    assert np.array_equal(x, te) and y.tolist() == [98, 1]


@pytest.mark.parametrize("name,files", [("cifar10", ["data_batch_1", "test_batch", "batches.meta"]),
                                        ("cifar100", ["cifar-100-python", "train", "meta"]),
                                        ("svhn", ["train_32x32.mat", "test_32x32.mat"])])
def test_missing_dataset_folder_names_the_files_and_the_fix(tmp_path, name, files, assert_one_line):
    with pytest.raises(DataError) as err:
        load_arrays(name, "train", root=tmp_path / "nowhere")
    msg = assert_one_line(err.value)
    assert all(f in msg for f in files), msg
    assert "data.download" in msg and "nowhere" in msg


@pytest.mark.parametrize("name", ["cifar10", "svhn"])
def test_corrupt_dataset_file_is_a_data_error(tmp_path, name):
    if name == "svhn":
        (tmp_path / "train_32x32.mat").write_bytes(b"not a mat file" * 20)
    else:
        folder = tmp_path / "cifar-10-batches-py"
        folder.mkdir()
        for f in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch", "batches.meta"]:
            (folder / f).write_bytes(b"junk")
    with pytest.raises(DataError):
        load_arrays(name, "train", root=tmp_path)


def _write_svhn(path, n, seed):
    from scipy.io import savemat

    x = np.random.default_rng(seed).integers(0, 256, (32, 32, 3, n), dtype=np.uint8)  # H, W, C, N as released
    y = (np.arange(n) % 10 + 1).astype(np.uint8).reshape(n, 1)  # 1..10, where 10 is the digit 0
    savemat(path, {"X": x, "y": y})
    return x, y


def test_svhn_from_mat_files(tmp_path):
    tr_x, tr_y = _write_svhn(tmp_path / "train_32x32.mat", 12, 0)
    te_x, _ = _write_svhn(tmp_path / "test_32x32.mat", 3, 1)
    x, y = load_arrays("svhn", "train", root=tmp_path)
    assert x.dtype == np.uint8 and x.shape == (12, 32, 32, 3) and x.flags.c_contiguous
    assert np.array_equal(x, tr_x.transpose(3, 0, 1, 2))  # X[h, w, c, n] -> x[n, h, w, c]
    assert y.dtype == np.int64 and y.tolist() == [1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1, 2]
    x, y = load_arrays("svhn", "test", root=tmp_path)
    assert np.array_equal(x, te_x.transpose(3, 0, 1, 2)) and y.tolist() == [1, 2, 3]


def test_svhn_pixel_layout(tmp_path):
    from scipy.io import savemat

    raw = np.zeros((32, 32, 3, 2), np.uint8)
    raw[3, 17, 2, 1] = 200  # h=3, w=17, c=2 of image 1
    savemat(tmp_path / "train_32x32.mat", {"X": raw, "y": np.array([[10], [3]], np.uint8)})
    x, y = load_arrays("svhn", "train", root=tmp_path)
    assert x[1, 3, 17, 2] == 200 and x.sum() == 200
    assert y.tolist() == [0, 3]


# ---------------------------------------------------------------- digits (embedded)


def _hashes(x_uint8, y):
    return Counter(hashlib.sha1(img.tobytes() + bytes([int(label)])).hexdigest() for img, label in zip(x_uint8, y))


def test_digits_load_data_format():
    x, y = load_data("digits")
    assert x.dtype == torch.float32 and x.shape == (360, 3, 8, 8) and x.is_contiguous()
    assert y.dtype == torch.int64 and y.shape == (360,)
    assert 0.0 <= x.min() and x.max() <= 1.0 and x.max() == 1.0
    assert set(y.tolist()) == set(range(10))
    assert torch.equal(x[:, 0], x[:, 1]) and torch.equal(x[:, 0], x[:, 2])  # grey copied to RGB
    tx, ty = load_data("digits", "train")
    assert tx.shape == (1437, 3, 8, 8) and ty.shape == (1437,)


def test_digits_split_is_fixed_and_a_partition_of_the_dataset():
    from sklearn.datasets import load_digits

    a_x, a_y = load_arrays("digits", "train")
    b_x, b_y = load_arrays("digits", "train")
    assert np.array_equal(a_x, b_x) and np.array_equal(a_y, b_y)
    t_x, t_y = load_arrays("digits", "test")
    bunch = load_digits()
    levels = lambda x: np.round(x[..., 0].astype(np.float64) / 255.0 * 16.0).astype(np.uint8)  # noqa: E731
    # pixel values map back to scikit-learn's 0..16 levels, and train + test is the dataset, multiset for multiset
    full = _hashes(bunch.images.astype(np.uint8), bunch.target)
    assert _hashes(levels(a_x), a_y) + _hashes(levels(t_x), t_y) == full
    assert len(a_y) + len(t_y) == len(bunch.target) == 1797


def test_digits_are_scikit_learns_arrays_and_its_split_without_importing_it(monkeypatch):
    """What ``load_digits`` and ``train_test_split(..., test_size=0.2, random_state=0, stratify=labels)`` give with the
    installed scikit-learn, pixel for pixel and in the same order, read from its CSV and the stored split; in a fresh
    process scikit-learn is never imported for it; where its CSV is not found, one line says so and how to fix it."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    from robustscale.data import digits

    bunch = load_digits()
    images = np.round(bunch.images / 16.0 * 255.0).astype(np.uint8)
    train, test = train_test_split(np.arange(1797), test_size=digits.TEST_FRACTION, random_state=digits.SPLIT_SEED,
                                   stratify=bunch.target)
    assert len(train) == digits.N_TRAIN
    for split, idx in (("train", train), ("test", test)):
        x, y = digits.load_digits_arrays(split)
        assert np.array_equal(x[..., 0], images[idx]) and np.array_equal(y, bunch.target[idx]), split
    monkeypatch.setattr(digits.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(DataError, match="digits.csv.gz not found .*pip install --force-reinstall"):
        digits.load_digits_arrays("test")
    code = ("import sys; from robustscale.data import load_data; load_data('digits', 'train'); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'sklearn'))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert done.stdout.strip() == "[]", done.stdout


def test_digits_upsampling_preserves_content():
    x8, y8 = load_data("digits", "train")
    x16, y16 = load_data("digits", "train", image_size=16)
    assert x16.shape == (1437, 3, 16, 16)
    assert torch.equal(y8, y16)
    assert torch.equal(x16, x8.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3))


def test_unknown_dataset_and_split_are_data_errors(assert_one_line):
    with pytest.raises(DataError) as err:
        load_arrays("imagenet")
    assert "imagenet" in assert_one_line(err.value)
    with pytest.raises(DataError) as err:
        load_arrays("digits", "val")
    assert "val" in assert_one_line(err.value)


# ---------------------------------------------------------------- the training bundle


def test_load_train_data_carves_a_fixed_validation_subset(digits_yaml):
    cfg = load_config(digits_yaml, ["data.val_size=200"])
    a = load_train_data(cfg.data)
    b = load_train_data(load_config(digits_yaml, ["data.val_size=200", "train.seed=7"]).data)
    assert len(a.val_x) == 200 and len(a.train_x) == 1237 and a.n_synthetic == 0
    assert np.array_equal(a.val_x, b.val_x) and np.array_equal(a.train_y, b.train_y)
    full_x, full_y = load_arrays("digits", "train")
    assert _hashes(a.train_x, a.train_y) + _hashes(a.val_x, a.val_y) == _hashes(full_x, full_y)


@pytest.mark.parametrize("val_size", [1437, 5000])
def test_val_size_must_leave_training_images(digits_yaml, val_size, assert_one_line):
    cfg = load_config(digits_yaml, [f"data.val_size={val_size}"])
    with pytest.raises(DataError) as err:
        load_train_data(cfg.data)
    assert "data.val_size" in assert_one_line(err.value)
