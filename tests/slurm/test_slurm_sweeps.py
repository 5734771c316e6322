"""The Slurm path against a real Slurm (slurmctld, slurmd and slurmdbd on this host: conftest.py): every sweep that
trains here is ``robustscale sweep ... --executor slurm`` run as a user runs it, in its own process, so every job is
an sbatch script that Slurm schedules, signals, requeues, times out and kills; nothing goes through submitit's local
executor. (What sbatch refuses goes through the same command line in this process: nothing trains.)

Sweeps are shared between tests where one sweep honestly shows several things: a CPU sweep of two runs (submitted
with --no-wait, then rerun), a sweep of two DDP runs of 2 tasks (one done, one whose rank 1 is killed), and one
sweep of two runs, one killed and one requeued by ``scontrol requeue``, left waiting in the queue past
``--stale-after`` while the sweep is rerun, then sent ``USR2``; a run with a 1-minute time limit trains meanwhile.

One liberty is taken with Slurm's queue, none with robustscale: Slurm lets a requeued job start again only 2 minutes
later (its BeginTime); :func:`hurry` lets it start at once (``scontrol update StartTime=now``) where the tests would
only wait.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from robustscale.cli import main
from robustscale.store.record import read_record, record_problems
from robustscale.store.scheduler import slurm_job_end
from robustscale.sweep import sweep
from robustscale.training.checkpoint import CHECKPOINT, saved_step

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("slurm")]

REPO = Path(__file__).resolve().parents[2]
# 22 steps an epoch (1,387 training digits, batch 64), about 0.4 s of one core; PGD-2 validation on 50 digits
TINY = {"model.name": "wrn_10_1", "train.epochs": 1, "eval.pgd_steps": 2, "eval.autoattack": "none",
        "data.val_size": 50, "attack.steps": 1, "attack.step_size": None, "data.batch_size": 64}
STEPS_PER_EPOCH = 22
SHORT_STEPS = 4  # a run that only has to end
# outlasts a requeue's 5 s KillWait (scripts/slurm-local.sh; submitit ignores the SIGTERM, so an idle fast machine
# trains on for 17 epochs of 0.3 s before the SIGKILL) and the epoch after its restart
LONG_EPOCHS = 30
DEADLINE_S = 900
NAME = "robustscale-test"  # the jobs' name
LIMITED = "robustscale-test-limited"  # the time-limited run's job
LIMITED_EPOCHS, LIMITED_SIGNAL_S = 10, 5  # its length, and when before its 1-minute limit Slurm signals it


def write_spec(folder: Path, *, losses=("at", "trades"), epochs: dict | None = None, procs: int = 1,
               slurm: dict | None = None) -> Path:
    """A digits sweep over ``losses``; ``epochs``: a loss's epochs (a rule), else :data:`SHORT_STEPS` steps."""
    folder.mkdir(parents=True, exist_ok=True)
    epochs = epochs or {}
    rules = [{"when": {"train.loss": loss}, "set": {"train.epochs": epochs[loss]} if loss in epochs else
              {"train.max_steps": SHORT_STEPS}} for loss in losses]
    body = {"base": str(REPO / "configs" / "digits.yaml"), "axes": {"train.loss": list(losses)}, "overrides": TINY,
            "rules": rules, "ddp": {"nodes": 1, "procs_per_node": procs},
            "slurm": {"name": NAME, "time": 10, **(slurm or {})}}
    path = folder / "spec.yaml"
    path.write_text(yaml.safe_dump(body))
    return path


def robustscale(*args, stdout: Path | None = None) -> subprocess.CompletedProcess | subprocess.Popen:
    """The command line, in its own process (a Popen writing to ``stdout`` and ``stdout``.err when given)."""
    command = [sys.executable, "-m", "robustscale", *map(str, args)]
    if stdout is not None:
        return subprocess.Popen(command, stdout=stdout.open("w"), stderr=stdout.with_suffix(".err").open("w"))
    return subprocess.run(command, capture_output=True, text=True, timeout=DEADLINE_S)


def summary(done) -> dict:
    assert done.stdout.strip(), done.stderr
    return json.loads(done.stdout)


def by_loss(out: Path) -> dict[str, Path]:
    runs = [p for p in out.iterdir() if p.is_dir() and not p.name.startswith(".")]
    return {json.loads((p / "record.json").read_text())["config"]["train"]["loss"]: p for p in runs}


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def status(run_dir: Path) -> str:
    return read_record(run_dir).status.value


def job_of(run_dir: Path) -> str:
    """The Slurm job (``12_0``) that trains the run, from its attempts log."""
    return lines(run_dir / "attempts.jsonl")[0]["job"].removeprefix("slurm:")


def sh(*args: str) -> str:
    return subprocess.run(list(args), capture_output=True, text=True, timeout=60, check=True).stdout.strip()


def queue_state(job: str) -> str:
    """squeue's state of ``job``, or "" once it has left the queue."""
    done = subprocess.run(["squeue", "-h", "-j", job, "-o", "%T"], capture_output=True, text=True, timeout=60)
    return done.stdout.strip()


def hurry(*, jobs=(), name: str | None = None) -> None:
    """Let requeued jobs waiting for their BeginTime (``jobs``, or those named ``name``) start now."""
    for line in sh("squeue", "-h", "-t", "PD", "-o", "%i|%r|%j").splitlines():
        job, reason, job_name = line.split("|", 2)
        if reason == "BeginTime" and (job in jobs or job_name == name):
            subprocess.run(["scontrol", "update", f"jobid={job}", "starttime=now"], capture_output=True, timeout=60)


def wait_for(condition, what: str, *, hurrying=None, deadline_s: float = DEADLINE_S) -> None:
    """Poll ``condition`` (every 0.25 s), calling ``hurrying`` every 2 s meanwhile."""
    end, polls = time.time() + deadline_s, 0
    while not condition():
        assert time.time() < end, f"timed out waiting for {what}"
        if hurrying is not None and polls % 8 == 0:
            hurrying()
        polls += 1
        time.sleep(0.25)


# ---------------------------------------------------------------------------------------------- submission


@pytest.mark.parametrize("args, words", [
    (["--partition", "nosuch"], ["partition nosuch", "debug"]),  # what sinfo lists, before anything is submitted
    (["--gpus", "1"], ["sbatch refused the jobs", "--gpus"]),  # a GPU asked of a CPU-only Slurm
])
def test_what_sbatch_refuses_is_one_line_with_status_2(slurm, tmp_path, capsys, assert_one_line, args, words):
    spec = write_spec(tmp_path)
    assert main(["sweep", str(spec), "--out", str(tmp_path / "out"), "--executor", "slurm", *args]) == 2
    message = assert_one_line(capsys.readouterr().err)
    assert message.startswith("error: ") and all(w in message for w in words)


@pytest.fixture(scope="module")
def two_runs(slurm, tmp_path_factory) -> dict:
    """A CPU sweep of two short runs with the default Slurm options: submitted with --no-wait, then rerun once the
    jobs ended."""
    root = tmp_path_factory.mktemp("two_runs")
    spec, out = write_spec(root), root / "out"
    submitted = summary(robustscale("sweep", spec, "--out", out, "--executor", "slurm", "--no-wait", "--json"))
    runs = by_loss(out)
    wait_for(lambda: all(status(r) in ("done", "failed") for r in runs.values()), "both jobs")
    again = summary(robustscale("sweep", spec, "--out", out, "--executor", "slurm", "--json"))
    return {"out": out, "runs": runs, "submitted": submitted, "again": again}


def test_a_cpu_sweep_asks_slurm_for_what_a_cpu_node_has_and_trains_each_run_once(two_runs):
    (script,) = (two_runs["out"] / ".submitit").glob("*_submission.sh")  # the rerun submitted nothing
    sbatch = script.read_text()
    node_cpus = int(sh("sinfo", "-h", "-p", "debug", "-o", "%c").rstrip("+"))
    assert "--gpus-per-node" not in sbatch and "gres" not in sbatch  # a CPU-only Slurm refuses any GPU request
    assert "#SBATCH --requeue" in sbatch  # whatever the site's JobRequeue says
    assert f"#SBATCH --cpus-per-task={min(8, node_cpus)}" in sbatch  # schedulable on this node
    assert sorted(two_runs["submitted"]["submitted"]) == sorted(r.name for r in two_runs["runs"].values())
    again = two_runs["again"]
    assert sorted(again["done"]) == sorted(r.name for r in two_runs["runs"].values())
    assert again["trained"] == [] and again["submitted"] == [] and again["failed"] == []
    for run_dir in two_runs["runs"].values():
        (attempt,) = lines(run_dir / "attempts.jsonl")  # trained once, by one Slurm job, on the CPUs it was given
        assert attempt["job"].startswith("slurm:") and attempt["threads"] == min(8, node_cpus)
        assert record_problems(json.loads((run_dir / "record.json").read_text())) == []
        assert not (run_dir / "claim.json").exists()


# ---------------------------------------------------------------------------------------------- DDP


@pytest.fixture(scope="module")
def ddp_runs(slurm, tmp_path_factory) -> dict:
    """Two runs as DDP jobs of 2 tasks: ``at`` trains to the end; ``trades`` has its rank 1 killed once training."""
    root = tmp_path_factory.mktemp("ddp")
    spec, out = write_spec(root, procs=2, epochs={"trades": LONG_EPOCHS}), root / "out"
    waiting = robustscale("sweep", spec, "--out", out, "--executor", "slurm", "--json", stdout=root / "sweep.json")
    wait_for(lambda: len(list(out.glob("*/record.json"))) == 2, "the runs")
    killed = by_loss(out)["trades"]
    wait_for(lambda: lines(killed / "attempts.jsonl"), "the DDP job to train")
    os.kill(lines(killed / "attempts.jsonl")[0]["ranks"][1]["pid"], signal.SIGKILL)
    waiting.wait(timeout=DEADLINE_S)
    return {"runs": by_loss(out), "returncode": waiting.returncode,
            "summary": json.loads((root / "sweep.json").read_text())}


def test_a_ddp_job_of_two_tasks_trains_on_two_ranks_with_the_flops_of_one_process(ddp_runs, two_runs):
    two, one = (json.loads((runs["at"] / "record.json").read_text()) for runs in (ddp_runs["runs"], two_runs["runs"]))
    assert two["status"] == "done" and record_problems(two) == []
    assert (two["hardware"]["world_size"], two["hardware"]["nodes"], one["hardware"]["world_size"]) == (2, 1, 1)
    # the global batch is split between the ranks and counted once: the FLOPs of the same run on one process
    assert two["accounting"]["train_flops"] == one["accounting"]["train_flops"] > 0
    assert two["accounting"]["samples_seen"] == one["accounting"]["samples_seen"]
    (attempt,) = lines(ddp_runs["runs"]["at"] / "attempts.jsonl")
    assert len(attempt["ranks"]) == 2 and attempt["ranks"][0]["pid"] != attempt["ranks"][1]["pid"]
    assert [rank["threads"] for rank in attempt["ranks"]] == [1, 1]  # 2 ranks on 2 CPUs: no oversubscription


def test_a_killed_rank_fails_its_run_naming_that_rank_and_its_log(ddp_runs):
    run_dir = ddp_runs["runs"]["trades"]
    record = read_record(run_dir)
    assert record.status.value == "failed" and "rank 1 of 2" in record.reason  # not rank 0's broken connection
    log = record.reason.split("its log: ")[1].split(";")[0].strip()
    assert Path(log).is_file() and f"{job_of(run_dir)}_1_log.err" in log
    assert not (run_dir / "claim.json").exists()
    assert ddp_runs["returncode"] == 1  # the sweep returned, saying a run failed
    assert ddp_runs["summary"]["failed"] == [run_dir.name] and run_dir.name in ddp_runs["summary"]["errors"]


# ---------------------------------------------------------------------------------------------- failures, preemption


def _usr2_pending(pid: int) -> bool:
    """Whether a USR2 waits on the (stopped) process ``pid``: its thread's or its process's pending signal mask."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    masks = [int(line.split()[1], 16) for line in status.splitlines() if line.startswith(("SigPnd:", "ShdPnd:"))]
    return any(mask >> (signal.SIGUSR2 - 1) & 1 for mask in masks)


def outlast_time_limit(spec: Path, out: Path) -> tuple[Path, str]:
    """Submit a run with a 1-minute time limit and make it need longer: once it trains (its first epoch logged), its
    process is paused (SIGSTOP) until Slurm's time-limit signal (USR2) waits on it, the time a slow run would spend
    on its steps, without burning a core; it then goes on and meets the signal at once, inside its training steps,
    where it stops with a checkpoint. (Paused in its steps, not at its start: a signal during the setup requeues at
    once, with nothing to checkpoint. The run is long enough that an idle fast machine is still training when the
    pause comes: 0.3 s an epoch there.)"""
    robustscale("sweep", spec, "--out", out, "--executor", "slurm", "--no-wait")
    (run,) = by_loss(out).values()
    wait_for(lambda: lines(run / "metrics.jsonl"), "the time-limited run's first epoch",
             hurrying=lambda: hurry(name=LIMITED))
    job, pid = job_of(run), lines(run / "attempts.jsonl")[-1]["pid"]
    end = slurm_job_end(job)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGSTOP)
        try:
            deadline = (end - datetime.now()).total_seconds() - LIMITED_SIGNAL_S if end else 0.0
            with contextlib.suppress(AssertionError):  # past the deadline: it goes on, and the test says what it did
                wait_for(lambda: _usr2_pending(pid), "the time-limit signal", deadline_s=max(deadline, 0.0))
        finally:
            os.kill(pid, signal.SIGCONT)
    wait_for(lambda: status(run) in ("done", "failed"), "the time-limited run", hurrying=lambda: hurry(jobs=[job]))
    return run, job


@pytest.fixture(scope="module")
def interrupted(slurm, tmp_path_factory) -> dict:
    """One waiting sweep of two runs: ``trades``'s process is killed once it trains; ``at`` is requeued by
    ``scontrol requeue`` after its first epoch and left in the queue until ``trades`` has failed and the sweep was
    rerun with ``--stale-after 1``, then sent ``USR2`` after one more epoch. Meanwhile a third run outlasts its
    1-minute time limit (:func:`outlast_time_limit`), and once the sweep has returned, ``at`` trains uninterrupted in
    this process, the reference for the requeued run (while the time-limited run waits for its limit, paused)."""
    root = tmp_path_factory.mktemp("interrupted")
    spec, out = write_spec(root, epochs={"at": LONG_EPOCHS, "trades": LONG_EPOCHS}, slurm={"cpus": 1}), root / "out"
    # Slurm sends the time-limit signal up to a check interval (30 s) early: with the default 15 s of a 1-minute job,
    # as early as 15 s into it, while a loaded machine may still be importing torch (a signal that then kills it);
    # LIMITED_SIGNAL_S before the limit, it comes 25-55 s into the job and leaves the run 5 s to checkpoint
    limited = write_spec(root / "limited", losses=("at",), epochs={"at": LIMITED_EPOCHS},
                         slurm={"cpus": 1, "time": 1, "signal_delay_s": LIMITED_SIGNAL_S, "name": LIMITED})
    waiting = robustscale("sweep", spec, "--out", out, "--executor", "slurm", "--json", stdout=root / "sweep.json")
    wait_for(lambda: list((out / ".submitit").glob("*_submission.sh")), "the sweep's jobs")
    with ThreadPoolExecutor(1) as pool:
        both = by_loss(out)
        run, killed, seen = both["at"], both["trades"], {}
        # `trades` past its setup (its record says running: a kill in the setup is tests/sweep/test_resilience.py's)
        wait_for(lambda: status(killed) == "running" and lines(run / "metrics.jsonl"), "both jobs training")
        # submitted once both train: on the node's 2 CPUs a third job would keep one of the two waiting meanwhile,
        # while the other trains most of its epochs on a fast machine before the requeue below
        limit = pool.submit(outlast_time_limit, limited, root / "limited" / "out")
        os.kill(lines(killed / "attempts.jsonl")[0]["pid"], signal.SIGKILL)
        job = job_of(run)
        sh("scontrol", "requeue", job)
        wait_for(lambda: status(killed) == "failed", "the killed job's run to fail")
        seen["run_when_killed_failed"] = status(run)
        wait_for(lambda: queue_state(job) == "PENDING", "the requeued job to wait in the queue")
        time.sleep(1.5)  # its claim's heartbeat is now older than --stale-after
        seen["rerun"] = summary(robustscale("sweep", spec, "--out", out, "--executor", "slurm", "--no-wait",
                                            "--stale-after", "1", "--json"))
        seen["state_after_rerun"] = queue_state(job)
        wait_for(lambda: len(lines(run / "attempts.jsonl")) == 2, "the requeued job to start again",
                 hurrying=lambda: hurry(jobs=[job]))
        # an epoch trained after the restart: its checkpoint, not metrics.jsonl's length, which still holds the epoch
        # the killed job logged and did not checkpoint until the resumed one has set up and trimmed it (the USR2 sent
        # then stopped the job before its first step, at the step it resumed from)
        restart = lines(run / "attempts.jsonl")[1]["from_step"]
        wait_for(lambda: (saved_step(run / CHECKPOINT) or 0) > restart, "a checkpoint after the restart")
        sh("scancel", "--signal=USR2", job)
        wait_for(lambda: waiting.poll() is not None, "the sweep", hurrying=lambda: hurry(jobs=[job]))
        straight = sweep(write_spec(root / "straight", losses=("at",), epochs={"at": LONG_EPOCHS}),
                         root / "straight" / "out")
        limited_run, limited_job = limit.result(timeout=DEADLINE_S)
    return {"run": run, "killed": killed, "job": job, "limited": limited_run, "limited_job": limited_job,
            "seen": seen, "returncode": waiting.returncode, "summary": json.loads((root / "sweep.json").read_text()),
            "reference": root / "straight" / "out" / straight["done"][0]}


def test_a_job_that_dies_fails_its_run_naming_its_log_while_the_others_still_run(interrupted):
    killed = interrupted["killed"]
    record = read_record(killed)
    assert record.status.value == "failed" and f"job {job_of(killed)}" in record.reason
    log = record.reason.split("its log: ")[1].split(";")[0].strip()
    assert Path(log).is_file() and log.endswith("_0_log.err")
    assert not (killed / "claim.json").exists()
    # seen while the job submitted before it was still in the queue (the sweep no longer waits in submission order)
    assert interrupted["seen"]["run_when_killed_failed"] != "done"
    assert interrupted["returncode"] == 1 and interrupted["summary"]["failed"] == [killed.name]
    assert interrupted["summary"]["done"] == [interrupted["run"].name]


def test_a_requeued_job_waiting_in_the_queue_keeps_its_run(interrupted):
    rerun = interrupted["seen"]["rerun"]
    assert rerun["busy"] == [interrupted["run"].name] and rerun["submitted"] == []  # not taken over, not resubmitted
    assert interrupted["seen"]["state_after_rerun"] == "PENDING"  # its claim was stale all the while
    assert {a["job"] for a in lines(interrupted["run"] / "attempts.jsonl")} == {f"slurm:{interrupted['job']}"}


def test_a_requeued_and_a_preempted_job_come_back_and_end_as_if_uninterrupted(interrupted):
    run = interrupted["run"]
    first, second, third = lines(run / "attempts.jsonl")
    assert not first["resume"] and second["resume"] and third["resume"]
    assert second["from_step"] % STEPS_PER_EPOCH == 0  # scontrol requeue: from the last epoch's checkpoint
    # USR2: from the step it stopped at, the first step boundary after the signal: mid-epoch, unless the signal came
    # during an epoch's last step (seen once in CI-like load: 242 = 11 x 22); either way past the requeue's start
    assert third["from_step"] > second["from_step"]
    assert third["claim"] == second["claim"]  # the claim parked by the preempted job, adopted by its requeued self
    assert [row["epoch"] for row in lines(run / "metrics.jsonl")] == list(range(1, LONG_EPOCHS + 1))
    reference = interrupted["reference"]  # the same run trained straight through, in the test's process
    assert reference.name == run.name
    for name in ("last.safetensors", "best.safetensors"):
        a, b = load_file(run / name), load_file(reference / name)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
    same = ("epoch", "step", "loss", "train_clean_acc", "train_adv_acc", "val_pgd_acc", "train_flops")
    rows = [[{k: row[k] for k in same} for row in lines(d / "metrics.jsonl")] for d in (run, reference)]
    assert rows[0] == rows[1]
    assert not (run / "claim.json").exists()


def test_a_run_past_its_time_limit_is_requeued_resumed_and_finished_before_the_limit_kills_it(interrupted):
    run = interrupted["limited"]
    attempts = lines(run / "attempts.jsonl")
    assert status(run) == "done" and len(attempts) >= 2
    assert all(a["resume"] and a["from_step"] > 0 for a in attempts[1:])
    assert {a["job"] for a in attempts} == {f"slurm:{interrupted['limited_job']}"}
    assert [row["epoch"] for row in lines(run / "metrics.jsonl")] == list(range(1, LIMITED_EPOCHS + 1))
    # each incarnation but the last requeued itself with its checkpoint before the limit: none was killed there
    states = sh("sacct", "-n", "-X", "--duplicates", "-j", interrupted["limited_job"], "-o", "state").split()
    assert "TIMEOUT" not in states and states.count("REQUEUED") >= len(attempts) - 1, states
    log = (run.parent / ".submitit" / f"{interrupted['limited_job']}_0_log.err").read_text()
    assert "timed-out" in log  # submitit counted it as a time limit (max_num_timeout), not a preemption
