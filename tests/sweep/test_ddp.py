"""Every run of a sweep as a DDP job: a 1-run digits sweep on 2 gloo processes through the local executor and through
submitit's local executor (Slurm's code path, one task per rank), against the same run on 1 process; the Slurm job
is sent the preemption signal mid-epoch, requeues itself and ends exactly as the uninterrupted run; a rank killed
mid-run fails its run instead of leaving it running."""

import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file
from submitit.local.local import LocalJobEnvironment

from robustscale.store.record import read_record, record_problems
from robustscale.sweep import sweep
from robustscale.sweep.run import ATTEMPTS, ERROR_LOG

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("ports")]  # see tests/conftest.py

REPO = Path(__file__).resolve().parents[2]
# 2 epochs of 22 steps (1,387 training digits, batch 64): the signal lands after epoch 1, so the job stops mid-epoch 2
TINY = {"model.name": "wrn_10_1", "train.epochs": 2, "eval.pgd_steps": 2, "eval.autoattack": "none",
        "data.val_size": 50, "attack.steps": 1, "attack.step_size": None, "data.batch_size": 64}
DEADLINE_S = 420


def write_spec(folder: Path, procs: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "spec.yaml"
    path.write_text(yaml.safe_dump({"base": str(REPO / "configs" / "digits.yaml"), "axes": {"train.loss": ["at"]},
                                    "overrides": TINY, "ddp": {"nodes": 1, "procs_per_node": procs},
                                    "slurm": {"cluster": "local", "timeout_min": 10}}))
    return path


def attempts(run_dir: Path) -> list[dict]:
    path = run_dir / ATTEMPTS
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def wait_for(condition, what: str, deadline: float) -> None:
    while not condition():
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def the_run(out: Path) -> Path:
    (run_dir,) = [p for p in out.iterdir() if p.is_dir() and not p.name.startswith(".")]
    return run_dir


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The same run on 1 process (in this process), on 2 through the local executor, and on 2 as a submitit job that
    is preempted after its first epoch."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("ddp")
    try:
        one = sweep(write_spec(root / "one", 1), root / "one" / "out")
        local = sweep(write_spec(root / "local", 2), root / "local" / "out")
        spec = write_spec(root / "slurm", 2)
        out = root / "slurm" / "out"
        submitted = sweep(spec, out, executor="slurm", wait=False)
        run_dir, deadline = the_run(out), time.time() + DEADLINE_S
        wait_for(lambda: (run_dir / "metrics.jsonl").exists(), "the first epoch", deadline)
        os.kill(attempts(run_dir)[0]["pid"], LocalJobEnvironment._usr_sig())  # what Slurm sends before the limit
        wait_for(lambda: read_record(run_dir).status.value == "done", "the requeued job", deadline)
        again = sweep(spec, out, executor="slurm")
    finally:
        torch.set_num_threads(threads)
    return {"one": the_run(root / "one" / "out"), "local": the_run(root / "local" / "out"), "slurm": run_dir,
            "summaries": {"one": one, "local": local, "submitted": submitted, "again": again}}


def _record(run_dir: Path) -> dict:
    return json.loads((run_dir / "record.json").read_text())


@pytest.mark.parametrize("path", ["local", "slurm"])
def test_a_two_process_run_is_done_on_two_ranks_with_the_flops_of_one(runs, path):
    one, two = _record(runs["one"]), _record(runs[path])
    assert two["status"] == "done" and record_problems(two) == []
    assert (two["hardware"]["world_size"], two["hardware"]["nodes"]) == (2, 1)
    assert one["hardware"]["world_size"] == 1
    # the global batch is split between the ranks and counted once: the FLOPs of the 1-process run
    assert two["accounting"]["train_flops"] == one["accounting"]["train_flops"] > 0
    assert two["accounting"]["samples_seen"] == one["accounting"]["samples_seen"]
    ranks = attempts(runs[path])[0]["ranks"]
    assert len(ranks) == 2 and ranks[0]["pid"] != ranks[1]["pid"]
    assert not (runs[path] / "claim.json").exists()
    assert runs["summaries"]["local"]["done"] == [runs["local"].name]


def test_preempted_job_resumes_mid_epoch_under_its_claim_and_ends_as_if_uninterrupted(runs):
    first, second = attempts(runs["slurm"])
    steps_per_epoch = json.loads((runs["local"] / "metrics.jsonl").read_text().splitlines()[0])["step"]
    assert not first["resume"] and second["resume"]
    assert second["from_step"] % steps_per_epoch != 0, "stopped at an epoch boundary, not at the next step"
    assert second["claim"] == first["claim"]  # the requeued job adopted the claim its first incarnation parked
    assert second["ranks"][0]["pid"] != first["ranks"][0]["pid"]
    interrupted, straight = _record(runs["slurm"]), _record(runs["local"])
    assert interrupted["metrics"] == straight["metrics"]
    assert interrupted["accounting"]["train_flops"] == straight["accounting"]["train_flops"]
    for name in ("last.safetensors", "best.safetensors"):
        a, b = load_file(runs["slurm"] / name), load_file(runs["local"] / name)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
    same = ("epoch", "step", "loss", "train_clean_acc", "train_adv_acc", "val_pgd_acc", "train_flops")
    rows = [[{k: json.loads(line)[k] for k in same} for line in (d / "metrics.jsonl").read_text().splitlines()]
            for d in (runs["slurm"], runs["local"])]
    assert rows[0] == rows[1]  # the epoch cut in two logs the same loss and accuracies, bit for bit
    assert runs["summaries"]["again"]["trained"] == [] and runs["summaries"]["again"]["done"] == [runs["slurm"].name]


@pytest.mark.parametrize("executor, rank, cause", [
    ("local", 1, "rank 1 of 2 was killed by SIGKILL"),  # the launcher sees which rank died
    ("slurm", 0, "rank 0 of 2 of job"),  # rank 0, the claim's holder, dies: the waiting sweep fails it, naming it
])
def test_a_rank_killed_mid_run_fails_the_run_instead_of_leaving_it_running(tmp_path, executor, rank, cause):
    spec, out = write_spec(tmp_path, 2), tmp_path / "out"
    summary = {}
    worker = threading.Thread(target=lambda: summary.update(sweep(spec, out, executor=executor)))
    worker.start()
    deadline = time.time() + DEADLINE_S
    wait_for(lambda: out.exists() and any(not p.name.startswith(".") for p in out.iterdir()), "the run", deadline)
    run_dir = the_run(out)
    wait_for(lambda: attempts(run_dir) and read_record(run_dir).status.value == "running", "training", deadline)
    os.kill(attempts(run_dir)[0]["ranks"][rank]["pid"], signal.SIGKILL)
    worker.join(timeout=DEADLINE_S)
    record = read_record(run_dir)
    assert record.status.value == "failed" and record_problems(record) == []
    assert cause in (run_dir / ERROR_LOG).read_text()
    assert summary["failed"] == [run_dir.name] and run_dir.name in summary["errors"]
    assert not (run_dir / "claim.json").exists()
