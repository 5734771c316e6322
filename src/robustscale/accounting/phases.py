"""Energy split by what the run was doing: training steps apart from evaluation, out of one running meter.

The paper's code metered only its training epochs (``src/engine.py`` starts and stops CodeCarbon around
``train_one_epoch``), and ``train_flops`` and ``wall_s`` count only the training steps, so ``energy_kwh`` must cover
exactly those steps too. One :class:`~robustscale.accounting.energy.EnergyMeter` keeps running for the whole run (the
total bill); a phase reads it when it opens and when it closes and keeps the difference. Under DDP every rank keeps
its own differences, which :meth:`PhaseLedger.sync` and :meth:`PhaseLedger.close_segment` sum over the ranks, as
the meter's own reading is.
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator, Mapping

from robustscale.accounting.energy import EnergyMeter, EnergyReading, reduce_across_ranks

__all__ = ["PHASES", "PhaseLedger", "difference"]

PHASES = ("train", "eval")


def difference(later: EnergyReading, earlier: EnergyReading) -> EnergyReading:
    """The energy and time between two reads of one running meter (sources and flags of the later read)."""
    return EnergyReading(
        gpu_kwh=max(0.0, later.gpu_kwh - earlier.gpu_kwh), cpu_kwh=max(0.0, later.cpu_kwh - earlier.cpu_kwh),
        seconds=max(0.0, later.seconds - earlier.seconds), gpu_estimated=later.gpu_estimated,
        cpu_estimated=later.cpu_estimated, gpu_source=later.gpu_source, cpu_source=later.cpu_source,
        gpu_names=list(later.gpu_names))


class PhaseLedger:
    """Per-phase energy: finished segments (all ranks, restored from checkpoints) plus the running segment."""

    def __init__(self) -> None:
        self.done = {name: EnergyReading() for name in PHASES}  # all ranks
        self._local = {name: EnergyReading() for name in PHASES}  # this rank, running segment
        self._synced = {name: EnergyReading() for name in PHASES}  # all ranks, running segment, last sync
        self.used = False  # whether any phase was ever opened (else the whole meter is training)
        self.done_outside_meter = EnergyReading()  # what :meth:`add` brought in (not in the running meter's total)

    @contextlib.contextmanager
    def phase(self, name: str, meter: EnergyMeter | None) -> Iterator[None]:
        """Charge what ``meter`` reads while the block runs to ``name``; a no-op without a running meter."""
        if meter is None:
            yield
            return
        self.used = True
        start = meter.read()
        try:
            yield
        finally:
            self._local[name] = self._local[name] + difference(meter.read(), start)

    def add(self, name: str, reading: EnergyReading) -> None:
        """A finished reading of this phase metered elsewhere (the final evaluation's own meter, summed over the
        ranks)."""
        self.used = True
        self.done[name] = self.done[name] + reading
        self.done_outside_meter = self.done_outside_meter + reading

    def sync(self) -> None:
        """Sum the running segment over the ranks (a collective, with the meter's own sync)."""
        self._synced = {name: reduce_across_ranks(r) for name, r in self._local.items()}

    def close_segment(self) -> None:
        """The meter stopped: move the running segment (summed over ranks; a collective) into ``done``."""
        for name, reading in self._local.items():
            self.done[name] = self.done[name] + reduce_across_ranks(reading)
        self._local = {name: EnergyReading() for name in PHASES}
        self._synced = {name: EnergyReading() for name in PHASES}

    def reading(self, name: str, distributed: bool) -> EnergyReading:
        running = self._synced[name] if distributed else self._local[name]
        return self.done[name] + running

    def state_dict(self, distributed: bool) -> dict[str, Any]:
        return {"used": self.used, **{name: self.reading(name, distributed).state_dict() for name in PHASES}}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.used = bool(state.get("used", False))
        self.done = {name: EnergyReading.from_state_dict(state.get(name) or {}) for name in PHASES}
