"""CIFAR batches are read with a restricted unpickler, and no data root is taken from a model file (item 1 of issue
20; CIFAR labels out of range or of the wrong type: item 12).

The pickles here are generated like the real files (Python 2 strings, protocol 2), plus crafted ones whose
``__reduce__`` would run a shell command: the tests assert the command's side effect did not happen.
"""

import os
import pickle

import numpy as np
import pytest

from robustscale.cli import main
from robustscale.config import load_config
from robustscale.data import load_arrays
from robustscale.errors import DataError
from robustscale.training.model_files import create_from_config, save_model

from .py2_pickle import dump_py2 as _dump


class _Shell:
    """An object whose unpickling runs a shell command (the red team's payload, made harmless: it touches a file)."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def _batch(n=2, labels=None, seed=0):
    rows = np.random.default_rng(seed).integers(0, 256, (n, 3072), dtype=np.uint8)
    return {b"batch_label": b"b", b"labels": list(range(n)) if labels is None else labels, b"data": rows,
            b"filenames": [b"f.png"] * n}


def _cifar10(root, **override):
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        _dump(folder / name, override.get(name, _batch()))
    _dump(folder / "batches.meta", override.get("batches.meta", {b"label_names": [b"c"] * 10}))
    return folder


@pytest.mark.parametrize("where", ["data_batch_1", "test_batch", "inside_labels"])
def test_a_pickle_that_runs_code_is_refused_and_runs_nothing(tmp_path, where, assert_one_line):
    marker = tmp_path / "PWNED"
    payload = _Shell(marker)
    if where == "inside_labels":
        _cifar10(tmp_path / "data", data_batch_1=_batch(labels=[0, payload]), test_batch=_batch(labels=[0, payload]))
    else:
        _cifar10(tmp_path / "data", **{where: {b"data": payload, b"labels": [0]}})
    errors = []
    for split in ("train", "test"):
        try:
            load_arrays("cifar10", split, root=tmp_path / "data")
        except DataError as err:
            errors.append(assert_one_line(err))
    assert not marker.exists(), "the pickle's payload ran"
    assert errors and all("not a CIFAR batch" in e for e in errors), errors


def test_real_format_batches_still_load(tmp_path):
    batch = _batch(3, labels=[7, 8, 9], seed=4)
    _cifar10(tmp_path, test_batch=batch)
    x, y = load_arrays("cifar10", "test", root=tmp_path)
    assert x.shape == (3, 32, 32, 3) and y.tolist() == [7, 8, 9]
    assert np.array_equal(x[0, :, :, 0].reshape(-1), batch[b"data"][0, :1024])


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_python3_repacked_batches_load_too(protocol):
    from robustscale.data.safe_pickle import safe_loads

    data = pickle.dumps({"data": np.zeros((2, 3072), np.uint8), "labels": [1, 2]}, protocol=protocol)
    entry = safe_loads(data)
    assert entry["data"].shape == (2, 3072) and entry["labels"] == [1, 2]


@pytest.mark.parametrize("obj", [np.array([None], dtype=object), np.int64(3), complex(1, 2), Exception("x"),
                                 np.zeros(2, dtype=[("a", "O")])])
def test_anything_the_real_files_never_hold_is_refused(obj):
    from robustscale.data.safe_pickle import UnsafePickle, safe_loads

    for protocol in (2, 5):
        with pytest.raises(UnsafePickle):
            safe_loads(pickle.dumps(obj, protocol=protocol))


def test_calling_ndarray_directly_is_refused():
    """``numpy.ndarray((10**12,))`` in a pickle would allocate whatever the file asks for."""
    from robustscale.data.safe_pickle import UnsafePickle, safe_loads

    with pytest.raises(UnsafePickle):
        safe_loads(b"\x80\x02cnumpy\nndarray\nK\x05\x85\x85R.")


@pytest.mark.parametrize("labels, why", [([0, 10], "out of range"), ([0, -1], "negative"), ([0, 1.5], "float"),
                                         ([0, "1"], "text"), ([0], "too few"), ([0, True], "bool")])
def test_labels_out_of_range_or_of_the_wrong_type_are_one_line(tmp_path, labels, why, assert_one_line):
    _cifar10(tmp_path, test_batch=_batch(2, labels=labels))
    with pytest.raises(DataError) as err:
        load_arrays("cifar10", "test", root=tmp_path)
    assert "labels" in assert_one_line(err.value), why


def test_pixels_of_the_wrong_type_are_one_line(tmp_path, assert_one_line):
    _cifar10(tmp_path, test_batch={b"data": np.zeros((2, 3072), np.float32), b"labels": [0, 1]})
    with pytest.raises(DataError) as err:
        load_arrays("cifar10", "test", root=tmp_path)
    assert "uint8" in assert_one_line(err.value)


def test_eval_does_not_take_the_data_root_from_a_model_file(tmp_path, monkeypatch, capsys, assert_one_line):
    """A downloaded run folder named its own data root in best.safetensors' metadata; `robustscale eval FOLDER`
    then unpickled that folder's batches (an os.system payload ran). Now the root is the user's (--data-root,
    default ./data), and a hint names the model's."""
    marker = tmp_path / "PWNED"
    run = tmp_path / "downloaded-run"
    _cifar10(run / "data", test_batch={b"data": _Shell(marker), b"labels": [0]},
             **{"batches.meta": {b"label_names": _Shell(marker)}})
    cfg = load_config(None, ["data.dataset=cifar10", f"data.root={run / 'data'}", "model.name=wrn_10_1"])
    save_model(run / "best.safetensors", create_from_config(cfg), cfg)
    monkeypatch.chdir(tmp_path)
    assert main(["eval", str(run), "--attack", "pgd", "--steps", "1", "--n", "1"]) == 2
    message = assert_one_line(capsys.readouterr().err)
    assert "--data-root" in message and "cifar10 not found" in message
    assert not marker.exists(), "the model file chose which pickles were read"
    assert main(["eval", str(run), "--attack", "pgd", "--steps", "1", "--n", "1", "--data-root",
                 str(run / "data")]) == 2  # the user asked for it: read, refused, still nothing ran
    assert "not a CIFAR batch" in assert_one_line(capsys.readouterr().err)
    assert not marker.exists()
