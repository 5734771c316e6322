"""Real DDP: 2 processes on the gloo backend (torchrun), against 1 process with the same global batch."""

import json
import os
import socket
import subprocess
import sys

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("ports")]  # see tests/conftest.py

ARGS = ["configs/digits.yaml", "model.name=wrn_10_1", "data.val_size=100", "eval.pgd_steps=5",
        "eval.autoattack=none", "train.epochs=2", "attack.steps=2", "attack.step_size=0.075"]


def _train(run_dir, nproc):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    if nproc == 1:
        cmd = [sys.executable, "-m", "robustscale", "train", *ARGS, "--quiet", "--out", str(run_dir)]
    else:
        with socket.socket() as sock:  # a free port for the rendezvous
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}", f"--master_port={port}",
               "-m", "robustscale", "train", *ARGS, "--quiet", "--out", str(run_dir)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    if nproc > 1:  # only rank 0 reports
        assert done.stdout.count("done:") == 1 and "pending" not in done.stdout
    return json.loads((run_dir / "record.json").read_text())


@pytest.mark.parametrize("loss", ["at", "trades"])
def test_two_gloo_processes_match_one(tmp_path, loss):
    ARGS.append(f"train.loss={loss}")
    try:
        one, two = _train(tmp_path / "one", 1), _train(tmp_path / "two", 2)
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
