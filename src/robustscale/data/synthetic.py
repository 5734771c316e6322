"""Synthetic training images in the format of the public DDPM/EDM releases (Gowal et al. 2021, Wang et al. 2023).

An ``.npz`` with ``image`` (uint8, NHWC) and ``label`` (integers). The releases hold 1M-50M images, so the file is
memory-mapped, not read: for an uncompressed npz (``np.savez``, as released) we map the member's bytes in place; a
compressed one (``np.savez_compressed``) is decompressed once into a ``.npy`` cache beside it. Nothing is unpickled
(``allow_pickle=False``) and every file is validated against the real dataset before training starts.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from robustscale.errors import DataError

__all__ = ["load_synthetic", "save_synthetic"]


def _npy_member_memmap(path: Path, member: str) -> np.ndarray | None:
    """Memory-map an uncompressed member of a zip (.npz) in place; None if the member is compressed."""
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo(member)
        if info.compress_type != zipfile.ZIP_STORED:
            return None
    with open(path, "rb") as fh:
        fh.seek(info.header_offset)
        local = fh.read(30)
        name_len, extra_len = int.from_bytes(local[26:28], "little"), int.from_bytes(local[28:30], "little")
        fh.seek(info.header_offset + 30 + name_len + extra_len)
        version = np.lib.format.read_magic(fh)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(fh)
        else:
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(fh)
        if dtype.hasobject:
            raise DataError(f"synthetic data '{path}': member '{member}' holds Python objects; save plain arrays")
        offset = fh.tell()
    return np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape, order="F" if fortran else "C")


def _member(path: Path, key: str) -> np.ndarray:
    mapped = _npy_member_memmap(path, f"{key}.npy")
    if mapped is not None:
        return mapped
    cache = path.with_suffix(f".{key}.npy")
    if not cache.exists() or cache.stat().st_mtime < path.stat().st_mtime:
        with np.load(path, allow_pickle=False) as npz:
            arr = npz[key]
        tmp = cache.with_suffix(".tmp.npy")
        np.save(tmp, arr)
        tmp.replace(cache)
    return np.load(cache, mmap_mode="r", allow_pickle=False)


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
    except zipfile.BadZipFile:
        raise DataError(f"synthetic data file '{path}' is not an .npz archive: save it with np.savez") from None
    missing = {"image", "label"} - keys
    if missing:
        raise DataError(f"synthetic data file '{path}' lacks key(s) {sorted(missing)} (has {sorted(keys)}): "
                        "save it as np.savez(path, image=uint8 NHWC, label=int)")
    try:
        images, labels = _member(path, "image"), _member(path, "label")
    except ValueError as err:
        raise DataError(f"synthetic data file '{path}' cannot be read without pickle ({err}); save plain arrays") \
            from None
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
    from robustscale.store.atomic import atomic_path

    path = Path(path)
    with atomic_path(path, suffix=".npz") as tmp:
        np.savez(tmp, image=np.ascontiguousarray(images, dtype=np.uint8), label=np.asarray(labels, dtype=np.int64))
    return path
