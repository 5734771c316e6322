"""A run keeps the content key of the synthetic set it trained on (its id holds only the path): a resume refuses
another file at that path with one line, and goes on once the file it started on is back."""

import numpy as np
import pytest

from robustscale.data import save_synthetic
from robustscale.data.synthetic import content_key
from robustscale.errors import UserError
from robustscale.store.record import read_record
from robustscale.training import train

STEPS = 14  # optimiser steps an epoch: ceil((1437 - 100 validation images) / 100)


def _digits_like(seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (64, 8, 8, 3), dtype=np.uint8), rng.integers(0, 10, 64).astype(np.int64)


def test_a_resume_refuses_another_file_at_the_synthetic_path_and_goes_on_on_the_first(tiny_cfg, tmp_path,
                                                                                     assert_one_line):
    path = tmp_path / "synthetic.npz"
    first = save_synthetic(path, *_digits_like(0)).read_bytes()
    key = content_key(path)
    run = ["train.epochs=2", "data.batch_size=100", f"data.synthetic.path={path}", "data.synthetic.fraction=0.3"]
    killed = train(tiny_cfg(*run, f"train.max_steps={STEPS}"), tmp_path / "run", progress=False)
    assert killed.epochs_run == 1 and killed.synthetic_key == key  # the record of a run stopped after epoch 1

    save_synthetic(path, *_digits_like(1))  # regenerated in place: same path, same size, other images
    assert content_key(path) != key
    with pytest.raises(UserError) as err:
        train(tiny_cfg(*run), tmp_path / "run", resume=True, progress=False)
    line = assert_one_line(err.value)
    assert str(path) in line and "not the file this run started on" in line and key in line
    assert read_record(tmp_path / "run").epochs_run == 1  # nothing trained on the other file

    path.write_bytes(first)
    done = train(tiny_cfg(*run), tmp_path / "run", resume=True, progress=False)
    assert done.epochs_run == 2 and done.synthetic_key == key
    assert read_record(tmp_path / "run").to_dict()["synthetic_key"] == key


def test_a_run_without_synthetic_data_keeps_no_key(tiny_cfg, tmp_path):
    record = train(tiny_cfg("train.epochs=1", "train.max_steps=2"), tmp_path / "run", progress=False)
    assert record.synthetic_key is None and read_record(tmp_path / "run").to_dict()["synthetic_key"] is None
