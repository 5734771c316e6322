"""Training checkpoints as one safetensors file: tensors in the body, everything else as JSON in its metadata.

A checkpoint holds the model, the EMA, the optimiser and scheduler, every RNG (python, numpy, torch, cuda), the
epoch/step counters and the accounting counters. It is written atomically (temp -> fsync -> rename), so a run
killed at any moment resumes from the last complete one, and loading it executes no code: there is no pickle.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from robustscale.accounting.host import device_gpus, gpu_names
from robustscale.errors import UserError, shown
from robustscale.store.atomic import atomic_path
from robustscale.store.safe_json import loads

CHECKPOINT = "checkpoint.safetensors"


def _flatten(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """Replace tensors by references into ``tensors``; keep non-string dict keys recoverable."""
    if isinstance(obj, torch.Tensor):
        key = f"t{len(tensors)}"
        tensors[key] = obj.detach().cpu().contiguous().clone()
        return {"__tensor__": key}
    if isinstance(obj, np.ndarray):
        return {"__ndarray__": obj.tolist(), "dtype": str(obj.dtype)}
    if isinstance(obj, dict):
        if all(isinstance(k, str) for k in obj):
            return {k: _flatten(v, tensors) for k, v in obj.items()}
        return {"__items__": [[k, _flatten(v, tensors)] for k, v in obj.items()]}
    if isinstance(obj, tuple):
        return {"__tuple__": [_flatten(v, tensors) for v in obj]}
    if isinstance(obj, list):
        return [_flatten(v, tensors) for v in obj]
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if isinstance(obj, (np.integer, np.floating)):
        return obj.item()
    raise TypeError(f"cannot checkpoint a {type(obj).__name__}")


def _unflatten(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, list):
        return [_unflatten(v, tensors) for v in obj]
    if not isinstance(obj, dict):
        return obj
    if "__tensor__" in obj:
        return tensors[obj["__tensor__"]]
    if "__ndarray__" in obj:
        return np.asarray(obj["__ndarray__"], dtype=obj["dtype"])
    if "__items__" in obj:
        return {k: _unflatten(v, tensors) for k, v in obj["__items__"]}
    if "__tuple__" in obj:
        return tuple(_unflatten(v, tensors) for v in obj["__tuple__"])
    return {k: _unflatten(v, tensors) for k, v in obj.items()}


def rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def runtime_env(device: torch.device) -> dict[str, Any]:
    """What a resumed run must share with the run that wrote the checkpoint to continue it bitwise: the torch
    version, the CPU thread count (reductions split work by thread), the device (and its kernels: the CPU's vector
    ISA, the GPU model) and the number of ranks (each takes its slice of every batch)."""
    device = torch.device(device)
    if device.type == "cuda":
        kind = f"cuda:{gpu_names(device_gpus(device))[0]}"
    else:
        cpu = getattr(getattr(torch.backends, "cpu", None), "get_cpu_capability", lambda: "")()
        kind = f"{device.type}:{cpu}" if cpu else device.type
    world = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
    return {"torch": torch.__version__, "threads": torch.get_num_threads(), "device": kind, "world_size": world}


def env_differences(saved: dict[str, Any] | None, current: dict[str, Any]) -> list[str]:
    """``["threads 1 -> 2", ...]``: how ``current`` differs from the environment a checkpoint was written in (an old
    checkpoint without one: nothing can be said, so nothing is reported)."""
    if not isinstance(saved, dict):
        return []
    return [f"{key} {saved.get(key)} -> {value}" for key, value in current.items()
            if key in saved and saved[key] != value]


def first_nonfinite(tensors: dict[str, torch.Tensor]) -> str | None:
    """The name of the first floating-point tensor holding inf or NaN (None when all are finite)."""
    for name, t in tensors.items():
        if isinstance(t, torch.Tensor) and t.is_floating_point() and not bool(torch.isfinite(t).all()):
            return name
    return None


def _saved_progress(path: str | Path, key: str) -> int | None:
    try:
        with safe_open(str(path), framework="pt") as fh:
            value = loads((fh.metadata() or {})["state"], path)["progress"][key]
    except Exception:  # no checkpoint, or not one of ours: nothing is kept
        return None
    return value if isinstance(value, int) else None


def saved_epoch(path: str | Path) -> int | None:
    """The epoch a checkpoint holds, read from its metadata only (None when there is none or it is unreadable)."""
    return _saved_progress(path, "epoch")


def saved_step(path: str | Path) -> int | None:
    """The optimiser step a checkpoint holds (mid-epoch after a preemption), from its metadata only."""
    return _saved_progress(path, "step")


class NonFiniteCheckpoint(RuntimeError):
    """A checkpoint would hold inf or NaN: it is not written (a diverged run keeps its last finite checkpoint)."""


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> Path:
    """Write ``state`` (nested dicts/lists of tensors, arrays and JSON scalars) to one safetensors file.

    Raises:
        NonFiniteCheckpoint: a tensor holds inf or NaN (a diverged run): nothing is written.
    """
    tensors: dict[str, torch.Tensor] = {}
    skeleton = _flatten(state, tensors)
    bad = first_nonfinite(tensors)
    if bad is not None:
        raise NonFiniteCheckpoint(f"not writing {Path(path).name}: tensor {bad} holds inf or NaN")
    with atomic_path(path, suffix=".safetensors") as tmp:
        save_file(tensors, str(tmp), metadata={"state": json.dumps(skeleton), "format": "robustscale-checkpoint-1"})
    return Path(path)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` (tensors + JSON only).

    Raises:
        UserError: one line saying whether the file is missing, unreadable (permissions) or not a checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"no checkpoint at '{path}': there is nothing to continue (start the run afresh, without "
                        "resume)", "resume")
    try:
        with open(path, "rb"):  # the OS's own reason first (permissions), not a parser's guess
            pass
    except OSError as err:
        raise UserError(f"checkpoint '{path}' cannot be read ({err.strerror or type(err).__name__}): check its "
                        "permissions") from None
    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata() or {}
        tensors = load_file(str(path))
        return _unflatten(loads(meta["state"], f"{path} (its state metadata)"), tensors)
    except (OSError, KeyError, ValueError, TypeError, IndexError, RecursionError, json.JSONDecodeError,
            SafetensorError) as err:
        detail = f"{type(err).__name__}: {shown(err)}" if str(err) else type(err).__name__
        raise UserError(f"checkpoint '{path}' is not a readable robustscale checkpoint ({detail}); delete it to "
                        "restart the run") from None
