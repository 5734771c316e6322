"""Kill-and-resume reproduces the uninterrupted run exactly (CPU, deterministic settings)."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

from robustscale.cli import main
from robustscale.training import load_config, train

pytestmark = pytest.mark.slow

ARGS = ["configs/digits.yaml", "model.name=wrn_10_1", "data.val_size=100", "eval.pgd_steps=5", "eval.autoattack=none",
        "train.epochs=4", "attack.steps=2", "attack.step_size=0.1"]


def _cli(run_dir):
    return [sys.executable, "-m", "robustscale", "train", *ARGS, "--out", str(run_dir), "--quiet"]


def _lines(path):
    return path.read_text().splitlines() if path.exists() else []


def test_sigkill_then_resume_matches_uninterrupted(tmp_path):
    """The uninterrupted run trains in this process (one torch thread, tests/conftest.py), as the killed one does in
    its own: a process of its own would add only torch's start-up (test_ddp.py compares the same way)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    ref = tmp_path / "ref"
    train(load_config(ARGS[0], ARGS[1:]), ref, progress=False)

    run = tmp_path / "killed"
    proc = subprocess.Popen(_cli(run), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while len(_lines(run / "metrics.jsonl")) < 2 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    time.sleep(0.3)  # somewhere inside epoch 3
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    assert json.loads((run / "record.json").read_text())["status"] == "running"

    assert main(["train", "--resume", str(run), "--quiet", "--json"]) == 0  # in this process: the kill was the point
    resumed, expected = json.loads((run / "record.json").read_text()), json.loads((ref / "record.json").read_text())
    assert resumed["status"] == "done"
    assert resumed["metrics"] == expected["metrics"]
    for name in ("last.safetensors", "best.safetensors"):
        a, b = load_file(run / name), load_file(ref / name)
        assert a.keys() == b.keys()
        assert all(torch.equal(a[k], b[k]) for k in a), name
    # each step counted once, though epoch 3 ran twice
    assert resumed["accounting"]["train_flops"] == expected["accounting"]["train_flops"]
    assert resumed["accounting"]["samples_seen"] == expected["accounting"]["samples_seen"]
    assert [json.loads(r)["val_pgd_acc"] for r in _lines(run / "metrics.jsonl")][-1] == \
        [json.loads(r)["val_pgd_acc"] for r in _lines(ref / "metrics.jsonl")][-1]


def test_resume_in_process_is_bitwise(tiny_cfg, tmp_path):
    """Train 2 epochs, then resume to 3, versus 3 straight: identical weights and optimiser step."""
    cfg3 = tiny_cfg("train.ema=true")
    straight = train(cfg3, tmp_path / "a", progress=False)
    cfg_first = tiny_cfg("train.ema=true", "train.max_steps=42")  # stops after epoch 2 (21 steps each)
    train(cfg_first, tmp_path / "b", progress=False)
    resumed = train(cfg3, tmp_path / "b", resume=True, progress=False)
    assert resumed.accounting.samples_seen == straight.accounting.samples_seen
    a, b = load_file(tmp_path / "a" / "best.safetensors"), load_file(tmp_path / "b" / "best.safetensors")
    assert resumed.metrics.best_epoch == straight.metrics.best_epoch
    assert all(torch.equal(a[k], b[k]) for k in a)
