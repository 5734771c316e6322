"""Energy meter: ``with EnergyMeter([0]) as meter: train()`` then ``meter.reading`` (kWh, watts, a power trace).

The paper sampled ``nvidia-smi`` power and multiplied its mean by wall time. Here each component is measured where
the hardware allows it, behind one small :class:`Backend` interface, and estimated only where it does not:

* GPUs: :class:`NVMLBackend` reads NVML's total-energy counter (``nvmlDeviceGetTotalEnergyConsumption``, mJ since
  the driver loaded; Volta and newer) for every GPU the process uses. Where the counter is not supported it
  integrates ``nvmlDeviceGetPowerUsage`` sampled every ``sample_interval_s`` (trapezoid rule). Either way it keeps a
  power trace. If NVML cannot be used at all, :class:`TDPEstimateBackend` charges each GPU
  ``ASSUMED_GPU_POWER_FRACTION`` of its TDP (from :mod:`robustscale.accounting.hardware`) for the whole time:
  flagged ``gpu_estimated``.
* CPU: :class:`RAPLBackend` reads Linux powercap (``/sys/class/powercap/intel-rapl:*``; also AMD CPUs since Linux
  5.8) package and DRAM domains, handling counter wrap-around with ``max_energy_range_uj``. Most distributions make
  ``energy_uj`` root-only; then :class:`EstimateBackend` charges ``CPU_WATTS_PER_CORE`` per CPU-second this process
  used (``time.process_time``): flagged ``cpu_estimated``.

Measured and estimated energy are never mixed silently: the reading keeps GPU and CPU apart, each with its own
``*_estimated`` flag and ``*_source``, and ``estimated`` is true if either part is. Under DDP each rank meters its own
GPU; the CPU package is shared by the ranks of a node, so only local rank 0 reads RAPL (``count_cpu_package=False``
elsewhere); when RAPL is unreadable every rank estimates its own process. :func:`reduce_across_ranks` sums the ranks.

A meter never stops training: a backend that fails to start or to read logs a warning, keeps the energy it had
measured so far, and the failure is listed in ``reading.warnings``.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import re
import threading
import time
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

__all__ = ["EnergyReading", "EnergyMeter", "Backend", "NVMLBackend", "RAPLBackend", "EstimateBackend",
           "TDPEstimateBackend", "reduce_across_ranks", "merge_ranks", "rapl_readable", "RAPL_ROOT",
           "CPU_WATTS_PER_CORE", "ASSUMED_GPU_POWER_FRACTION", "DEFAULT_GPU_TDP_W"]

log = logging.getLogger("robustscale.accounting")

J_PER_KWH = 3.6e6
RAPL_ROOT = Path("/sys/class/powercap")
# Server CPUs have roughly 4-12 W of TDP per core (TDP / cores); 10 W per busy core errs on the high side and covers
# a share of uncore and memory power. Used only when RAPL is unreadable, and flagged as an estimate.
CPU_WATTS_PER_CORE = 10.0
# Adversarial training keeps a GPU saturated (the attack is back-to-back forwards and backwards); such loads draw
# most of the board power limit. Used only when NVML is unusable, and flagged as an estimate.
ASSUMED_GPU_POWER_FRACTION = 0.8
DEFAULT_GPU_TDP_W = 300.0  # a GPU missing from the hardware table
MAX_TRACE_POINTS = 20_000  # longer traces are thinned (every other point dropped) to bound checkpoint size


# ---------------------------------------------------------------------------------------------- the reading


@dataclass
class EnergyReading:
    """Energy used by the IT equipment (before PUE), GPU and CPU kept apart, with where each number came from."""

    gpu_kwh: float = 0.0
    cpu_kwh: float = 0.0
    seconds: float = 0.0  # metered wall time
    gpu_estimated: bool = False
    cpu_estimated: bool = False
    gpu_source: str = "none"  # nvml-counter | nvml-sampled | tdp-estimate | none (joined with '+' when mixed)
    cpu_source: str = "none"  # rapl | process-estimate | none
    gpu_names: list[str] = field(default_factory=list)
    trace: list[tuple[float, float]] = field(default_factory=list)  # (seconds since start, measured watts)
    warnings: list[str] = field(default_factory=list)

    @property
    def estimated(self) -> bool:
        """True when any component's energy is an estimate rather than a measurement."""
        return self.gpu_estimated or self.cpu_estimated

    @property
    def kwh(self) -> float:
        return self.gpu_kwh + self.cpu_kwh

    @property
    def mean_power_w(self) -> float:
        return self.kwh * J_PER_KWH / self.seconds if self.seconds > 0 else 0.0

    def __add__(self, other: "EnergyReading") -> "EnergyReading":
        """Two segments one after the other (a run and its resume): energies and times add, traces concatenate."""
        shifted = [(t + self.seconds, w) for t, w in other.trace]
        return EnergyReading(
            gpu_kwh=self.gpu_kwh + other.gpu_kwh, cpu_kwh=self.cpu_kwh + other.cpu_kwh,
            seconds=self.seconds + other.seconds,
            gpu_estimated=self.gpu_estimated or other.gpu_estimated,
            cpu_estimated=self.cpu_estimated or other.cpu_estimated,
            gpu_source=_join(self.gpu_source, other.gpu_source), cpu_source=_join(self.cpu_source, other.cpu_source),
            gpu_names=max(self.gpu_names, other.gpu_names, key=len),
            trace=_thin(self.trace + shifted), warnings=list(dict.fromkeys(self.warnings + other.warnings)))

    def state_dict(self) -> dict[str, Any]:
        state = asdict(self)
        state["trace"] = [list(p) for p in self.trace]
        return state

    @classmethod
    def from_state_dict(cls, state: Mapping[str, Any]) -> "EnergyReading":
        known = {k: v for k, v in state.items() if k in cls.__dataclass_fields__}
        known["trace"] = [tuple(p) for p in known.get("trace", [])]
        return cls(**known)


def _join(a: str, b: str) -> str:
    parts = [p for s in (a, b) for p in s.split("+") if p and p != "none"]
    return "+".join(dict.fromkeys(parts)) or "none"


def _thin(trace: list[tuple[float, float]]) -> list[tuple[float, float]]:
    while len(trace) > MAX_TRACE_POINTS:
        trace = trace[::2]
    return trace


def merge_ranks(readings: Sequence[EnergyReading]) -> EnergyReading:
    """Readings of ranks that ran side by side: energies add, time is the longest, traces add point by point."""
    if not readings:
        return EnergyReading()
    n = min(len(r.trace) for r in readings)
    trace = [(readings[0].trace[i][0], sum(r.trace[i][1] for r in readings)) for i in range(n)]
    out = EnergyReading(
        gpu_kwh=sum(r.gpu_kwh for r in readings), cpu_kwh=sum(r.cpu_kwh for r in readings),
        seconds=max(r.seconds for r in readings), gpu_estimated=any(r.gpu_estimated for r in readings),
        cpu_estimated=any(r.cpu_estimated for r in readings),
        gpu_names=[name for r in readings for name in r.gpu_names], trace=trace,
        warnings=list(dict.fromkeys(f"rank {i}: {w}" for i, r in enumerate(readings) for w in r.warnings)))
    for r in readings:
        out.gpu_source, out.cpu_source = _join(out.gpu_source, r.gpu_source), _join(out.cpu_source, r.cpu_source)
    return out


def reduce_across_ranks(reading: EnergyReading) -> EnergyReading:
    """Sum a reading over the ``torch.distributed`` ranks (a collective: every rank must call it); a no-op when no
    process group is initialised. Never raises: on failure it warns and returns this rank's reading."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return reading
    try:
        gathered: list[Any] = [None] * dist.get_world_size()
        dist.all_gather_object(gathered, reading.state_dict())
        return merge_ranks([EnergyReading.from_state_dict(s) for s in gathered])
    except Exception as err:  # noqa: BLE001 - a meter never stops training
        msg = f"energy of other ranks not gathered ({type(err).__name__}: {err}); this rank's reading only"
        log.warning(msg)
        return EnergyReading.from_state_dict({**reading.state_dict(), "warnings": [*reading.warnings, msg]})


# ---------------------------------------------------------------------------------------------- backends


class Backend(ABC):
    """One source of energy for one component. ``poll`` is called every sampling interval from the meter's thread
    (and once more at stop); ``joules`` is the energy since :meth:`start`, as of the last poll."""

    component: str = "cpu"  # "gpu" or "cpu"
    source: str = ""
    estimated: bool = False

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
        nvml: the ``pynvml`` module, or a stand-in for tests; imported lazily when None.
    """

    component = "gpu"

    def __init__(self, indices: Sequence[int], nvml=None):
        super().__init__()
        self.indices = list(indices)
        self._nvml = nvml
        self._gpus: list[_GPU] = []
        self._t = 0.0
        self._failed: set[str] = set()

    def start(self) -> None:
        nvml = self._nvml = self._nvml or importlib.import_module("pynvml")
        nvml.nvmlInit()
        self._gpus = []
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
        self.watts = sum(_tdp(n) for n in self.names) * fraction
        self._t0 = 0.0

    def start(self) -> None:
        self._t0 = time.monotonic()

    def poll(self) -> float | None:
        self.joules = self.watts * (time.monotonic() - self._t0)
        return self.watts


def _tdp(name: str) -> float:
    from robustscale.accounting.hardware import get_gpu
    from robustscale.errors import UserError

    try:
        return get_gpu(name).tdp_w
    except UserError:
        return DEFAULT_GPU_TDP_W


def _cuda_indices() -> list[int]:
    try:
        import torch

        return list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    except Exception:  # noqa: BLE001
        return []


def _cuda_names(indices: Sequence[int]) -> list[str]:
    try:
        import torch

        return [torch.cuda.get_device_name(i) for i in indices]
    except Exception:  # noqa: BLE001
        return ["unknown GPU"] * len(indices)


# ---------------------------------------------------------------------------------------------- the meter


class EnergyMeter(contextlib.ContextDecorator):
    """Meters the energy of everything run inside it: ``with EnergyMeter([0]) as m: ...``; ``m.reading``.

    Also a decorator (``@EnergyMeter()``) and startable by hand (:meth:`start` / :meth:`stop`). Successive
    start/stop segments add up in :attr:`reading`.

    Args:
        gpu_indices: CUDA device indices this process uses; None: every visible device (none without CUDA).
        sample_interval_s: power sampling period (trace, and energy where no counter exists).
        cpu: meter the CPU too.
        count_cpu_package: read RAPL for the (shared) CPU package; False on DDP ranks other than local rank 0.
        nvml: a ``pynvml`` stand-in (tests); rapl_root: powercap folder (tests).
        backends: use exactly these backends instead of choosing them (tests, custom hardware).
    """

    def __init__(self, gpu_indices: list[int] | None = None, sample_interval_s: float = 1.0, cpu: bool = True,
                 count_cpu_package: bool = True, *, nvml=None, rapl_root: str | Path = RAPL_ROOT,
                 cpu_watts_per_core: float = CPU_WATTS_PER_CORE, backends: Sequence[Backend] | None = None):
        self.gpu_indices = gpu_indices
        self.sample_interval_s = sample_interval_s
        self.cpu = cpu
        self.count_cpu_package = count_cpu_package
        self.nvml = nvml
        self.rapl_root = Path(rapl_root)
        self.cpu_watts_per_core = cpu_watts_per_core
        self._given = list(backends) if backends is not None else None
        self._backends: list[Backend] = []
        self._warnings: list[str] = []
        self._trace: list[tuple[float, float]] = []
        self._dead: set[int] = set()
        self._done = EnergyReading()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._t0: float | None = None

    # -- choosing backends

    def _warn(self, msg: str) -> None:
        log.warning(msg)
        self._warnings.append(msg)

    def _try_start(self, backend: Backend) -> bool:
        try:
            backend.start()
            return True
        except Exception as err:  # noqa: BLE001 - a meter never stops training
            self._warn(f"{type(backend).__name__} unavailable ({type(err).__name__}: {err})")
            return False

    def _choose(self) -> list[Backend]:
        chosen: list[Backend] = []
        indices = _cuda_indices() if self.gpu_indices is None else list(self.gpu_indices)
        if indices:
            nvml = NVMLBackend(indices, self.nvml)
            if self._try_start(nvml):
                chosen.append(nvml)
            else:
                self._warn(f"GPU energy estimated at {ASSUMED_GPU_POWER_FRACTION:.0%} of TDP")
                chosen.append(TDPEstimateBackend(_cuda_names(indices)))
                self._try_start(chosen[-1])
        if self.cpu:
            readable = rapl_readable(self.rapl_root)
            if readable and self.count_cpu_package:
                rapl = RAPLBackend(self.rapl_root)
                if self._try_start(rapl):
                    chosen.append(rapl)
                    return chosen
            elif readable:  # local rank 0 reads the package this rank shares
                return chosen
            estimate = EstimateBackend(self.cpu_watts_per_core)
            self._try_start(estimate)
            chosen.append(estimate)
        return chosen

    # -- running

    def start(self) -> "EnergyMeter":
        if self._t0 is not None:
            return self
        self._warnings, self._trace, self._dead = [], [], set()
        if self._given is not None:
            self._backends = [b for b in self._given if self._try_start(b)]
        else:
            self._backends = self._choose()
        self._t0 = time.monotonic()
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="robustscale-energy", daemon=True)
        self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.wait(self.sample_interval_s):
            self._poll()

    def _poll(self) -> None:
        with self._lock:
            measured_w, any_w = 0.0, False
            for backend in self._backends:
                if id(backend) in self._dead:
                    continue
                try:
                    watts = backend.poll()
                except Exception as err:  # noqa: BLE001
                    self._warn(f"{type(backend).__name__} stopped reading ({type(err).__name__}: {err}); "
                               "its energy so far is kept")
                    self._dead.add(id(backend))  # frozen at its last value
                    continue
                if watts is not None and not backend.estimated:
                    measured_w, any_w = measured_w + watts, True
            if any_w and self._t0 is not None:
                self._trace.append((round(time.monotonic() - self._t0, 3), round(measured_w, 2)))
                if len(self._trace) > MAX_TRACE_POINTS:
                    self._trace = _thin(self._trace)

    def _segment(self) -> EnergyReading:
        """The current segment's reading, from the backends' last polls."""
        out = EnergyReading(seconds=time.monotonic() - self._t0 if self._t0 is not None else 0.0,
                            trace=list(self._trace), warnings=list(self._warnings))
        for b in self._backends:
            kwh = b.joules / J_PER_KWH
            if b.component == "gpu":
                out.gpu_kwh += kwh
                out.gpu_estimated |= b.estimated
                out.gpu_source = _join(out.gpu_source, b.source)
                out.gpu_names += b.names
            else:
                out.cpu_kwh += kwh
                out.cpu_estimated |= b.estimated
                out.cpu_source = _join(out.cpu_source, b.source)
        return out

    def read(self) -> EnergyReading:
        """The reading of the running segment so far (polled now), without stopping."""
        if self._t0 is None:
            return EnergyReading()
        self._poll()
        with self._lock:
            return self._segment()

    def stop(self) -> EnergyReading:
        """Stop metering; return this segment's reading (also added to :attr:`reading`)."""
        if self._t0 is None:
            return EnergyReading()
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=max(5.0, 2 * self.sample_interval_s))
        self._poll()
        with self._lock:
            segment = self._segment()
        for b in self._backends:
            with contextlib.suppress(Exception):
                b.close()
        self._t0, self._thread = None, None
        self._done = self._done + segment
        return segment

    @property
    def reading(self) -> EnergyReading:
        """Everything metered so far: finished segments plus the running one."""
        return self._done + self.read() if self._t0 is not None else self._done

    def __enter__(self) -> "EnergyMeter":
        return self.start()

    def __exit__(self, *exc) -> bool:
        self.stop()
        return False
