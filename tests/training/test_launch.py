"""``launch``: a function on every rank of a local gloo group; a rank that raises stops the group and is named; no
rank outlives its launcher, none listens beyond loopback, and ``train`` holds its run folder's claim (issue 34)."""

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from robustscale.errors import UserError
from robustscale.training.distributed import cleanup, init_distributed
from robustscale.training.launch import RankFailed, die_with, launch

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("ports")]  # see tests/conftest.py


def rank_1_gives_up() -> int:
    """Every rank joins the group from the environment launch() set; rank 1 raises while rank 0 waits on it."""
    info = init_distributed()
    try:
        assert (info.world_size, info.local_world_size, info.nodes) == (2, 2, 1)
        if info.rank == 1:
            raise ValueError(f"rank {info.rank} gives up")
        total = torch.tensor([1.0])
        dist.all_reduce(total)  # never completes: the launcher stops this rank
        return int(total.item())
    finally:
        cleanup()


def test_a_rank_that_raises_stops_the_group_and_is_named():
    """(Success, and rank 0's value coming back, is every DDP sweep test: tests/sweep/test_ddp.py.)"""
    with pytest.raises(RankFailed) as err:
        launch(rank_1_gives_up, (), 2, threads=1)
    assert err.value.rank == 1 and err.value.exit_code is None
    assert str(err.value) == "rank 1 of 2 raised ValueError: rank 1 gives up"


# ---------------------------------------------------------------------------------------------- issue 34, items 1, 2, 5

def _tcp_sockets() -> list[tuple[str, str]]:
    """``(local address, state)`` of every TCP socket this process holds, from /proc (its fds' socket inodes)."""
    import ipaddress

    inodes = set()
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            target = os.readlink(f"/proc/self/fd/{fd}")
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(FileNotFoundError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                if fields[9] in inodes:
                    raw = bytes.fromhex(fields[1].split(":")[0])
                    raw = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))  # each 32-bit word host-order
                    found.append((str(ipaddress.ip_address(raw)), fields[3]))
    return found


def report_sockets() -> list:
    """Every rank's TCP sockets once the group has talked, and where its rendezvous lives (gathered on rank 0)."""
    from robustscale.training.distributed import STORE_ENV, gather_objects

    init_distributed()
    try:
        total = torch.tensor([1.0])
        dist.all_reduce(total)
        store = os.environ.get(STORE_ENV)
        mode = oct(os.stat(os.path.dirname(store)).st_mode & 0o777) if store else None
        return gather_objects({"sockets": _tcp_sockets(), "store": store, "mode": mode, "sum": total.item()})
    finally:
        cleanup()


def _loopback(address: str) -> bool:
    import ipaddress

    ip = ipaddress.ip_address(address)
    return ip.is_loopback or getattr(ip, "ipv4_mapped", None) is not None and ip.ipv4_mapped.is_loopback


@pytest.mark.skipif(not os.path.exists("/proc/net/tcp"), reason="reads the socket table of Linux's /proc")
def test_a_local_group_listens_on_loopback_only_and_meets_in_a_private_file_store():
    """The rendezvous was a TCPStore listening on every interface (*:PORT) though MASTER_ADDR was 127.0.0.1."""
    ranks = launch(report_sockets, (), 2, threads=1)
    assert [r["sum"] for r in ranks] == [2.0, 2.0]
    sockets = [s for r in ranks for s in r["sockets"]]
    assert sockets, "gloo connects the ranks over TCP: the test would see nothing to check"
    assert [s for s in sockets if not _loopback(s[0])] == []
    store = ranks[0]["store"]
    assert store and ranks[0]["mode"] == "0o700" and not os.path.exists(os.path.dirname(store))  # removed after


TRAIN = ["configs/digits.yaml", "model.name=wrn_10_1", "data.val_size=100", "eval.pgd_steps=2",
         "eval.autoattack=none", "attack.steps=1", "attack.step_size=0.15"]


def _children(pid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError, IndexError):
                stat = Path(f"/proc/{entry}/stat").read_text()
                if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                    out.append(int(entry))
    return out


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_text()
    except OSError:  # gone meanwhile
        return ""


def _ranks(launcher: int) -> tuple[list[int], list[int]]:
    """A launcher's forkserver (or none) and its ranks: the server's children, or the launcher's spawned ones."""
    servers = [p for p in _children(launcher) if "multiprocessing.forkserver" in _cmdline(p)]
    spawned = [p for p in _children(launcher) if "spawn_main" in _cmdline(p)]
    return servers, [rank for server in servers for rank in _children(server)] + spawned


def _running(pid: int) -> bool:
    """Alive and not a zombie (an orphan reaped late by a container's init stays a zombie for a while)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def watch_then_sleep(pid: int, pidfd: bool, watching) -> None:
    """A process that dies with ``pid`` (through a pidfd, or polling as where there is none), else sleeps on."""
    if not pidfd:
        del os.pidfd_open
    die_with(pid)
    watching.set()
    time.sleep(120)
    os._exit(0)


@pytest.mark.skipif(os.name == "nt", reason="no watching on Windows")
@pytest.mark.parametrize("pidfd", [True, False], ids=["pidfd", "polling"])
@pytest.mark.parametrize("when", ["ends later", "ended before"])
def test_die_with_exits_when_the_watched_process_ends(pidfd, when):
    """What every rank does as it starts, watching its launcher (its parent is the forkserver, not the launcher)."""
    import multiprocessing as mp

    if pidfd and not hasattr(os, "pidfd_open"):
        pytest.skip("no pidfd_open here")
    ctx = mp.get_context("forkserver")
    watched, watching = subprocess.Popen(["sleep", "120"]), ctx.Event()
    if when == "ended before":
        watched.kill()
        watched.wait()
    watcher = ctx.Process(target=watch_then_sleep, args=(watched.pid, pidfd, watching))
    watcher.start()
    try:
        if when == "ends later":  # the watcher may take seconds to start (it imports this module): wait for it
            assert watching.wait(timeout=120)
            time.sleep(0.3)
            assert watcher.is_alive(), "exited while the watched process lived"
            watched.kill()
            watched.wait()
            ended = time.monotonic()
            watcher.join(timeout=30)
            assert time.monotonic() - ended < (1 if pidfd else 3)  # a pidfd wakes at once; polling every 0.5 s
        watcher.join(timeout=120)
        assert watcher.exitcode == 1 and (when == "ends later") == watching.is_set()
    finally:
        watched.kill()
        if watcher.is_alive():
            watcher.kill()


@pytest.mark.skipif(not os.path.exists("/proc/self/stat"), reason="finds the ranks in Linux's /proc")
@pytest.mark.parametrize(("sig", "start"), [(signal.SIGKILL, "forkserver"), (signal.SIGTERM, "forkserver"),
                                            (signal.SIGTERM, "spawn")], ids=["SIGKILL", "SIGTERM", "SIGTERM-spawn"])
def test_a_killed_launcher_leaves_no_rank_running(tmp_path, sig, start):
    """`train --procs-per-node 2`'s launcher killed: its ranks were re-parented to init and trained on, writing
    checkpoints and records into a folder a `train --resume` could be training too. Now they die with it (SIGKILL:
    each rank watches the launcher; SIGTERM: the launcher stops them on its way out), the forkserver they forked from
    ends too, and the claim the launcher held is free for the next `train`. Under a ``TMPDIR`` too long for the
    forkserver's socket the ranks are spawned instead, and the same holds."""
    from robustscale.store.rundir import CLAIM, acquire_claim

    out = tmp_path / "run"
    # short, in /tmp (pytest's folders, under xdist, can leave no room for the server's socket), or too long
    temp = Path(tempfile.mkdtemp(prefix="rs-", dir="/tmp")) if start == "forkserver" else tmp_path / ("t" * 90)
    temp.mkdir(exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "src"),
           "TMPDIR": str(temp)}
    proc = subprocess.Popen([sys.executable, "-m", "robustscale", "train", *TRAIN, "train.epochs=500", "--quiet",
                             "--procs-per-node", "2", "--out", str(out)], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    servers: list[int] = []
    ranks: list[int] = []
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and proc.poll() is None:  # both ranks training: rank 0 logged an epoch
            servers, ranks = _ranks(proc.pid)
            if len(ranks) == 2 and (out / "metrics.jsonl").exists() and (out / CLAIM).exists():
                break
            time.sleep(0.2)
        assert proc.poll() is None and len(ranks) == 2, proc.stderr.read() if proc.poll() is not None else ranks
        assert len(servers) == (start == "forkserver")
        os.kill(proc.pid, sig)
        proc.wait(timeout=30)
        deadline = time.monotonic() + 30  # a rank that outlived its launcher would train on and never leave this
        while [p for p in ranks + servers if _running(p)] and time.monotonic() < deadline:
            time.sleep(0.1)
        assert [p for p in ranks if _running(p)] == [] and [p for p in servers if _running(p)] == []
        if sig == signal.SIGTERM:  # handled: the ranks stopped, the rendezvous folder removed, the claim released
            assert proc.returncode == 128 + signal.SIGTERM
            assert list(temp.glob("robustscale-group-*")) == [] and not (out / CLAIM).exists()
        claim = acquire_claim(out)  # its holder is dead: taken over at once, as a `train --resume` would
        assert claim is not None
        claim.release()
    finally:
        if proc.poll() is None:
            proc.kill()
        for pid in ranks + servers:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        if start == "forkserver":
            shutil.rmtree(temp, ignore_errors=True)


def test_train_refuses_a_folder_another_process_trains(tmp_path, capsys, assert_one_line):
    """`train` took no claim: a `train --resume` started while another process trained the folder trained it too."""
    from robustscale.cli import main
    from robustscale.store.rundir import acquire_claim

    out = tmp_path / "run"
    assert main(["train", *TRAIN, "train.epochs=1", "--quiet", "--out", str(out)]) == 0
    capsys.readouterr()
    held = acquire_claim(out)  # another trainer, alive (this very process, as far as the claim says)
    try:
        before = (out / "record.json").read_text()
        assert main(["train", "--resume", str(out)]) == 2
        message = assert_one_line(capsys.readouterr().err)
        assert "is being trained by process" in message and str(os.getpid()) in message
        assert (out / "record.json").read_text() == before
    finally:
        held.release()
    assert main(["train", "--resume", str(out), "--quiet"]) == 0  # free again: resumes (nothing left to train)


@pytest.mark.skipif(bool(torch.cuda.is_available()), reason="counts CPU cores: this machine has GPUs")
def test_more_ranks_than_cores_are_one_line_before_anything_starts(tmp_path, capsys, assert_one_line, digits_yaml):
    """512 ranks on a 2-core machine spawned 512 processes; on GPUs one rank per GPU was already the limit."""
    import yaml

    from robustscale.cli import main
    from robustscale.training.launch import available_cores

    too_many = str(available_cores() + 1)
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump({"base": str(digits_yaml), "axes": {"train.loss": ["at"]},
                                    "ddp": {"procs_per_node": int(too_many)}}))
    runs = tmp_path / "runs" / "r1"
    runs.mkdir(parents=True)
    (runs / "record.json").write_text('{"schema": 2, "run_id": "r1", "status": "done"}')
    for argv in (["train", *TRAIN, "train.epochs=1", "--procs-per-node", too_many, "--out", str(tmp_path / "run")],
                 ["sweep", str(spec), "--out", str(tmp_path / "sweep")],
                 ["eval", str(tmp_path / "runs"), "--procs-per-node", too_many]):
        assert main(argv) == 2, argv
        message = assert_one_line(capsys.readouterr().err)
        assert f"procs-per-node {too_many}" in message or f"procs_per_node {too_many}" in message, message
        assert "CPU core" in message
    assert not (tmp_path / "run").exists() and not (tmp_path / "sweep").exists()
    with pytest.raises(UserError, match="CPU core"):
        launch(rank_1_gives_up, (), int(too_many))
