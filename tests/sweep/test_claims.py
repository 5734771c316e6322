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
