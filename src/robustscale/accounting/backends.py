"""Where energy comes from: one small :class:`Backend` interface and its implementations, as CodeCarbon splits its
core from its hardware classes. :mod:`robustscale.accounting.energy` meters with them.

* GPUs: :class:`NVMLBackend` reads NVML's total-energy counter (``nvmlDeviceGetTotalEnergyConsumption``, mJ since
  the driver loaded; Volta and newer) for every GPU the process uses. Where the counter is not supported it
  integrates ``nvmlDeviceGetPowerUsage`` sampled every ``sample_interval_s`` (trapezoid rule). Either way it keeps a
  power trace. If NVML cannot be used at all, :class:`TDPEstimateBackend` charges each GPU
  ``ASSUMED_GPU_POWER_FRACTION`` of its TDP (from :mod:`robustscale.accounting.hardware`) for the whole time.
* CPU: :class:`RAPLBackend` reads Linux powercap (``/sys/class/powercap/intel-rapl:*``; also AMD CPUs since Linux
  5.8) package and DRAM domains, handling counter wrap-around with ``max_energy_range_uj``. Most distributions make
  ``energy_uj`` root-only; then :class:`EstimateBackend` charges ``CPU_WATTS_PER_CORE`` per CPU-second this process
  used (``time.process_time``).

:func:`default_backends` chooses them for this machine: per component, the backends to try in order (the meter uses
the first that starts). The GPU list comes from :mod:`robustscale.accounting.host`, the one place it is computed.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import pynvml

from robustscale.accounting.hardware import gpu_energy_kwh, gpu_tdp_w
from robustscale.accounting.host import gpu_names

__all__ = ["Backend", "NVMLBackend", "RAPLBackend", "EstimateBackend", "TDPEstimateBackend", "default_backends",
           "rapl_readable", "RAPL_ROOT", "CPU_WATTS_PER_CORE", "ASSUMED_GPU_POWER_FRACTION", "J_PER_KWH"]

log = logging.getLogger("robustscale.accounting")

J_PER_KWH = 3.6e6
RAPL_ROOT = Path("/sys/class/powercap")
# Server CPUs have roughly 4-12 W of TDP per core (TDP / cores); 10 W per busy core errs on the high side and covers
# a share of uncore and memory power. Used only when RAPL is unreadable, and flagged as an estimate.
CPU_WATTS_PER_CORE = 10.0
# Adversarial training keeps a GPU saturated (the attack is back-to-back forwards and backwards); such loads draw
# most of the board power limit. Used only when NVML is unusable, and flagged as an estimate.
ASSUMED_GPU_POWER_FRACTION = 0.8


class Backend(ABC):
    """One source of energy for one component. ``poll`` is called every sampling interval from the meter's thread
    (and once more at stop); ``joules`` is the energy since :meth:`start`, as of the last poll."""

    component: str = "cpu"  # "gpu" or "cpu"
    source: str = ""
    estimated: bool = False
    note: str = ""  # what an estimate assumes, said when the meter falls back to it

    def __init__(self) -> None:
        self.joules = 0.0
        self.names: list[str] = []

    @abstractmethod
    def start(self) -> None:
        """Take the baseline; raise if this backend cannot work here (the meter then falls back)."""

    @abstractmethod
    def poll(self) -> float | None:
        """Bring :attr:`joules` up to date; return the current power in watts when known."""

    def close(self) -> None:
        """Release what :meth:`start` acquired."""


def _nvml_handle(nvml, index: int):
    """The NVML handle of CUDA device ``index``, seen through ``CUDA_VISIBLE_DEVICES`` (which renumbers devices)."""
    visible = [v.strip() for v in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if v.strip()]
    if not visible or index >= len(visible):
        return nvml.nvmlDeviceGetHandleByIndex(index)
    entry = visible[index]
    if entry.isdigit():
        return nvml.nvmlDeviceGetHandleByIndex(int(entry))
    return nvml.nvmlDeviceGetHandleByUUID(entry)


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


@dataclass
class _GPU:
    handle: Any
    base_mj: int | None  # None: no energy counter, integrate sampled power
    joules: float = 0.0
    last_w: float | None = None


class NVMLBackend(Backend):
    """NVML energy counters (power sampling where unsupported) for the given CUDA device indices.

    Args:
        indices: CUDA device indices of this process (``CUDA_VISIBLE_DEVICES`` is applied to find the NVML device).
        nvml: the ``pynvml`` module, or a stand-in (tests, hardware without NVML).
    """

    component = "gpu"

    def __init__(self, indices: Sequence[int], nvml: Any = pynvml):
        super().__init__()
        self.indices = list(indices)
        self._nvml = nvml
        self._gpus: list[_GPU] = []
        self._t = 0.0
        self._failed: set[str] = set()

    def start(self) -> None:
        nvml = self._nvml
        nvml.nvmlInit()
        self._gpus, self.names = [], []
        for index in self.indices:
            handle = _nvml_handle(nvml, index)
            self.names.append(_text(nvml.nvmlDeviceGetName(handle)))
            try:
                base = int(nvml.nvmlDeviceGetTotalEnergyConsumption(handle))
            except Exception:  # noqa: BLE001 - NVMLError_NotSupported before Volta
                base = None
            self._gpus.append(_GPU(handle, base))
        self._t = time.monotonic()
        counters = {g.base_mj is not None for g in self._gpus}
        self.source = "+".join(s for s, on in (("nvml-counter", True in counters),
                                               ("nvml-sampled", False in counters)) if on)
        self.poll()

    def _warn_once(self, what: str, err: Exception) -> None:
        if what not in self._failed:
            self._failed.add(what)
            log.warning("NVML %s failed (%s); keeping the energy measured so far", what, err)

    def poll(self) -> float | None:
        now = time.monotonic()
        dt, self._t = now - self._t, now
        total, known = 0.0, False
        for g in self._gpus:
            try:
                watts = self._nvml.nvmlDeviceGetPowerUsage(g.handle) / 1000.0
            except Exception as err:  # noqa: BLE001
                self._warn_once("power reading", err)
                watts = None
            if g.base_mj is not None:
                try:
                    g.joules = (int(self._nvml.nvmlDeviceGetTotalEnergyConsumption(g.handle)) - g.base_mj) / 1000.0
                except Exception as err:  # noqa: BLE001
                    self._warn_once("energy counter", err)
            else:
                held = g.last_w if watts is None else watts  # a missed sample: hold the last known power
                if g.last_w is not None and held is not None:
                    g.joules += 0.5 * (g.last_w + held) * dt
                g.last_w = held
            if watts is not None:
                total, known = total + watts, True
        self.joules = sum(g.joules for g in self._gpus)
        return total if known else None

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._nvml.nvmlShutdown()


@dataclass
class _Domain:
    path: Path
    name: str
    max_uj: int
    last_uj: int
    joules: float = 0.0


def _rapl_domains(root: Path) -> list[_Domain]:
    """Package and DRAM domains (core/uncore are inside the package; psys spans the platform and would double
    count). Raises OSError when none is readable."""
    found = []
    for zone in sorted(root.glob("intel-rapl:*")):
        try:
            name = (zone / "name").read_text().strip()
        except OSError:
            continue
        top = re.fullmatch(r"intel-rapl:\d+", zone.name) is not None
        if (top and name.startswith("package")) or (not top and name == "dram"):
            try:
                energy = int((zone / "energy_uj").read_text())
                max_uj = int((zone / "max_energy_range_uj").read_text())
            except (OSError, ValueError):
                continue
            found.append(_Domain(zone, f"{zone.name}:{name}", max_uj, energy))
    if not found:
        raise OSError(f"no readable RAPL package/dram domain under {root} (energy_uj is usually root-only)")
    return found


def rapl_readable(root: str | Path = RAPL_ROOT) -> bool:
    """Whether this process can read at least one RAPL package or DRAM energy counter."""
    try:
        _rapl_domains(Path(root))
        return True
    except OSError:
        return False


class RAPLBackend(Backend):
    """CPU package and DRAM energy from Linux powercap (``root`` is injectable for tests)."""

    component = "cpu"
    source = "rapl"

    def __init__(self, root: str | Path = RAPL_ROOT):
        super().__init__()
        self.root = Path(root)
        self._domains: list[_Domain] = []
        self._t = 0.0
        self._warned = False

    def start(self) -> None:
        self._domains = _rapl_domains(self.root)
        self.names = [d.name for d in self._domains]
        self._t = time.monotonic()

    def poll(self) -> float | None:
        now = time.monotonic()
        dt, self._t = now - self._t, now
        before = self.joules
        for d in self._domains:
            try:
                value = int((d.path / "energy_uj").read_text())
            except (OSError, ValueError) as err:
                if not self._warned:
                    self._warned = True
                    log.warning("RAPL read of %s failed (%s); keeping the energy measured so far", d.path, err)
                continue
            delta = value - d.last_uj
            if delta < 0:  # the counter wrapped around
                delta += d.max_uj
            d.joules += delta / 1e6
            d.last_uj = value
        self.joules = sum(d.joules for d in self._domains)
        return (self.joules - before) / dt if dt > 0 else None


class EstimateBackend(Backend):
    """CPU energy estimated as ``watts_per_core`` per CPU-second this process used (all its threads)."""

    component = "cpu"
    source = "process-estimate"
    estimated = True

    def __init__(self, watts_per_core: float = CPU_WATTS_PER_CORE):
        super().__init__()
        self.watts_per_core = watts_per_core
        self.note = f"CPU energy estimated at {watts_per_core:g} W per busy core"
        self._cpu0 = 0.0
        self._last = (0.0, 0.0)

    def start(self) -> None:
        self._cpu0 = time.process_time()
        self._last = (time.monotonic(), 0.0)

    def poll(self) -> float | None:
        cpu_s = time.process_time() - self._cpu0
        self.joules = cpu_s * self.watts_per_core
        now = time.monotonic()
        t, prev = self._last
        self._last = (now, cpu_s)
        return (cpu_s - prev) * self.watts_per_core / (now - t) if now > t else None


class TDPEstimateBackend(Backend):
    """GPU energy estimated as ``fraction`` x TDP for the metered time, per GPU (when NVML is unusable)."""

    component = "gpu"
    source = "tdp-estimate"
    estimated = True

    def __init__(self, names: Sequence[str], fraction: float = ASSUMED_GPU_POWER_FRACTION):
        super().__init__()
        self.names, self.fraction = list(names), fraction
        self.tdp_w = sum(gpu_tdp_w(n) for n in self.names)
        self.watts = self.tdp_w * fraction
        self.note = f"GPU energy estimated at {fraction:.0%} of TDP"
        self._t0 = 0.0

    def start(self) -> None:
        self._t0 = time.monotonic()

    def poll(self) -> float | None:
        hours = (time.monotonic() - self._t0) / 3600.0
        self.joules = gpu_energy_kwh(hours, self.tdp_w, self.fraction) * J_PER_KWH
        return self.watts


def default_backends(gpu_indices: Sequence[int], *, cpu: bool = True, count_cpu_package: bool = True,
                     nvml: Any = pynvml, rapl_root: str | Path = RAPL_ROOT) -> list[list[Backend]]:
    """The backends for this machine, per component in the order to try them (the first that starts is used).

    Args:
        gpu_indices: CUDA device indices this process uses.
        cpu: meter the CPU too.
        count_cpu_package: read RAPL for the (shared) CPU package; False on DDP ranks other than local rank 0, which
            then meter no CPU when RAPL is readable (local rank 0 does), and estimate their own process when not.
        nvml, rapl_root: where NVML and powercap are (a stand-in and a folder, for tests and unusual machines).
    """
    chains: list[list[Backend]] = []
    if gpu_indices:
        chains.append([NVMLBackend(gpu_indices, nvml), TDPEstimateBackend(gpu_names(gpu_indices))])
    if cpu:
        root = Path(rapl_root)
        if not rapl_readable(root):
            chains.append([EstimateBackend()])
        elif count_cpu_package:
            chains.append([RAPLBackend(root), EstimateBackend()])
    return chains
