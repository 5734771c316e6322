"""Synthetic training images in the format of the public DDPM/EDM releases (Gowal et al. 2021, Wang et al. 2023).

An ``.npz`` with ``image`` (uint8, NHWC) and ``label`` (integers). The releases hold 1M-50M images, so the file is
memory-mapped, not read: for an uncompressed npz (``np.savez``, as released) we map the member's bytes in place; a
compressed one (``np.savez_compressed``) is decompressed once into a ``.npy`` cache beside it, named by a key of the
archive's content (:func:`cache_key`), so a replaced archive never serves the old cache. Nothing is unpickled
(``allow_pickle=False``) and every file is validated against the real dataset before training starts.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
import zipfile
import zlib
from pathlib import Path

import numpy as np

from robustscale.errors import DataError, shown
from robustscale.store.atomic import atomic_path

__all__ = ["load_synthetic", "save_synthetic", "cache_key", "content_key"]

_HEAD_BYTES = 1 << 16  # hashed with the archive's member table to key the decompressed cache


class _BadMember(Exception):
    """A member of the archive is not a readable ``.npy`` array; the message says why, for the one-line error."""


def _read_header(fh, member: str) -> tuple[tuple[int, ...], bool, np.dtype]:
    try:
        version = np.lib.format.read_magic(fh)
        if version == (1, 0):
            return np.lib.format.read_array_header_1_0(fh)
        return np.lib.format.read_array_header_2_0(fh)
    except Exception as err:  # numpy parses the header text (ast, tokenize): a crafted one fails every way
        raise _BadMember(f"member '{member}' has no valid .npy header ({type(err).__name__}: {shown(err)})") \
            from None


def _npy_member_memmap(path: Path, member: str) -> np.ndarray | None:
    """Memory-map an uncompressed member of a zip (.npz) in place; None if the member is compressed. The header is
    checked against the member's size in the archive, so a crafted shape cannot map bytes outside it."""
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo(member)
        if info.compress_type != zipfile.ZIP_STORED:
            return None
    with open(path, "rb") as fh:
        fh.seek(info.header_offset)
        local = fh.read(30)
        if len(local) != 30 or local[:4] != b"PK\x03\x04":
            raise _BadMember(f"member '{member}' has a damaged zip entry")
        name_len, extra_len = int.from_bytes(local[26:28], "little"), int.from_bytes(local[28:30], "little")
        start = info.header_offset + 30 + name_len + extra_len
        fh.seek(start)
        shape, fortran, dtype = _read_header(fh, member)
        offset = fh.tell()
    if dtype.hasobject:
        raise _BadMember(f"member '{member}' holds Python objects (a pickle); save plain arrays")
    if any(n < 0 for n in shape) or int(np.prod(shape, dtype=object)) * dtype.itemsize != start + info.file_size - offset:
        raise _BadMember(f"member '{member}' declares shape {shape} of {dtype}, which does not match its "
                         f"{info.file_size} bytes")
    if int(np.prod(shape, dtype=object)) == 0:
        return np.zeros(shape, dtype)
    return np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape, order="F" if fortran else "C")


def cache_key(path: Path) -> str:
    """A key for the *content* of an archive: its size, every member's CRC-32 and sizes (which zip keeps for the
    uncompressed data) and a hash of its first 64 KiB. Unlike a modification time, it changes whenever the content
    does, whichever file replaced which."""
    digest = hashlib.sha256()
    with zipfile.ZipFile(path) as zf:
        members = [(i.filename, i.CRC, i.file_size, i.compress_size) for i in zf.infolist()]
    digest.update(json.dumps([path.stat().st_size, members]).encode())
    with open(path, "rb") as fh:
        digest.update(fh.read(_HEAD_BYTES))
    return digest.hexdigest()[:16]


def content_key(path: Path) -> str:
    """A key for the arrays an archive holds: every member's name, uncompressed size and CRC-32, from the zip's
    directory (no array is read). Unlike :func:`cache_key`, the same arrays written again, compressed or not, by
    another zlib or with other timestamps, get the same key: what a run's record keeps of the set it trained on."""
    with zipfile.ZipFile(path) as zf:
        members = sorted((i.filename, i.CRC, i.file_size) for i in zf.infolist())
    return hashlib.sha256(json.dumps(members).encode()).hexdigest()[:16]


def _decompress_to(path: Path, key: str, cache: Path) -> None:
    """Write member ``key`` of ``path`` to ``cache`` atomically, through a temp name unique to this call (two
    processes opening the same fresh archive each write their own and the last rename wins, with equal content)."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            arr = npz[key]
    except ValueError as err:
        if "pickle" in str(err):
            raise _BadMember(f"member '{key}.npy' holds Python objects (a pickle); save plain arrays") from None
        raise _BadMember(f"member '{key}.npy' is not a readable .npy array ({shown(err)})") from None
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, MemoryError, KeyError, NotImplementedError,
            RuntimeError) as err:
        raise _BadMember(f"member '{key}.npy' is corrupt ({type(err).__name__}: {shown(err)})") from None
    tmp = cache.with_name(f".{cache.name}.{uuid.uuid4().hex}.tmp.npy")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # the umask applies, as for any shared file
    try:
        with os.fdopen(fd, "wb") as fh:
            np.save(fh, arr, allow_pickle=False)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, cache)
    finally:
        tmp.unlink(missing_ok=True)


def _remove_stale_caches(path: Path, key: str, keep: Path) -> None:
    """Caches of earlier contents of ``path`` (same stem and member, another content key) take disk for nothing."""
    prefix = f"{path.stem}.{key}."
    for entry in path.parent.iterdir():
        if entry != keep and entry.name.startswith(prefix) and entry.name.endswith(".npy") and entry.is_file():
            entry.unlink(missing_ok=True)


def _member(path: Path, key: str) -> np.ndarray:
    mapped = _npy_member_memmap(path, f"{key}.npy")
    if mapped is not None:
        return mapped
    cache = path.with_name(f"{path.stem}.{key}.{cache_key(path)}.npy")
    if not cache.exists():
        _decompress_to(path, key, cache)
        _remove_stale_caches(path, key, cache)
    try:
        return np.load(cache, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError) as err:
        raise _BadMember(f"its decompressed cache '{cache.name}' is unreadable ({shown(err)}); delete it") from None


def load_synthetic(path: str | Path, *, image_size: int, channels: int, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Open and validate a synthetic-data npz; returns memory-mapped ``(images NHWC uint8, labels int64)``.

    Raises:
        DataError: one line naming the file and what is wrong (keys, dtype, shape vs the real dataset, labels).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"synthetic data file '{path}' not found: set data.synthetic.path to an .npz with "
                        "'image' and 'label'")
    try:
        with zipfile.ZipFile(path) as zf:
            keys = {n[:-4] for n in zf.namelist() if n.endswith(".npy")}
    except (zipfile.BadZipFile, OSError, ValueError, EOFError):
        raise DataError(f"synthetic data file '{shown(path)}' is not an .npz archive: save it with np.savez") \
            from None
    missing = {"image", "label"} - keys
    if missing:
        raise DataError(f"synthetic data file '{path}' lacks key(s) {sorted(missing)} (has {sorted(keys)}): "
                        "save it as np.savez(path, image=uint8 NHWC, label=int)")
    try:
        images, labels = _member(path, "image"), _member(path, "label")
    except _BadMember as err:
        raise DataError(f"synthetic data file '{shown(path)}': {err}") from None
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, zlib.error, NotImplementedError, RuntimeError,
            KeyError) as err:  # a damaged or crafted archive: unsupported compression, encryption, bad offsets
        raise DataError(f"synthetic data file '{shown(path)}' is corrupt ({type(err).__name__}: {shown(err)}): "
                        "save it again with np.savez") from None
    if images.dtype != np.uint8:
        raise DataError(f"synthetic data '{path}': 'image' must be uint8 in 0..255, got {images.dtype}")
    expected = (image_size, image_size, channels)
    if images.ndim != 4 or tuple(images.shape[1:]) != expected:
        raise DataError(f"synthetic data '{path}': 'image' must be N x {expected[0]} x {expected[1]} x {expected[2]} "
                        f"(NHWC, like the real dataset), got {tuple(images.shape)}")
    if labels.ndim != 1 or labels.shape[0] != images.shape[0]:
        raise DataError(f"synthetic data '{path}': 'label' must be 1-D with one label per image "
                        f"({images.shape[0]}), got shape {tuple(labels.shape)}")
    if not np.issubdtype(labels.dtype, np.integer):
        raise DataError(f"synthetic data '{path}': 'label' must be integers, got {labels.dtype}")
    lo, hi = _label_range(labels)
    if lo < 0 or hi >= num_classes:
        raise DataError(f"synthetic data '{path}': labels must lie in 0..{num_classes - 1}, found {lo}..{hi}")
    return images, labels


def _label_range(labels: np.ndarray, chunk: int = 1 << 22) -> tuple[int, int]:
    lo, hi = np.iinfo(np.int64).max, np.iinfo(np.int64).min
    for start in range(0, len(labels), chunk):
        part = np.asarray(labels[start:start + chunk])
        lo, hi = min(lo, int(part.min())), max(hi, int(part.max()))
    return lo, hi


def save_synthetic(path: str | Path, images: np.ndarray, labels: np.ndarray) -> Path:
    """Write images/labels as an uncompressed npz (memory-mappable), atomically."""
    path = Path(path)
    with atomic_path(path, suffix=".npz") as tmp:
        np.savez(tmp, image=np.ascontiguousarray(images, dtype=np.uint8), label=np.asarray(labels, dtype=np.int64))
    return path
