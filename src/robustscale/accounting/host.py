"""The machine a run runs on: its GPUs (the list is computed here and nowhere else), its CPU and platform.

The energy meter's default backends, the record's :class:`~robustscale.store.record.Hardware` and the benchmark's
device label all ask this module which GPUs there are and what they are called.
"""

from __future__ import annotations

import os
import platform
from typing import Sequence

import torch

from robustscale.store.record import Hardware

__all__ = ["visible_gpus", "gpu_names", "device_gpus", "cpu_model", "hardware"]


def visible_gpus() -> list[int]:
    """Indices of the CUDA devices this process sees (``CUDA_VISIBLE_DEVICES`` applied); [] without CUDA."""
    try:
        return list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    except Exception:  # noqa: BLE001 - a broken driver: no GPU to meter
        return []


def gpu_names(indices: Sequence[int] | None = None) -> list[str]:
    """Names of the CUDA devices ``indices`` (default: every visible one), as torch reports them."""
    indices = visible_gpus() if indices is None else list(indices)
    try:
        return [torch.cuda.get_device_name(i) for i in indices]
    except Exception:  # noqa: BLE001 - the record still gets the count
        return ["unknown GPU"] * len(indices)


def device_gpus(device: torch.device | str | None) -> list[int]:
    """The GPU index a torch device runs on (the current one for a bare ``cuda``), [] for any other device."""
    if device is None or torch.device(device).type != "cuda":
        return []
    index = torch.device(device).index
    return [index if index is not None else torch.cuda.current_device()]


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``, else what the platform module knows)."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def hardware(gpus: Sequence[str], gpu_count: int | None = None, *, world_size: int = 1, nodes: int = 1) -> Hardware:
    """The record's hardware: the GPUs a run used (``gpus``: each rank's name, as far as known; ``gpu_count``: how
    many, default ``len(gpus)``), its ranks and nodes, and this host's CPU."""
    gpus = list(gpus)
    return Hardware(gpu_name=gpus[0] if gpus else None, gpus=gpus,
                    gpu_count=len(gpus) if gpu_count is None else gpu_count, cpu=cpu_model(),
                    cpu_count=os.cpu_count(), platform=platform.platform(), world_size=world_size, nodes=nodes)
