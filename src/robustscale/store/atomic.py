"""Atomic writes: temp file in the same folder -> fsync -> rename, so a reader never sees half a file and a crash
never loses what was already written.

Files get the permissions ``open()`` would give (0666 minus the umask: 0644 under the usual 022), so a shared run
folder stays readable by the group that shares it. A kill between the temp file and the rename leaves a
``.NAME.*.tmp*`` file behind; :func:`remove_stale_temp_files` clears them when a run starts again. Every write first
asks :func:`robustscale.store.fence.check_write`, so a worker that lost its run's claim writes nothing more.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator

from robustscale.errors import UserError, shown
from robustscale.store.fence import check_write
from robustscale.store.safe_json import loads, read_bytes
from robustscale.store.safe_paths import open_append_nofollow

TEMP_MARK = ".tmp"  # every temp name is ".<final name>.<random>.tmp<suffix>"


def _umask() -> int:
    """The process umask, read from /proc where Linux reports it: setting the umask to read it back races with other
    threads creating files at that moment (a heartbeat, a progress view) and would give them mode 0666."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def shared_mode() -> int:
    """The mode for a file meant to be shared: what ``open()`` gives, 0666 minus the umask."""
    return 0o666 & ~_umask()


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | Path, suffix: str = "") -> Iterator[Path]:
    """Yield a temp path beside ``path``; on success fsync it and rename it over ``path``."""
    path = Path(path)
    check_write(path)
    if path.is_dir():
        raise UserError(f"'{shown(path)}' is a folder: pass a file name to write")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f"{TEMP_MARK}{suffix}", dir=path.parent)
    except OSError as err:
        if err.errno not in (errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOTDIR, errno.EEXIST):
            raise
        raise UserError(f"cannot write '{shown(path)}': {err.strerror} ({shown(err.filename or path.parent)}); "
                        "choose a folder you can write to") from None
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        # mkstemp makes 0600, and some writers (safetensors) create the file anew: set the mode open() would give
        os.chmod(tmp, shared_mode())
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        check_write(path)  # the block may have run for a while (a checkpoint of a large model)
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    finally:
        tmp.unlink(missing_ok=True)


def write_bytes(path: str | Path, data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text(path: str | Path, text: str) -> Path:
    return write_bytes(path, text.encode())


def write_json(path: str | Path, obj: Any) -> Path:
    return write_text(path, json.dumps(obj, indent=2, default=str, allow_nan=True) + "\n")


def append_line(path: str | Path, line: str) -> None:
    """Append one line and fsync (for jsonl logs: a crash loses at most the line being written). A symbolic link at
    ``path`` is refused, not followed."""
    check_write(path)
    with os.fdopen(open_append_nofollow(path), "a") as fh:
        fh.write(line.rstrip("\n") + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def keep_lines(path: str | Path, keep: Callable[[dict[str, Any]], bool]) -> int:
    """Atomically rewrite a jsonl log keeping the rows ``keep`` accepts (and dropping a torn last line); returns how
    many rows were dropped. A missing file is left missing; one that is not a regular file, or is too large, is a
    one-line :class:`~robustscale.store.safe_json.JsonFileError`."""
    try:
        lines = read_bytes(path).decode("utf-8", errors="replace").splitlines()
    except FileNotFoundError:
        return 0
    kept = []
    for line in lines:
        try:
            row = loads(line, path)
        except ValueError:  # a line cut short by a kill
            continue
        if isinstance(row, dict) and keep(row):
            kept.append(line)
    if len(kept) != len(lines):
        write_text(path, "".join(f"{line}\n" for line in kept))
    return len(lines) - len(kept)


def remove_stale_temp_files(folder: str | Path) -> list[Path]:
    """Delete the temp files an interrupted :func:`atomic_path` left in ``folder`` (``.NAME.*.tmp*``); call it only
    where this process is the folder's one writer (a run folder, by its claim holder). Returns what was removed."""
    removed = []
    for entry in Path(folder).glob(f".*.*{TEMP_MARK}*"):
        if entry.is_file() and not entry.is_symlink():
            entry.unlink(missing_ok=True)
            removed.append(entry)
    return removed
