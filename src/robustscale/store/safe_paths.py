"""Paths inside a sweep's output that a crafted name or a planted link cannot redirect.

A run folder's name comes from its config (the model name is free text), and a sweep's output may be shared or
downloaded, so: a folder name is one plain path component (no separator, no ``..``, printable, bounded), a run
folder or a file robustscale appends to is never a symbolic link (``lstat``, ``O_NOFOLLOW``), and a log is opened
for append without following a link at its last component. Atomic writes are already safe against a link at the
final name: ``rename`` replaces the link itself, not its target.
"""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

from robustscale.errors import UserError, shown

__all__ = ["MAX_NAME_CHARS", "safe_component", "check_safe_name", "run_folder", "check_run_folder",
           "open_append_nofollow"]

MAX_NAME_CHARS = 120  # a run id is ~60 characters; file systems allow 255 bytes per component
_UNSAFE = re.compile(r"[^A-Za-z0-9_.+-]")


def safe_component(text: str, limit: int = 64) -> str:
    """``text`` made into a harmless piece of a folder name: only ``A-Za-z0-9_.+-``, no ``..``, no leading dot,
    at most ``limit`` characters. Names that are already safe come back unchanged (so run ids stay stable)."""
    text = _UNSAFE.sub("_", str(text))
    while ".." in text:
        text = text.replace("..", "_")
    return text.lstrip(".")[:limit] or "_"


def check_safe_name(name: str, what: str = "run folder name") -> str:
    """Raise a one-line :class:`UserError` unless ``name`` is a single plain path component."""
    problem = None
    if not name or name in (".", ".."):
        problem = "is empty or a dot name"
    elif "/" in name or "\\" in name or "\x00" in name:
        problem = "contains a path separator or NUL"
    elif name.startswith(".") or ".." in name:
        problem = "starts with a dot or contains '..'"
    elif not name.isprintable():
        problem = "contains control characters"
    elif len(name) > MAX_NAME_CHARS:
        problem = f"is longer than {MAX_NAME_CHARS} characters"
    if problem:
        raise UserError(f"{what} '{shown(name)}' {problem}: it must be one plain folder name")
    return name


def _is_link(path: Path) -> bool:
    try:
        return stat.S_ISLNK(os.lstat(path).st_mode)
    except FileNotFoundError:
        return False


def check_run_folder(run_dir: str | Path, files: tuple[str, ...] = ()) -> Path:
    """Refuse a run folder that is a symbolic link or holds one at any of ``files`` (the names robustscale writes
    or appends to there): following it would write outside the sweep's output."""
    run_dir = Path(run_dir)
    if _is_link(run_dir):
        raise UserError(f"run folder '{shown(run_dir)}' is a symbolic link: robustscale does not follow links inside "
                        "a sweep's output; remove the link")
    for name in files:
        if _is_link(run_dir / name):
            raise UserError(f"'{shown(run_dir / name)}' is a symbolic link: robustscale does not write through links "
                            "inside a sweep's output; remove it")
    return run_dir


def run_folder(out: str | Path, name: str, files: tuple[str, ...] = ()) -> Path:
    """``out / name`` for a run, checked: a plain name, and neither the folder nor its ``files`` a link."""
    return check_run_folder(Path(out) / check_safe_name(name), files)


def open_append_nofollow(path: str | Path) -> int:
    """A file descriptor for appending to ``path`` (created 0666 minus the umask), refusing a symbolic link there."""
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        return os.open(path, flags, 0o666)
    except OSError:
        if _is_link(Path(path)):
            raise UserError(f"'{shown(path)}' is a symbolic link: robustscale does not append through links; "
                            "remove it") from None
        raise
