"""Claims: one holder at a time, heartbeats, and takeover of dead workers' claims by exactly one taker."""

import json
import os
import subprocess
import sys
import threading
import time

from robustscale.store.rundir import CLAIM, LOCK, acquire_claim, claim_info, claim_is_live, create_exclusive


def _race(n, fn):
    barrier = threading.Barrier(n)
    results = [None] * n

    def go(i):
        barrier.wait()
        results[i] = fn()

    threads = [threading.Thread(target=go, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def _age(path, seconds):
    old = time.time() - seconds
    os.utime(path, (old, old))


def test_create_exclusive_has_one_winner_and_full_content(tmp_path):
    target = tmp_path / "x.json"
    wins = _race(8, lambda: create_exclusive(target, b'{"whole": true}'))
    assert wins.count(True) == 1
    assert json.loads(target.read_text()) == {"whole": True}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.json"]  # no temp files left


def test_one_holder_then_release(tmp_path):
    held = acquire_claim(tmp_path, stale_s=60)
    assert held is not None and claim_is_live(tmp_path, 60)
    assert claim_info(tmp_path)["pid"] == os.getpid()
    assert acquire_claim(tmp_path, stale_s=60) is None
    held.release()
    assert not (tmp_path / CLAIM).exists()
    again = acquire_claim(tmp_path, stale_s=60)
    assert again is not None
    again.release()


def test_stale_claim_is_taken_over_by_exactly_one_of_many(tmp_path):
    create_exclusive(tmp_path / CLAIM, json.dumps({"host": "elsewhere", "pid": 1, "token": "old"}).encode())
    _age(tmp_path / CLAIM, 120)
    assert not claim_is_live(tmp_path, stale_s=60)
    claims = _race(8, lambda: acquire_claim(tmp_path, stale_s=60))
    winners = [c for c in claims if c is not None]
    assert len(winners) == 1
    assert claim_info(tmp_path)["token"] == winners[0].token
    assert {p.name for p in tmp_path.iterdir()} == {CLAIM, LOCK}  # moved-aside stale claims cleaned up
    winners[0].release()


def test_claim_of_a_dead_process_on_this_host_is_taken_over_at_once(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(dead.stdout)
    create_exclusive(tmp_path / CLAIM, json.dumps({"host": os.uname().nodename, "pid": pid, "token": "x"}).encode())
    held = acquire_claim(tmp_path, stale_s=600)
    assert held is not None
    held.release()


def test_fresh_claim_of_a_live_process_is_respected(tmp_path):
    info = {"host": os.uname().nodename, "pid": os.getppid(), "token": "theirs"}
    create_exclusive(tmp_path / CLAIM, json.dumps(info).encode())
    assert acquire_claim(tmp_path, stale_s=600) is None
    assert claim_info(tmp_path)["token"] == "theirs"


def test_heartbeat_keeps_the_claim_fresh_and_notices_a_takeover(tmp_path):
    held = acquire_claim(tmp_path, stale_s=2, heartbeat_s=0.05)
    _age(tmp_path / CLAIM, 100)
    time.sleep(0.3)
    assert time.time() - (tmp_path / CLAIM).stat().st_mtime < 2
    (tmp_path / CLAIM).write_text(json.dumps({"token": "someone-else"}))
    time.sleep(0.3)
    assert held.lost
    held.release()
    assert claim_info(tmp_path)["token"] == "someone-else"  # release never deletes another worker's claim


def test_a_worker_that_lost_its_claim_stops_before_its_next_write(tmp_path, digits_yaml, monkeypatch):
    """Item 6 of issue 20: a worker paused past --stale-after lost its claim to another, then woke up and trained the
    run to the end as well (both reported `trained`, 22 interleaved log lines for 12 epochs). Here the takeover
    happens in the middle of epoch 2, while this worker trains: its next write (the epoch-2 log line) must not
    happen, and the run folder is left to the new holder."""
    import torch

    import robustscale.training.loop as loop
    from robustscale.config import config_to_dict, load_config
    from robustscale.sweep.run import ATTEMPTS, run_one

    torch.set_num_threads(1)
    cfg = load_config(digits_yaml, ["model.name=wrn_10_1", "train.epochs=3", "data.val_size=20", "eval.pgd_steps=1",
                                    "eval.autoattack=none", "attack.steps=1", "data.batch_size=256"])
    run_dir, taker = tmp_path / "run", {}
    real_step = loop.train_step

    def step_then_lose_the_claim(parts, x, y, cfg_, gen, *rest):
        out = real_step(parts, x, y, cfg_, gen, *rest)
        if not taker and (run_dir / "metrics.jsonl").exists():  # epoch 1 is logged: this step is in epoch 2
            _age(run_dir / CLAIM, 3600)  # this worker "slept" an hour: its heartbeat is stale
            taker["claim"] = acquire_claim(run_dir, stale_s=600)
        return out

    monkeypatch.setattr(loop, "train_step", step_then_lose_the_claim)
    outcome = run_one(run_dir, config_to_dict(cfg), stale_s=600)
    assert taker["claim"] is not None, "the takeover did not happen"
    try:
        assert outcome["action"] == "lost", outcome
        rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
        assert [r["epoch"] for r in rows] == [1]  # nothing written after the claim was lost
        assert claim_info(run_dir)["token"] == taker["claim"].token  # the new holder's claim is untouched
        assert len((run_dir / ATTEMPTS).read_text().splitlines()) == 1
        record = json.loads((run_dir / "record.json").read_text())
        assert record["status"] == "running"  # neither done nor failed: the new holder resumes it
    finally:
        taker["claim"].release()


def test_a_parked_claim_waits_for_its_own_requeued_job(tmp_path, monkeypatch):
    """A preempted job parks its claim: its requeued incarnation (the same scheduler job) adopts it, token and all,
    while any other worker finds it busy until it goes stale."""
    monkeypatch.setenv("SUBMITIT_LOCAL_JOB_ID", "4242")
    first = acquire_claim(tmp_path, stale_s=600)
    first.park()
    parked = claim_info(tmp_path)
    assert parked["token"] == first.token and parked["pid"] is None and parked["parked"]
    monkeypatch.setenv("SUBMITIT_LOCAL_JOB_ID", "4343")  # another job (another sweep's) on this host
    assert claim_is_live(tmp_path, 600) and acquire_claim(tmp_path, stale_s=600) is None
    monkeypatch.setenv("SUBMITIT_LOCAL_JOB_ID", "4242")  # the requeued job
    again = acquire_claim(tmp_path, stale_s=600)
    assert again is not None and again.token == first.token
    assert claim_info(tmp_path)["pid"] == os.getpid() and "parked" not in claim_info(tmp_path)
    again.park()
    _age(tmp_path / CLAIM, 1200)  # the requeued job never came back: stale, anyone may take it
    monkeypatch.setenv("SUBMITIT_LOCAL_JOB_ID", "4343")
    other = acquire_claim(tmp_path, stale_s=600)
    assert other is not None and other.token != first.token
    other.release()


def test_the_claim_of_a_job_its_scheduler_says_has_ended_is_free(tmp_path):
    info = {"host": "node17", "pid": 1234, "job": "slurm:777_3", "token": "dead"}
    create_exclusive(tmp_path / CLAIM, json.dumps(info).encode())
    assert acquire_claim(tmp_path, stale_s=600) is None  # live as far as this host can tell
    assert acquire_claim(tmp_path, stale_s=600, ended_job="slurm:777_4") is None
    held = acquire_claim(tmp_path, stale_s=600, ended_job="slurm:777_3")
    assert held is not None
    held.release()
