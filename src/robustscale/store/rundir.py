"""Run folders shared by many workers: create-if-absent writes and claims.

A worker trains a run only while it holds the run's claim, ``claim.json``, created exclusively (a hard link of a
complete temp file, so nobody ever reads half a claim) and kept fresh by a heartbeat thread touching it. A claim is
taken over when its owner is gone: its heartbeat is older than ``stale_s``, its process is dead on this host, or it
belongs to an earlier incarnation of the same Slurm job (a requeue); but never while the Slurm job it names is still in
Slurm's queue (:mod:`robustscale.store.scheduler`). Takeovers of one claim are serialised by an
``flock`` on ``.claim.lock`` (released by the kernel if the taker dies), and the taker moves the old claim aside under
a name only it knows, checks that what it moved is still takeable (else puts it back), then creates its own claim
exclusively: of many workers racing for one dead claim exactly one wins.

A job that the scheduler preempts (or that reaches its time limit) *parks* its claim instead of releasing it
(:meth:`Claim.park`): the heartbeat stops and the claim says so, the requeued incarnation of the same job adopts it
(same token) as soon as it starts, and any other worker must wait until it is stale. So a preempted run is not
grabbed by another sweep while its own job waits in the queue, and its attempts log shows one claim throughout.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import socket
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: takeovers rely on the rename check alone
    fcntl = None

from robustscale.errors import UserError, shown
from robustscale.store.atomic import _fsync_dir, shared_mode
from robustscale.store.fence import fence
from robustscale.store.record import now
from robustscale.store.safe_json import read_json
from robustscale.store.scheduler import job_in_queue

__all__ = ["CLAIM", "LOCK", "DEFAULT_STALE_S", "Claim", "acquire_claim", "holding_claim", "claim_info",
           "claim_is_live", "create_exclusive", "write_json_exclusive", "job_key", "current_job"]

log = logging.getLogger(__name__)

CLAIM = "claim.json"
LOCK = ".claim.lock"  # flock'ed while a claim is being taken over
DEFAULT_STALE_S = 600.0  # a claim whose heartbeat is older than this belongs to a dead worker
MAX_CLAIM_BYTES = 64 << 10  # a claim is a few hundred bytes


def create_exclusive(path: str | Path, data: bytes) -> bool:
    """Create ``path`` holding ``data`` unless it exists; True when this call created it.

    The content is complete before the name appears: a temp file is written, fsynced and hard-linked to ``path``
    (``link`` fails if the name exists, atomically, NFS included). Where hard links are not supported, falls back
    to ``O_CREAT | O_EXCL`` followed by the write.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".new", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, shared_mode())  # mkstemp makes 0600: give it what open() would (0644 under umask 022)
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        except OSError as err:
            if err.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK):
                raise
            return _create_excl(path, data)
    finally:
        os.unlink(tmp)
    _fsync_dir(path.parent)
    return True


def _create_excl(path: Path, data: bytes) -> bool:
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
    except FileExistsError:
        return False
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    return True


def write_json_exclusive(path: str | Path, obj: Any) -> bool:
    """Write ``obj`` as JSON at ``path`` only if nothing is there yet (True when written)."""
    return create_exclusive(path, (json.dumps(obj, indent=2, default=str) + "\n").encode())


# ---------------------------------------------------------------------------------------------- claims


def current_job() -> str | None:
    """The scheduler's id for this job, kept across a requeue (so a requeued job reclaims its own run): Slurm's, or
    that of submitit's local executor (its controller process, on this host), which requeues in place."""
    array, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    if array and task:
        return f"slurm:{array}_{task}"
    job = os.environ.get("SLURM_JOB_ID")
    if job:
        return f"slurm:{job}"
    local = os.environ.get("SUBMITIT_LOCAL_JOB_ID")
    return f"submitit-local:{socket.gethostname()}:{local}" if local else None


def job_key(cluster: str, job_id: str) -> str:
    """How a claim names the scheduler job ``job_id`` of submitit's ``cluster`` (``slurm`` or ``local``), as
    :func:`current_job` names it from inside the job."""
    return f"slurm:{job_id}" if cluster == "slurm" else f"submitit-local:{socket.gethostname()}:{job_id}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def claim_info(run_dir: str | Path) -> dict[str, Any] | None:
    """The content of a run's claim (host, pid, job, token, started), or None when unclaimed or unreadable."""
    return _read_claim(Path(run_dir) / CLAIM)


def _read_claim(path: Path) -> dict[str, Any] | None:
    """A claim's JSON object, or None: missing, or not a claim a reader may take (a link, a FIFO, too large, not JSON:
    :mod:`robustscale.store.safe_json`)."""
    try:
        info = read_json(path, max_bytes=MAX_CLAIM_BYTES)
    except (OSError, ValueError):  # JsonFileError is a ValueError
        return None
    return info if isinstance(info, dict) else None


def _age_s(path: Path) -> float | None:
    try:
        return time.time() - path.stat().st_mtime
    except FileNotFoundError:
        return None


def _owner_gone(path: Path, stale_s: float, ended_job: str | None = None) -> str | None:
    """Why the claim at ``path`` may be taken over, or None while its owner may still be working (``ended_job``: a
    scheduler job known to have ended, whose claims are free). A claim of a Slurm job that Slurm still has in its queue
    (a requeued job waiting to start again, or running) is never taken over but by that job itself, whatever its
    heartbeat says (:mod:`robustscale.store.scheduler`)."""
    age = _age_s(path)
    if age is None:
        return None
    info = _read_claim(path)
    if info is None:
        return f"heartbeat {age:.0f} s old" if age > stale_s else None
    job = current_job()
    if job is not None and info.get("job") == job and info.get("pid") != os.getpid():
        return f"earlier incarnation of job {job}"
    if ended_job is not None and info.get("job") == ended_job:
        return f"job {ended_job} has ended"
    why = _dead_owner(info, age, stale_s)
    if why is not None and job_in_queue(info.get("job")):
        return None  # its job is queued (requeued, held) or running: it comes back to this run
    return why


def _dead_owner(info: dict[str, Any], age_s: float, stale_s: float) -> str | None:
    """What says the claim's worker is dead: an old heartbeat, or its process gone from this host."""
    if age_s > stale_s:
        return f"heartbeat {age_s:.0f} s old"
    if info.get("host") == socket.gethostname() and isinstance(info.get("pid"), int) and info["pid"] != os.getpid():
        if not _pid_alive(info["pid"]):
            return f"process {info['pid']} is gone"
    return None


def claim_is_live(run_dir: str | Path, stale_s: float = DEFAULT_STALE_S) -> bool:
    """Whether some worker holds the run now (a claim exists and its owner is not known to be gone)."""
    path = Path(run_dir) / CLAIM
    return path.exists() and _owner_gone(path, stale_s) is None


@dataclass
class Claim:
    """A held claim: ``heartbeat()`` keeps it fresh, ``release()`` gives it up (only if it is still ours)."""

    path: Path
    token: str
    heartbeat_s: float
    _stop: threading.Event = field(default_factory=threading.Event, repr=False)
    _thread: threading.Thread | None = field(default=None, repr=False)
    lost: bool = False

    def owned(self) -> bool:
        info = claim_info(self.path.parent)
        return info is not None and info.get("token") == self.token

    def holds(self) -> bool:
        """Whether this worker may still write into the run (checked before every write, see store.fence): once the
        claim is seen to be someone else's it is lost for good, even if that worker releases it later."""
        if not self.lost and not self.owned():
            self.lost = True
            log.warning("claim %s was taken over by another worker", self.path)
        return not self.lost

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            if not self.owned():
                self.lost = True
                log.warning("claim %s was taken over by another worker", self.path)
                return
            with contextlib.suppress(OSError):
                os.utime(self.path)

    def start(self) -> "Claim":
        self._thread = threading.Thread(target=self._beat, name=f"heartbeat:{self.path.parent.name}", daemon=True)
        self._thread.start()
        return self

    def _stop_heartbeat(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def release(self) -> None:
        self._stop_heartbeat()
        if self.owned():
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()

    def park(self) -> None:
        """Keep the claim for this job's requeued incarnation (preemption, time limit): the heartbeat stops, the claim
        is marked parked (no live process), and only the same scheduler job adopts it before it goes stale."""
        self._stop_heartbeat()
        with _takeover_lock(self.path.parent) as locked:
            info = claim_info(self.path.parent)
            if not locked or info is None or info.get("token") != self.token:
                return
            _replace_claim(self.path, {**info, "pid": None, "parked": now()})


@contextlib.contextmanager
def _takeover_lock(run_dir: Path) -> Iterator[bool]:
    """Serialise takeovers of one run's claim: True while this thread holds the lock, False when another does.

    ``flock`` conflicts between any two open file descriptions (threads included) and is released by the kernel when
    its holder dies, so a dead taker never blocks the run. The lock file is never deleted (deleting it would let two
    takers lock two different files).
    """
    if fcntl is None:  # pragma: no cover - not POSIX: rely on the rename check alone
        yield True
        return
    fd = os.open(run_dir / LOCK, os.O_CREAT | os.O_RDWR | getattr(os, "O_NOFOLLOW", 0), 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            locked = True
        except BlockingIOError:
            locked = False
        except OSError:  # a file system without flock: rely on the rename check alone
            locked = True
        yield locked
    finally:
        os.close(fd)


def _take_over(path: Path, stale_s: float, ended_job: str | None = None) -> bool:
    """Move a claim whose owner is gone out of the way; False when it is live or another worker is taking it over."""
    if _owner_gone(path, stale_s, ended_job) is None:
        return False
    with _takeover_lock(path.parent) as locked:
        return locked and _move_aside(path, stale_s, ended_job)


def _move_aside(path: Path, stale_s: float, ended_job: str | None = None) -> bool:
    if not path.exists():  # released, or moved aside by the taker before us: race for the free name
        return True
    if _owner_gone(path, stale_s, ended_job) is None:  # checked again under the lock: a taker before us may have won
        return False
    moved = path.with_name(f".{CLAIM}.stale-{uuid.uuid4().hex}")
    try:
        os.rename(path, moved)
    except FileNotFoundError:  # another taker moved it first: race for the free name below
        return True
    why = _owner_gone(moved, stale_s, ended_job)
    if why is None:  # between our check and the rename a live worker claimed it: give it back
        with contextlib.suppress(FileExistsError):
            os.link(moved, path)
        moved.unlink(missing_ok=True)
        return False
    log.info("taking over %s (%s)", path, why)
    moved.unlink(missing_ok=True)
    return True


def _replace_claim(path: Path, info: dict[str, Any]) -> None:
    """Rewrite a claim this process holds (temp file, fsync, rename): readers see the old content or the new."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".new", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(json.dumps(info).encode())
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, shared_mode())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def _adopt(path: Path, heartbeat_s: float) -> Claim | None:
    """The claim an earlier incarnation of this very job parked (a requeue), taken back with its token."""
    job = current_job()
    info = claim_info(path.parent)
    if job is None or info is None or not info.get("parked") or info.get("job") != job:
        return None
    with _takeover_lock(path.parent) as locked:
        info = claim_info(path.parent)
        if not locked or info is None or not info.get("parked") or info.get("job") != job:
            return None
        info = {k: v for k, v in info.items() if k != "parked"}
        _replace_claim(path, {**info, "host": socket.gethostname(), "pid": os.getpid(), "resumed": now()})
    log.info("adopting %s, parked by an earlier incarnation of job %s", path, job)
    return Claim(path, info["token"], heartbeat_s).start()


def acquire_claim(run_dir: str | Path, stale_s: float = DEFAULT_STALE_S,
                  heartbeat_s: float | None = None, *, ended_job: str | None = None) -> Claim | None:
    """Claim ``run_dir`` for this process, or None when another live worker holds it.

    Args:
        run_dir: the run folder (created).
        stale_s: a claim whose heartbeat is older than this is taken over.
        heartbeat_s: seconds between heartbeats (default: a tenth of ``stale_s``, at most 30 s).
        ended_job: a scheduler job (:func:`job_key`) its scheduler says has ended: its claim is free at once.
    """
    path = Path(run_dir) / CLAIM
    heartbeat_s = heartbeat_s if heartbeat_s is not None else min(30.0, stale_s / 10)
    adopted = _adopt(path, heartbeat_s)
    if adopted is not None:
        return adopted
    token = uuid.uuid4().hex
    info = {"host": socket.gethostname(), "pid": os.getpid(), "job": current_job(), "token": token, "started": now()}
    for _ in range(3):
        if create_exclusive(path, json.dumps(info).encode()):
            return Claim(path, token, heartbeat_s).start()
        if not _take_over(path, stale_s, ended_job):
            return None
    return None


@contextlib.contextmanager
def holding_claim(run_dir: str | Path, stale_s: float = DEFAULT_STALE_S) -> Iterator[Claim]:
    """Hold ``run_dir``'s claim for the block, every write into the folder fenced by it, as a sweep worker holds a
    run's (``robustscale train``: a ``train --resume`` started while another process trains the folder is refused,
    instead of training it concurrently).

    Raises:
        UserError: another live process holds the claim (one line naming it).
    """
    claim = acquire_claim(run_dir, stale_s)
    if claim is None:
        info = claim_info(run_dir) or {}
        who = f"process {info.get('pid')} on {shown(info.get('host'), 60)}" if info.get("pid") else "another worker"
        job = f", job {shown(info['job'], 60)}" if info.get("job") else ""
        raise UserError(f"'{shown(run_dir)}' is being trained by {who}{job} (its {CLAIM}): wait for it to end or stop "
                        f"it; a claim whose holder died is taken over (on another host, after {stale_s:.0f} s)")
    try:
        with fence(run_dir, claim.holds, "claim"):
            yield claim
    finally:
        claim.release()
