"""A sweep killed mid-run and rerun trains every run exactly once; two sweeps over one spec never train a run twice."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import yaml

from robustscale.store.record import read_record, record_problems
from robustscale.sweep import sweep
from robustscale.sweep.run import ATTEMPTS

pytestmark = pytest.mark.slow

TINY = {"model.name": "wrn_10_1", "train.epochs": 1, "train.max_steps": 2, "eval.pgd_steps": 2,
        "eval.autoattack": "none", "data.val_size": 50, "attack.steps": 1, "attack.step_size": None,
        "data.batch_size": 32}
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def write_spec(tmp_path, digits_yaml):
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump({"base": str(digits_yaml),
                                    "axes": {"model.act_layer": ["relu", "gelu"], "train.loss": ["at", "trades"]},
                                    "overrides": TINY}))
    return path


def cli(spec, out, *extra):
    return [sys.executable, "-m", "robustscale", "sweep", str(spec), "--out", str(out), "--json", *extra]


def run_dirs(out):
    return sorted(p for p in out.iterdir() if p.is_dir() and not p.name.startswith("."))


def attempts(run_dir):
    path = run_dir / ATTEMPTS
    return len(path.read_text().splitlines()) if path.exists() else 0


def status(run_dir):
    record = read_record(run_dir)
    return record.status.value if record else None


def test_killed_sweep_resumes_and_trains_each_run_once(tmp_path, digits_yaml):
    spec, out = write_spec(tmp_path, digits_yaml), tmp_path / "out"
    proc = subprocess.Popen(cli(spec, out), env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while proc.poll() is None and time.time() < deadline:  # kill it while it trains its second run
        dirs = run_dirs(out) if out.exists() else []
        if any(status(d) == "done" for d in dirs) and any(status(d) == "running" for d in dirs):
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the sweep finished before it could be killed"
    before = {d.name: (status(d), attempts(d)) for d in run_dirs(out)}
    assert len(before) == 4 and list(s for s, _ in before.values()).count("done") >= 1
    interrupted = [rid for rid, (s, _) in before.items() if s == "running"]
    assert len(interrupted) <= 1  # (0 only if that run finished in the instant between our look and the kill)
    assert all((out / rid / "claim.json").exists() for rid in interrupted)  # a dead worker's claim

    summary = sweep(spec, out)
    assert sorted(summary["done"]) == sorted(before)
    assert sorted(summary["trained"]) == sorted(rid for rid, (s, _) in before.items() if s != "done")
    for run_dir in run_dirs(out):
        was, tries = before[run_dir.name]
        assert attempts(run_dir) == tries + (0 if was == "done" else 1), run_dir.name  # each trained once after
        assert record_problems(read_record(run_dir)) == []
        assert was == "done" or not (run_dir / "claim.json").exists()  # the dead worker's claim was taken over
    assert sweep(spec, out)["trained"] == []


def test_two_concurrent_sweeps_never_train_a_run_twice(tmp_path, digits_yaml):
    spec, out = write_spec(tmp_path, digits_yaml), tmp_path / "out"
    procs = [subprocess.Popen(cli(spec, out, *extra), env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for extra in (["--workers", "2"], [])]
    summaries = []
    for proc in procs:
        stdout, stderr = proc.communicate(timeout=400)
        assert proc.returncode == 0, stderr
        summaries.append(json.loads(stdout))
    trained = [set(s["trained"]) for s in summaries]
    assert not trained[0] & trained[1]
    assert trained[0] | trained[1] == {d.name for d in run_dirs(out)} and len(run_dirs(out)) == 4
    for run_dir in run_dirs(out):
        assert status(run_dir) == "done" and attempts(run_dir) == 1
        assert record_problems(read_record(run_dir)) == []


@pytest.mark.parametrize("record_status", ["pending", "running", "done"])
def test_a_job_that_died_after_taking_its_run_fails_it_and_one_that_never_got_to_it_does_not(tmp_path, record_status):
    """What the sweep does with the run of a job that ended without a result (``SlurmExecutor._died``): a run in
    training (``running``) or in its setup (``pending``, its attempt logged: data and model were being built) fails
    with the death as its reason; a ``pending`` run no worker got to (no attempt) stays ``pending`` for the next sweep
    to train; a ``done`` run stays done."""
    from robustscale.config import config_to_dict, load_config
    from robustscale.store.record import Status, new_record, write_record
    from robustscale.sweep.worker import fail_abandoned

    config = config_to_dict(load_config("configs/digits.yaml"))
    started, untouched = tmp_path / "started", tmp_path / "untouched"
    for run_dir in (started, untouched):
        run_dir.mkdir()
        write_record(run_dir, new_record(config, Status(record_status)))
    (started / ATTEMPTS).write_text(json.dumps({"pid": 1, "job": "slurm:7"}) + "\n")
    reason = "job 7 died (srun: task 0: Killed) without finishing the run; its log: 7_0_log.err"
    failed = {run_dir.name: fail_abandoned(run_dir, reason, ended_job="slurm:7") for run_dir in (started, untouched)}
    if record_status == "done":
        assert failed == {"started": None, "untouched": None} and status(started) == status(untouched) == "done"
        return
    assert failed["started"] is not None and status(started) == "failed"
    assert read_record(started).reason.startswith(reason) and "--retry-failed" in read_record(started).reason
    assert status(untouched) == ("failed" if record_status == "running" else "pending")
    assert not (started / "claim.json").exists()  # released: the next sweep (with --retry-failed) takes it
