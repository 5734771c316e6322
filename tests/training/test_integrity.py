"""What a run leaves on disk stays true after kills, divergence, full disks and crafted files (issue 20: items 5, 7,
9, 10 and the training cases of 12). Each test failed on the landed code."""

import errno
import json
import logging
import shutil

import pytest
import torch
from safetensors.torch import load_file

import robustscale.training.loop as loop
from robustscale.cli import main
from robustscale.config import load_config
from robustscale.errors import UserError
from robustscale.training import checkpoint as ckpt
from robustscale.training import train

pytestmark = pytest.mark.xdist_group("test_integrity")  # module fixtures built once (conftest.py)

# 6 steps per epoch (1387 training images, batch 256), a 1-step attack, PGD-1 on 50 validation images
ARGS = ["model.name=wrn_10_1", "data.val_size=50", "eval.pgd_steps=1", "eval.autoattack=none", "attack.steps=1",
        "data.batch_size=256"]


def _cfg(*extra):
    return load_config("configs/digits.yaml", [*ARGS, *extra])


def _epochs(run_dir):
    return [json.loads(line)["epoch"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _record(run_dir):
    return json.loads((run_dir / "record.json").read_text())


class Killed(BaseException):
    """A kill at a chosen point (not an Exception: nothing may handle it, as nothing handles SIGKILL)."""


@pytest.fixture(scope="module")
def one_epoch(tmp_path_factory):
    """A run killed after its first epoch's checkpoint (train.epochs=3, stopped by max_steps)."""
    run_dir = tmp_path_factory.mktemp("integrity") / "run"
    train(_cfg("train.epochs=3", "train.max_steps=6"), run_dir, progress=False)
    return run_dir


@pytest.fixture
def run_copy(one_epoch, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(one_epoch, copy)
    record = _record(copy)
    record["status"] = "running"  # as a kill leaves it
    (copy / "record.json").write_text(json.dumps(record))
    return copy


def test_a_kill_between_the_log_line_and_the_checkpoint_does_not_repeat_an_epoch(run_copy, monkeypatch, caplog):
    """Item 5: 1, 2, 3, 4, 4, 5... after 5 of 6 kills injected between the metrics append and the checkpoint rename.
    Also item 10: the kill's temp file is removed on resume, and an unchanged environment resumes without warning."""
    real_save = loop._save

    def kill_at_epoch_2(run):
        if run.progress.epoch == 2:
            (run.dir / ".checkpoint.safetensors.k1ll3d.tmp.safetensors").write_bytes(b"half a checkpoint")
            raise Killed
        real_save(run)

    monkeypatch.setattr(loop, "_save", kill_at_epoch_2)
    with pytest.raises(Killed):
        train(_cfg("train.epochs=3"), run_copy, resume=True, progress=False)
    assert _epochs(run_copy) == [1, 2]  # epoch 2 logged, its checkpoint never written
    monkeypatch.setattr(loop, "_save", real_save)
    with caplog.at_level(logging.WARNING):
        record = train(_cfg("train.epochs=3"), run_copy, resume=True, progress=False)
    assert record.status == "done"
    assert _epochs(run_copy) == [1, 2, 3]
    assert not list(run_copy.glob(".*.tmp*"))
    assert "not bitwise" not in caplog.text


def test_resume_under_another_thread_count_warns_that_it_is_not_exact(run_copy, caplog):
    """Item 7: a run killed under 1 thread and resumed under 2 ended at another accuracy, silently."""
    saved = ckpt.load_checkpoint(run_copy / ckpt.CHECKPOINT)["env"]
    assert saved["threads"] == torch.get_num_threads() == 1
    assert saved["torch"] == torch.__version__ and saved["device"].startswith("cpu") and saved["world_size"] == 1
    torch.set_num_threads(2)
    try:
        with caplog.at_level(logging.WARNING):
            train(_cfg("train.epochs=2"), run_copy, resume=True, progress=False)
    finally:
        torch.set_num_threads(1)
    assert "threads 1 -> 2" in caplog.text and "not bitwise" in caplog.text


def _all_finite(run_dir):
    for path in run_dir.glob("*.safetensors"):
        for name, t in load_file(path).items():
            if t.is_floating_point() and not torch.isfinite(t).all():
                return f"{path.name}:{name}"
    return None


def test_divergence_with_a_finite_loss_is_caught_and_nothing_non_finite_is_saved(tmp_path):
    """Item 9: lr=100 ended `done` with loss ~1e25 and inf BatchNorm running_var in best, last and checkpoint."""
    run_dir = tmp_path / "run"
    record = train(_cfg("train.epochs=3", "train.lr=100"), run_dir, progress=False)
    assert record.status == "failed"
    assert "non-finite" in record.reason or "loss became" in record.reason
    assert _all_finite(run_dir) is None
    kept = ckpt.saved_epoch(run_dir / ckpt.CHECKPOINT)
    if kept is None:
        assert "nothing to resume" in record.reason
    else:
        assert f"checkpoint of epoch {kept} (finite) is kept" in record.reason


def test_divergence_in_the_first_epoch_says_no_checkpoint_is_kept(tmp_path):
    """Item 9: with lr=1e6 the message said a good checkpoint was kept when there was none."""
    run_dir = tmp_path / "run"
    record = train(_cfg("train.epochs=2", "train.lr=1e6"), run_dir, progress=False)
    assert record.status == "failed" and "nothing to resume" in record.reason
    assert not (run_dir / ckpt.CHECKPOINT).exists() and _all_finite(run_dir) is None


def test_a_non_finite_checkpoint_is_never_written(tmp_path):
    with pytest.raises(ckpt.NonFiniteCheckpoint):
        ckpt.save_checkpoint(tmp_path / "c.safetensors", {"w": torch.tensor([1.0, float("inf")])})
    assert list(tmp_path.iterdir()) == []


def test_a_full_disk_ends_the_run_failed_not_running(run_copy, monkeypatch):
    """Item 12: a full disk left the record `running`. Here the checkpoint write fails with ENOSPC, and so does
    every new file (the record's temp file too): the record is rewritten in place."""

    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ckpt, "save_checkpoint", no_space)
    monkeypatch.setattr("robustscale.store.record.write_json", no_space)
    with pytest.raises(OSError):
        train(_cfg("train.epochs=3"), run_copy, resume=True, progress=False)
    record = _record(run_copy)
    assert record["status"] == "failed" and "No space left" in record["reason"]


@pytest.mark.parametrize("damage", ["no_optimizer", "progress_text", "wrong_shape", "rng_text"])
def test_a_crafted_checkpoint_is_one_line_and_the_run_failed(run_copy, damage, assert_one_line):
    """Item 12: a checkpoint with missing or mistyped entries raised from _restore, outside any error handling."""
    state = ckpt.load_checkpoint(run_copy / ckpt.CHECKPOINT)
    if damage == "no_optimizer":
        del state["optimizer"]
    elif damage == "progress_text":
        state["progress"] = "x"
    elif damage == "wrong_shape":
        name = next(k for k, v in state["model"].items() if v.ndim == 4)
        state["model"][name] = torch.zeros(1, 1, 1, 1)
    else:
        state["rng"]["python"] = "x"
    ckpt.save_checkpoint(run_copy / ckpt.CHECKPOINT, state)
    with pytest.raises(UserError) as err:
        train(_cfg("train.epochs=3"), run_copy, resume=True, progress=False)
    assert "checkpoint" in assert_one_line(err.value)
    assert _record(run_copy)["status"] == "failed"


def test_an_unreadable_checkpoint_says_so(tmp_path, assert_one_line):
    """Item 13: an unreadable checkpoint was reported as "No such file or directory"."""
    path = tmp_path / ckpt.CHECKPOINT
    path.write_bytes(b"\x00" * 64)
    with pytest.raises(UserError) as err:
        ckpt.load_checkpoint(path)
    message = assert_one_line(err.value)
    assert "not a readable robustscale checkpoint" in message and "No such file" not in message


def test_an_unwritable_out_is_one_line(tmp_path, capsys, assert_one_line):
    """Item 12: `--out` where no folder can be made printed a traceback."""
    blocker = tmp_path / "file.txt"
    blocker.write_text("not a folder")
    code = main(["train", "configs/digits.yaml", *ARGS, "train.epochs=1", "train.max_steps=1", "--quiet",
                 "--out", str(blocker / "run")])
    assert code == 2
    assert "file.txt" in assert_one_line(capsys.readouterr().err)
