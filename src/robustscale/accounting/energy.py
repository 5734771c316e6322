"""Energy meter: ``with EnergyMeter([0]) as meter: train()`` then ``meter.reading`` (kWh, watts, a power trace).

The paper sampled ``nvidia-smi`` power and multiplied its mean by wall time. Here each component is measured where
the hardware allows it, through the backends of :mod:`robustscale.accounting.backends` (NVML and RAPL, with flagged
estimates where they cannot be read), and this module keeps the reading and the meter that polls them.

Measured and estimated energy are never mixed silently: the reading keeps GPU and CPU apart, each with its own
``*_estimated`` flag and ``*_source``, and ``estimated`` is true if either part is. Under DDP each rank meters its own
GPU; the CPU package is shared by the ranks of a node, so only local rank 0 reads RAPL (``count_cpu_package=False``
elsewhere); when RAPL is unreadable every rank estimates its own process. :func:`reduce_across_ranks` sums the ranks.

A meter never stops training: a backend that fails to start or to read logs a warning, keeps the energy it had
measured so far, and the failure is listed in ``reading.warnings``.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Mapping, Sequence

import torch.distributed as dist

from robustscale.accounting.backends import J_PER_KWH, Backend, default_backends
from robustscale.accounting.host import visible_gpus

__all__ = ["EnergyReading", "EnergyMeter", "reduce_across_ranks", "merge_ranks", "J_PER_KWH"]

log = logging.getLogger("robustscale.accounting")

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
        backends: the backends to use instead of :func:`~robustscale.accounting.backends.default_backends` (tests,
            unusual hardware): each a :class:`Backend`, or a list of them tried in order until one starts.
    """

    def __init__(self, gpu_indices: list[int] | None = None, sample_interval_s: float = 1.0, cpu: bool = True,
                 count_cpu_package: bool = True, *, backends: Sequence[Backend | Sequence[Backend]] | None = None):
        self.gpu_indices = gpu_indices
        self.sample_interval_s = sample_interval_s
        self.cpu = cpu
        self.count_cpu_package = count_cpu_package
        self._given = None if backends is None else [[b] if isinstance(b, Backend) else list(b) for b in backends]
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

    def _first_that_starts(self, chain: Sequence[Backend]) -> Backend | None:
        """The first backend of ``chain`` that starts; falling back to an estimate is said in the warnings."""
        for i, backend in enumerate(chain):
            if self._try_start(backend):
                if i and backend.note:
                    self._warn(backend.note)
                return backend
        return None

    def _chains(self) -> list[list[Backend]]:
        if self._given is not None:
            return self._given
        indices = visible_gpus() if self.gpu_indices is None else list(self.gpu_indices)
        return default_backends(indices, cpu=self.cpu, count_cpu_package=self.count_cpu_package)

    # -- running

    def start(self) -> "EnergyMeter":
        if self._t0 is not None:
            return self
        self._warnings, self._trace, self._dead = [], [], set()
        started = (self._first_that_starts(chain) for chain in self._chains())
        self._backends = [b for b in started if b is not None]
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
