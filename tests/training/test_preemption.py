"""A stop requested by the scheduler is honoured at the next step boundary: the checkpoint holds that exact step (mid
epoch), the record stays running, and the resumed run ends bit for bit as the uninterrupted one."""

import json
import threading
import time

import pytest
import torch
from safetensors.torch import load_file

import robustscale.training.preemption as preemption
from robustscale.store.record import read_record
from robustscale.training import train
from robustscale.training.checkpoint import CHECKPOINT, saved_step

pytestmark = pytest.mark.slow

SAME = ("epoch", "step", "loss", "train_clean_acc", "train_adv_acc", "val_pgd_acc", "val_clean_acc", "train_flops",
        "samples_seen")


@pytest.fixture(autouse=True)
def no_request_left_behind():
    preemption.reset()
    yield
    preemption.reset()


def _rows(run_dir):
    return [{k: json.loads(line).get(k) for k in SAME} for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _request_once_logged(run_dir, stop):
    """The scheduler's signal, once epoch 1 is logged (so it lands inside epoch 2)."""
    while not stop.is_set() and not (run_dir / "metrics.jsonl").exists():
        time.sleep(0.01)
    preemption.request()


def test_stopped_twice_mid_epoch_and_resumed_equals_uninterrupted(tiny_cfg, tmp_path):
    cfg = tiny_cfg("train.ema=true")
    preemption.request()  # not armed (no scheduler): ignored, and it costs nothing
    straight = train(cfg, tmp_path / "a", progress=False)
    preemption.reset()

    run_dir = tmp_path / "b"
    with preemption.armed():
        preemption.request()  # already asked when training starts: it stops after the first step
        with pytest.raises(preemption.Preempted):
            train(cfg, run_dir, progress=False)
        assert saved_step(run_dir / CHECKPOINT) == 1 and read_record(run_dir).status.value == "running"
        preemption.reset()
        stop = threading.Event()
        signal = threading.Thread(target=_request_once_logged, args=(run_dir, stop))
        signal.start()
        try:
            with pytest.raises(preemption.Preempted):
                train(cfg, run_dir, resume=True, progress=False)
        finally:
            stop.set()
            signal.join()
    steps_per_epoch = _rows(run_dir)[0]["step"]
    assert steps_per_epoch < saved_step(run_dir / CHECKPOINT) < 2 * steps_per_epoch  # inside epoch 2
    preemption.reset()
    resumed = train(cfg, run_dir, resume=True, progress=False)

    assert resumed.status.value == "done" and resumed.metrics == straight.metrics
    assert resumed.accounting.train_flops == straight.accounting.train_flops
    assert resumed.accounting.samples_seen == straight.accounting.samples_seen
    assert _rows(run_dir) == _rows(tmp_path / "a")  # each epoch logged once, with the same numbers
    for name in ("last.safetensors", "best.safetensors"):
        a, b = load_file(tmp_path / "a" / name), load_file(run_dir / name)
        assert all(torch.equal(a[k], b[k]) for k in a), name
