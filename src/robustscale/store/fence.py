"""Write fences: a worker that lost its run's claim stops before its next write into that run's folder.

A sweep worker holds a run's claim while it trains (:mod:`robustscale.store.rundir`). If it is paused past
``--stale-after`` (a suspended laptop, a stopped process, a slow file system), another worker takes the claim over and
trains the run; when the first one wakes up it must not write another line. Every write of :mod:`robustscale.store.
atomic` (atomic replace and append) asks :func:`check_write` first, so the training loop needs no knowledge of claims:
``with fence(run_dir, claim.owned): train(...)`` and the first write after the claim is lost raises
:class:`WriteFenced` instead of writing.
"""

from __future__ import annotations

import contextlib
import os
import threading
from pathlib import Path
from typing import Callable, Iterator

__all__ = ["WriteFenced", "fence", "check_write"]

_fences: dict[str, tuple[Callable[[], bool], str]] = {}
_lock = threading.Lock()


class WriteFenced(RuntimeError):
    """A write into a fenced folder whose holder no longer holds it (its claim was taken over)."""


def _key(path: str | os.PathLike) -> str:
    return os.path.join(os.path.abspath(path), "")


@contextlib.contextmanager
def fence(folder: str | os.PathLike, holds: Callable[[], bool], what: str = "claim") -> Iterator[None]:
    """While the block runs, every write under ``folder`` first checks ``holds()``; False raises
    :class:`WriteFenced` (``what`` names the lost right in the message)."""
    key = _key(folder)
    with _lock:
        _fences[key] = (holds, what)
    try:
        yield
    finally:
        with _lock:
            _fences.pop(key, None)


def check_write(path: str | os.PathLike) -> None:
    """Raise :class:`WriteFenced` if ``path`` lies in a fenced folder whose holder lost it (a no-op otherwise)."""
    if not _fences:
        return
    target = os.path.abspath(path)
    with _lock:
        fences = list(_fences.items())
    for folder, (holds, what) in fences:
        if target.startswith(folder) and not holds():
            raise WriteFenced(f"this worker lost its {what} on {Path(folder).name}: another worker took the run "
                              f"over, so this one stops before writing {Path(target).name}")
