"""A secret of this machine's user, for files robustscale writes now and trusts later (an evaluation's resume state).

A run folder can come from anywhere; a resume state inside it says which test points are still robust, so a forged
one would report any accuracy. States are signed with this key (HMAC-SHA256) and resumed only when the signature
holds: a state written elsewhere, or edited, is started over. The key is 32 random bytes in
``$XDG_CACHE_HOME/robustscale/local.key`` (``~/.cache`` by default), created once, readable by the user alone.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
from pathlib import Path
from typing import Any, Optional

__all__ = ["key_path", "local_key", "sign", "signature_holds"]

KEY_BYTES = 32


def key_path() -> Path:
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "robustscale" / "local.key"


def local_key() -> Optional[bytes]:
    """This user's key, created on first use; None where it can be neither read nor created (then nothing is
    trusted: a state is never resumed)."""
    path = key_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            key = path.read_bytes()
            return key if len(key) == KEY_BYTES else None
        with os.fdopen(fd, "wb") as f:
            f.write(secrets.token_bytes(KEY_BYTES))
            f.flush()
            os.fsync(f.fileno())
        return path.read_bytes()
    except OSError:
        return None


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
