"""A restricted unpickler for the CIFAR python batches: the pickles admit what the real files contain, nothing else.

The CIFAR-10/100 "python version" files are Python 2 pickles of a dict with byte-string keys, a uint8 ``data`` array
(numpy's ``_reconstruct`` + ``ndarray`` + ``dtype``), integer label lists, file names and a few counts. A plain
``pickle.load`` of such a file executes whatever a crafted file asks for (an object whose ``__reduce__`` calls
``os.system``), and a run folder or a dataset folder can come from anyone. Here every global a pickle names is looked
up in a table of a few numpy constructors (under their numpy 1 and numpy 2 module names) and the latin-1 encoder
Python 3 uses for bytes in protocol 2, each wrapped to refuse object arrays, absurd shapes and other codecs;
anything else is refused before it is imported, let alone called.
"""

from __future__ import annotations

import io
import math
import pickle
from pathlib import Path
from typing import Any, Callable

import numpy as np

__all__ = ["UnsafePickle", "safe_loads", "safe_load_file", "MAX_PICKLE_BYTES"]

MAX_PICKLE_BYTES = 1 << 30  # a CIFAR batch is 31 MB (CIFAR-100's train file 155 MB)
MAX_ELEMENTS = 1 << 30  # elements of one array (CIFAR-100 train: 150M)


class UnsafePickle(pickle.UnpicklingError):
    """The pickle asks for something the real dataset files never contain."""


def _dtype(spec: Any, *args: Any) -> np.dtype:
    dtype = np.dtype(spec, *args) if isinstance(spec, str) else None
    if dtype is None or dtype.hasobject:
        raise UnsafePickle(f"dtype {spec!r} is not a plain numeric dtype")
    return dtype


def _check_shape(shape: Any) -> tuple[int, ...]:
    shape = tuple(shape) if isinstance(shape, (tuple, list)) else (shape,)
    if not all(isinstance(n, int) and n >= 0 for n in shape) or math.prod(shape) > MAX_ELEMENTS:
        raise UnsafePickle(f"array shape {shape!r} is not a plausible dataset shape")
    return shape


class _NDArrayName:
    """What a pickle gets for ``numpy.ndarray``: accepted as ``_reconstruct``'s subtype, refused if called (calling
    ``ndarray(shape)`` directly would allocate whatever shape the file names)."""

    def __new__(cls, *args: Any, **kwargs: Any) -> None:
        raise UnsafePickle("it calls numpy.ndarray directly")


def _reconstruct(subtype: Any, shape: Any, dtype: Any) -> np.ndarray:
    if subtype is not _NDArrayName:
        raise UnsafePickle("only plain numpy arrays are allowed")
    return np.ndarray.__new__(np.ndarray, _check_shape(shape), _dtype(dtype) if isinstance(dtype, str) else "b")


def _frombuffer(buffer: Any, dtype: Any, shape: Any, order: str) -> np.ndarray:
    if not isinstance(buffer, (bytes, bytearray, pickle.PickleBuffer)) or not isinstance(dtype, np.dtype):
        raise UnsafePickle("array buffer of an unexpected type")
    if dtype.hasobject:
        raise UnsafePickle("object arrays are not allowed")
    array = np.frombuffer(buffer, dtype=dtype).reshape(_check_shape(shape), order="F" if order == "F" else "C")
    return array.copy()


def _latin1_bytes(text: Any, encoding: str = "latin1") -> bytes:
    """``_codecs.encode(text, "latin1")``: how Python 3 writes ``bytes`` in protocol 2 (a re-packed copy of the
    files). Only that codec: others (zlib, hex...) are transformations a dataset file has no use for."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1", "iso-8859-1"):
        raise UnsafePickle("it encodes bytes with an unexpected codec")
    return text.encode("latin1")


# (module, name) -> the callable a pickle gets instead of the real global; numpy 1 and numpy 2 spellings
_ALLOWED: dict[tuple[str, str], Callable[..., Any]] = {
    **{(module, "_reconstruct"): _reconstruct for module in ("numpy.core.multiarray", "numpy._core.multiarray")},
    **{(module, "_frombuffer"): _frombuffer for module in ("numpy.core.numeric", "numpy._core.numeric")},
    ("numpy", "ndarray"): _NDArrayName,
    ("numpy", "dtype"): _dtype,
    ("_codecs", "encode"): _latin1_bytes,
}


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        found = _ALLOWED.get((module, name))
        if found is None:
            raise UnsafePickle(f"it refers to {module}.{name}, which a dataset file never does")
        return found

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickle("it uses persistent references")


def safe_loads(data: bytes, *, encoding: str = "latin1") -> Any:
    """Unpickle ``data`` admitting only dicts, lists, tuples, strings, bytes, numbers and plain numpy arrays.

    ``encoding="latin1"`` reads Python 2 strings as ``str`` (so ``b"data"`` keys become ``"data"``), the way
    torchvision reads these files, and lets numpy rebuild arrays pickled by Python 2.

    Raises:
        UnsafePickle: the pickle names any other global (nothing is imported or called).
        pickle.UnpicklingError, EOFError, ValueError, ...: the bytes are not a valid pickle.
    """
    return _RestrictedUnpickler(io.BytesIO(data), encoding=encoding).load()


def safe_load_file(path: str | Path, *, encoding: str = "latin1") -> Any:
    """:func:`safe_loads` of a file, refusing files larger than :data:`MAX_PICKLE_BYTES` before reading them."""
    path = Path(path)
    if path.stat().st_size > MAX_PICKLE_BYTES:
        raise UnsafePickle(f"{path.stat().st_size} bytes is larger than any dataset batch")
    return safe_loads(path.read_bytes(), encoding=encoding)
