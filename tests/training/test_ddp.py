"""Real DDP: 2 processes on the gloo backend, against 1 process with the same global batch (trained in the test's own
process, one torch thread: tests/conftest.py). PGD-AT's two ranks are started by torchrun, as on a cluster; TRADES's
by robustscale's own launcher from this process (``train --procs-per-node 2``'s path), whose ranks fork from its
forkserver instead of importing torch three times over."""

import json
import os
import socket
import subprocess
import sys

import pytest

from robustscale.training import load_config, train
from robustscale.training.launch import train_on_ranks

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("ports")]  # see tests/conftest.py

ARGS = ["configs/digits.yaml", "model.name=wrn_10_1", "data.val_size=100", "eval.pgd_steps=5",
        "eval.autoattack=none", "train.epochs=2", "attack.steps=2", "attack.step_size=0.075"]


def _train_one(run_dir):
    train(load_config(ARGS[0], ARGS[1:]), run_dir, progress=False)
    return json.loads((run_dir / "record.json").read_text())


def _train_two(run_dir, launcher):
    if launcher == "robustscale":
        train_on_ranks(load_config(ARGS[0], ARGS[1:]), run_dir, 2, progress=False)
        return json.loads((run_dir / "record.json").read_text())
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


@pytest.mark.parametrize(("loss", "launcher"), [("at", "torchrun"), ("trades", "robustscale")])
def test_two_gloo_processes_match_one(tmp_path, loss, launcher):
    ARGS.append(f"train.loss={loss}")
    try:
        one, two = _train_one(tmp_path / "one"), _train_two(tmp_path / "two", launcher)
    finally:
        ARGS.pop()
    assert two["status"] == "done" and (two["hardware"]["world_size"], one["hardware"]["world_size"]) == (2, 1)
    # same global batch: the same samples and FLOPs, counted once over both ranks
    assert two["accounting"]["samples_seen"] == one["accounting"]["samples_seen"]
    assert two["accounting"]["train_flops"] == one["accounting"]["train_flops"]
    # BatchNorm statistics are per rank (half batches), so the numbers agree within noise, not bitwise
    assert abs(two["metrics"]["pgd40_acc"] - one["metrics"]["pgd40_acc"]) < 0.15
    assert abs(two["metrics"]["clean_acc"] - one["metrics"]["clean_acc"]) < 0.15
    assert two["metrics"]["clean_acc"] > 0.5  # it learned
    rows = (tmp_path / "two" / "metrics.jsonl").read_text().splitlines()
    assert len(rows) == 2  # only rank 0 writes
