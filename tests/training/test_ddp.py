"""Real DDP: 2 processes on the gloo backend (torchrun), against 1 process with the same global batch: the run trained
in the test's own process, one torch thread (tests/conftest.py), rather than as a command line in one more process
(tests/training/test_resume.py trains through that)."""

import json
import os
import socket
import subprocess
import sys

import pytest

from robustscale.training import load_config, train

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("ports")]  # see tests/conftest.py

ARGS = ["configs/digits.yaml", "model.name=wrn_10_1", "data.val_size=100", "eval.pgd_steps=5",
        "eval.autoattack=none", "train.epochs=2", "attack.steps=2", "attack.step_size=0.075"]


def _train_one(run_dir):
    train(load_config(ARGS[0], ARGS[1:]), run_dir, progress=False)
    return json.loads((run_dir / "record.json").read_text())


def _train_two(run_dir):
    with socket.socket() as sock:  # a free port for the rendezvous
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={port}",
           "-m", "robustscale", "train", *ARGS, "--quiet", "--out", str(run_dir)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("done:") == 1 and "pending" not in done.stdout  # only rank 0 reports
    return json.loads((run_dir / "record.json").read_text())


@pytest.mark.parametrize("loss", ["at", "trades"])
def test_two_gloo_processes_match_one(tmp_path, loss):
    ARGS.append(f"train.loss={loss}")
    try:
        one, two = _train_one(tmp_path / "one"), _train_two(tmp_path / "two")
    finally:
        ARGS.pop()
    assert two["status"] == "done"
    # same global batch: the same samples and FLOPs, counted once over both ranks
    assert two["accounting"]["samples_seen"] == one["accounting"]["samples_seen"]
    assert two["accounting"]["train_flops"] == one["accounting"]["train_flops"]
    # BatchNorm statistics are per rank (half batches), so the numbers agree within noise, not bitwise
    assert abs(two["metrics"]["pgd40_acc"] - one["metrics"]["pgd40_acc"]) < 0.15
    assert abs(two["metrics"]["clean_acc"] - one["metrics"]["clean_acc"]) < 0.15
    assert two["metrics"]["clean_acc"] > 0.5  # it learned
    rows = (tmp_path / "two" / "metrics.jsonl").read_text().splitlines()
    assert len(rows) == 2  # only rank 0 writes
