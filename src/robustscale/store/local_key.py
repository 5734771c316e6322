"""A secret of this machine's user, for files robustscale writes now and trusts later (an evaluation's resume state).

A run folder can come from anywhere; a resume state inside it says which test points are still robust, so a forged
one would report any accuracy. States are signed with this key (HMAC-SHA256) and resumed only when the signature
holds: a state written elsewhere, or edited, is started over. The key is 32 random bytes in
``$XDG_CACHE_HOME/robustscale/local.key`` (``~/.cache`` when the variable is unset, empty or relative: the XDG spec
calls a relative path invalid, and it would put the key in the working directory), created once, mode 0600.

It is trusted only as this user's own secret: read without following a link, from a regular file owned by this user
that nobody else may read or write (mode 0600 or stricter), at most :data:`KEY_BYTES` bytes. A key another user could
have read (0644) or written is no secret, so nothing is trusted (states start over); a file of the wrong length (empty,
cut short by a full disk) is replaced by a new key, else no state would ever be trusted again.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import logging
import os
import secrets
import stat
import tempfile
from pathlib import Path
from typing import Any, Optional

__all__ = ["key_path", "local_key", "sign", "signature_holds"]

log = logging.getLogger(__name__)

KEY_BYTES = 32


def key_path() -> Path:
    cache = os.environ.get("XDG_CACHE_HOME", "")
    base = Path(cache) if os.path.isabs(cache) else Path.home() / ".cache"
    return base / "robustscale" / "local.key"


def _read(path: Path) -> tuple[bytes | None, str | None]:
    """``(key bytes, None)`` when ``path`` is a regular file of this user's, private (no group or other bits), read
    without following a link; ``(None, why not)`` otherwise (an untrusted key is no key). Raises FileNotFoundError
    when there is none."""
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise
    except OSError as err:  # a link (ELOOP), a socket, no permission
        return None, f"cannot be opened as a file ({err.strerror}): it may be a link"
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            return None, "is not a regular file"
        if info.st_uid != os.getuid():
            return None, f"belongs to user id {info.st_uid}, not to this user"
        if info.st_mode & 0o077:
            return None, f"has mode {stat.S_IMODE(info.st_mode):o}: others may read or write it (chmod 600 it)"
        return os.read(fd, KEY_BYTES + 1), None  # at most the key's size (+1 to tell a longer file)
    finally:
        os.close(fd)


def _write_new(path: Path, replace: bool) -> None:
    """A new key at ``path``: created exclusively, or (``replace``) written beside it and renamed over it."""
    if not replace:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
        tmp = None
    else:
        fd, tmp = tempfile.mkstemp(prefix=".local.key.", dir=path.parent)  # mode 0600
    with os.fdopen(fd, "wb") as f:
        f.write(secrets.token_bytes(KEY_BYTES))
        f.flush()
        os.fsync(f.fileno())
    if tmp is not None:
        try:
            os.replace(tmp, path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)


def local_key() -> Optional[bytes]:
    """This user's key, created on first use; None where it can be neither read nor created, or where the file is
    not private to this user (then nothing is trusted: a state is never resumed)."""
    path = key_path()
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        try:
            key, why = _read(path)
        except FileNotFoundError:
            with contextlib.suppress(FileExistsError):  # another process created it first: read theirs
                _write_new(path, replace=False)
            key, why = _read(path)
        if key is not None and len(key) != KEY_BYTES:  # empty or cut short (a full disk): a new key, so states
            _write_new(path, replace=True)  # signed from now on are trusted again
            key, why = _read(path)
    except OSError as err:
        key, why = None, f"cannot be created ({err.strerror})"
    if key is None or len(key) != KEY_BYTES:
        _warn_once(f"robustscale's key {path} {why or 'has the wrong length'}: no resume state is trusted (each "
                   "evaluation starts over)")
        return None
    return key


_warned: set[str] = set()


def _warn_once(message: str) -> None:
    if message not in _warned:
        _warned.add(message)
        log.warning(message)


def _digest(key: bytes, payload: dict[str, Any]) -> str:
    body = json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()
    return hmac.new(key, body, hashlib.sha256).hexdigest()


def sign(payload: dict[str, Any]) -> Optional[str]:
    """The signature of ``payload`` (a JSON object) with this user's key; None without a key."""
    key = local_key()
    return _digest(key, payload) if key is not None else None


def signature_holds(payload: dict[str, Any], signature: Any) -> bool:
    """Whether ``signature`` is this user's signature of ``payload`` (compared in constant time)."""
    key = local_key()
    return key is not None and isinstance(signature, str) and hmac.compare_digest(_digest(key, payload), signature)
