"""JSON read from a run or sweep folder, within bounds: every way such a file can be bad ends in one typed error.

A run folder can be downloaded, shared or damaged, and every JSON robustscale keeps there (``record.json``,
``adaptive_plan.json``, AutoAttack's resume states, ``trackers.json``, claims, ``metrics.jsonl``, evaluation
results) or is handed as a results table is read back later. ``Path.read_text`` + ``json.loads`` is not safe for
that: a FIFO at the name blocks the reader forever, a link to ``/dev/zero`` eats memory, a few thousand nested
brackets raise ``RecursionError`` (and a few hundred pass the parser, then break the first recursive walk over them).
So a file is opened without following a link at its last component (``O_NOFOLLOW``) and without blocking
(``O_NONBLOCK``), checked to be a regular file on the descriptor itself (``fstat``: no race with a rename), read up to
a size cap, parsed, and its nesting measured without recursion. Anything else is a :class:`JsonFileError`: a
:class:`~robustscale.errors.UserError` (one line at the command line) and a ``ValueError`` (what readers that start
over already catch). A missing file stays ``FileNotFoundError``: callers tell "absent" from "bad".
"""

from __future__ import annotations

import errno
import json
import os
import stat
from pathlib import Path
from typing import Any

from robustscale.errors import UserError, shown

__all__ = ["MAX_JSON_BYTES", "MAX_TABLE_BYTES", "MAX_DEPTH", "JsonFileError", "open_regular", "read_bytes",
           "loads", "read_json", "read_json_lines"]

MAX_JSON_BYTES = 64 << 20  # 64 MiB: a record is a few KiB, an AutoAttack state of 50,000 points under 1 MiB
MAX_TABLE_BYTES = 256 << 20  # a results table: the paper's 320 runs are 150 KiB as JSON
MAX_DEPTH = 64  # nesting levels (records and plans are 4 deep); as for YAML (robustscale.safe_yaml)

_KINDS = {stat.S_IFDIR: "a folder", stat.S_IFIFO: "a FIFO", stat.S_IFCHR: "a character device",
          stat.S_IFBLK: "a block device", stat.S_IFSOCK: "a socket"}


class JsonFileError(UserError, ValueError):
    """A file that is not JSON robustscale may read: not a regular file, a symbolic link, too large, not UTF-8, not
    JSON, or nested too deep. One line naming the file and the reason."""


def _size(n: int) -> str:
    return f"{n >> 20} MiB" if n >= 1 << 20 else f"{n} bytes"


def open_regular(path: str | os.PathLike) -> int:
    """A read-only descriptor of the regular file at ``path``: a link at its last component, a FIFO, a device, a
    socket or a folder is a :class:`JsonFileError` (opened without blocking, checked on the descriptor).

    Raises:
        FileNotFoundError: nothing is there.
    """
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except OSError as err:
        if err.errno in (errno.ELOOP, errno.EMLINK):  # O_NOFOLLOW at a link (EMLINK: FreeBSD's way to say it)
            raise JsonFileError(f"'{shown(path)}' is a symbolic link: robustscale reads no links there; replace it "
                                "with the file itself") from None
        if err.errno == errno.ENXIO:  # a socket (or a FIFO opened for writing)
            raise JsonFileError(f"'{shown(path)}' is not a regular file: remove it") from None
        raise
    kind = stat.S_IFMT(os.fstat(fd).st_mode)
    if kind != stat.S_IFREG:
        os.close(fd)
        raise JsonFileError(f"'{shown(path)}' is {_KINDS.get(kind, 'not a regular file')}, not a file: remove it")
    return fd


def read_bytes(path: str | os.PathLike, max_bytes: int = MAX_JSON_BYTES) -> bytes:
    """The content of the regular file at ``path`` (:func:`open_regular`), refused beyond ``max_bytes``."""
    fd = open_regular(path)
    try:
        if os.fstat(fd).st_size > max_bytes:
            raise JsonFileError(f"'{shown(path)}' is larger than {_size(max_bytes)}: not a file robustscale wrote")
        chunks, total = [], 0
        while True:  # the size may grow while reading (a file being appended to): read at most the cap + 1
            chunk = os.read(fd, min(1 << 20, max_bytes + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
            if total > max_bytes:
                raise JsonFileError(f"'{shown(path)}' is larger than {_size(max_bytes)}: not a file robustscale wrote")
        return b"".join(chunks)
    finally:
        os.close(fd)


def _depth_beyond(obj: Any, max_depth: int) -> bool:
    """Whether ``obj`` nests lists and objects deeper than ``max_depth`` (iterative: no recursion)."""
    stack = [(obj, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, (dict, list)):
            if depth > max_depth:
                return True
            children = node.values() if isinstance(node, dict) else node
            stack.extend((c, depth + 1) for c in children if isinstance(c, (dict, list)))
    return False


def loads(text: str | bytes, source: object, max_depth: int = MAX_DEPTH) -> Any:
    """Parse JSON ``text`` (named ``source`` in messages) nested at most ``max_depth`` levels deep.

    ``NaN`` and ``Infinity`` are read (robustscale writes them for missing or unbounded values); numbers beyond a
    float are ``inf``; an integer of more than 4,300 digits is refused by Python itself (a ``ValueError`` here).
    """
    try:
        if isinstance(text, bytes):
            text = text.decode("utf-8")
        obj = json.loads(text)
    except UnicodeDecodeError:
        raise JsonFileError(f"'{shown(source)}' is not UTF-8 text: not a JSON file robustscale wrote") from None
    except RecursionError:
        raise JsonFileError(f"'{shown(source)}' is nested deeper than {max_depth} levels: not a file robustscale "
                            "wrote") from None
    except ValueError as err:  # JSONDecodeError, and the integer digit limit
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise JsonFileError(f"'{shown(source)}' is not JSON ({shown(first, 80)})") from None
    if _depth_beyond(obj, max_depth):
        raise JsonFileError(f"'{shown(source)}' is nested deeper than {max_depth} levels: not a file robustscale "
                            "wrote")
    return obj


def read_json(path: str | os.PathLike, *, max_bytes: int = MAX_JSON_BYTES, max_depth: int = MAX_DEPTH) -> Any:
    """The JSON in the regular file at ``path``, within the bounds above.

    Raises:
        FileNotFoundError: there is no file.
        JsonFileError: there is one, but not one to read (one line naming it and why).
        OSError: the file system refused (permissions).
    """
    return loads(read_bytes(path, max_bytes), path, max_depth)


def read_json_lines(path: str | os.PathLike, *, max_bytes: int = MAX_JSON_BYTES, max_depth: int = MAX_DEPTH,
                    strict: bool = True) -> list[Any]:
    """The values of a JSON-lines file (blank lines skipped). ``strict=False``: a line that is not JSON (one cut
    short by a kill, as the last line of a log may be) is left out instead of refused; a file that cannot be read
    (a link, a FIFO, too large) is refused either way.

    Raises:
        FileNotFoundError, JsonFileError, OSError: as :func:`read_json`; a bad line names its number.
    """
    data = read_bytes(path, max_bytes)
    rows = []
    for number, line in enumerate(data.splitlines(), 1):
        if not line.strip():
            continue
        try:
            rows.append(loads(line, f"{Path(path)}, line {number}", max_depth))
        except JsonFileError:
            if strict:
                raise
    return rows
