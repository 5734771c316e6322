"""What robustness costs: exact FLOPs, measured energy, electricity cost and CO2 of every run.

* :mod:`~robustscale.accounting.flops`: per-sample FLOPs of each loss counted on the real graph, and a run's total.
* :mod:`~robustscale.accounting.energy`: an energy meter (NVML, RAPL, or a flagged estimate).
* :mod:`~robustscale.accounting.cost`: PUE, price and grid carbon intensity; region presets.
* :mod:`~robustscale.accounting.budget`: a run's FLOPs, GPU-hours, kWh, $ and CO2 before it is trained.

:class:`RunAccounting` bundles the three for the training loop; :func:`accounting_block` writes the ``accounting``
block of ``record.json``.
"""

from __future__ import annotations

import contextlib
import os
import platform
from typing import Any, Iterator, Mapping

from robustscale.accounting.cost import REGIONS, Cost, CostModel, Region
from robustscale.accounting.energy import EnergyMeter, EnergyReading, reduce_across_ranks
from robustscale.accounting.flops import RunFlops, StepFlops, step_flops, step_flops_for_config
from robustscale.accounting.hardware import DEFAULT_UTILIZATION, GPUS, GPUSpec, get_gpu

__all__ = ["StepFlops", "RunFlops", "step_flops", "step_flops_for_config", "EnergyMeter", "EnergyReading",
           "reduce_across_ranks", "CostModel", "Cost", "Region", "REGIONS", "GPUS", "GPUSpec", "get_gpu",
           "DEFAULT_UTILIZATION", "accounting_block", "hardware_info", "RunAccounting", "FLOPS_NOTE"]

FLOPS_NOTE = ("FlopCounterMode counts (matmul/conv, 2 FLOPs per multiply-add) x samples processed; eval_flops: PGD "
              "validation only, AutoAttack not counted; paper_convention_flops: 3 x forward FLOPs per pass the paper "
              "charges (docs/flops.md)")


def hardware_info() -> dict[str, Any]:
    """GPU names and count (as torch sees them) and the CPU model, for the record."""
    gpus: list[str] = []
    try:
        import torch

        if torch.cuda.is_available():
            gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    except Exception:  # noqa: BLE001 - the record still gets the CPU
        pass
    return {"gpu_name": gpus[0] if gpus else None, "gpu_count": len(gpus), "gpus": gpus, "cpu": _cpu_model(),
            "cpu_count": os.cpu_count(), "platform": platform.platform()}


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def accounting_block(flops: RunFlops, reading: EnergyReading, cost_cfg, *, wall_s: float,
                     hardware: Mapping[str, Any], gpu_count: int) -> dict[str, Any]:
    """The ``accounting`` block of ``record.json``.

    Args:
        flops: the run's FLOP totals.
        reading: its energy (all ranks, all resume segments), IT energy before PUE.
        cost_cfg: an :class:`~robustscale.config.AccountingConfig` or a :class:`CostModel`.
        wall_s: training wall time in seconds.
        hardware: :func:`hardware_info` (GPU names are replaced by the metered ones when known).
        gpu_count: GPUs the run used (0 on CPU): ``gpu_hours = wall_s * gpu_count / 3600``.
    """
    model = cost_cfg if isinstance(cost_cfg, CostModel) else CostModel.from_config(cost_cfg)
    gpu_hours = wall_s * gpu_count / 3600.0
    cost = model.cost(reading.kwh, gpu_hours)
    hw = dict(hardware)
    if reading.gpu_names:
        hw.update(gpu_name=reading.gpu_names[0], gpus=list(reading.gpu_names))
    hw["gpu_count"] = gpu_count
    return {
        "train_flops": flops.train_flops, "attack_flops": flops.attack_flops, "update_flops": flops.update_flops,
        "eval_flops": flops.eval_flops, "flops_per_sample": flops.step.train,
        "paper_convention_flops": flops.paper_convention_flops, "samples_seen": flops.samples_seen,
        "eval_samples": flops.eval_samples, "flops_note": FLOPS_NOTE,
        "gpu_hours": gpu_hours, "wall_s": wall_s, "metered_s": reading.seconds,
        "energy_kwh": cost.energy_kwh, "energy_kwh_it": reading.kwh,
        "energy_kwh_gpu": reading.gpu_kwh, "energy_kwh_cpu": reading.cpu_kwh,
        "energy_estimated": reading.estimated, "energy_gpu_estimated": reading.gpu_estimated,
        "energy_cpu_estimated": reading.cpu_estimated,
        "energy_sources": {"gpu": reading.gpu_source, "cpu": reading.cpu_source},
        "energy_warnings": list(reading.warnings), "mean_power_w": reading.mean_power_w,
        "pue": model.pue, "price_per_kwh": model.price_per_kwh, "carbon_g_per_kwh": model.carbon_g_per_kwh,
        "region": model.region, "cost_source": model.source, "cost_usd": cost.cost_usd, "co2_kg": cost.co2_kg,
        "gpu_hour_usd": model.gpu_hour_usd, "cloud_cost_usd": cost.cloud_cost_usd, "hardware": hw,
    }


class RunAccounting:
    """FLOPs, energy and cost of one training run: what the training loop holds and checkpoints.

    ``meter()`` wraps the training; ``add_train(global_batch)`` once per optimiser step; ``add_eval`` after each
    PGD validation; ``sync()`` on *every* rank before rank 0 saves a checkpoint (it gathers the ranks' energy so the
    checkpoint holds all of it); ``state_dict``/``load_state_dict`` through the checkpoint; ``block(wall_s=...)``
    for the record. Energy after the last checkpoint of a killed run is lost with the steps it paid for; the
    resumed run meters those steps again, so, like FLOPs, each step is counted once.
    """

    def __init__(self, step: StepFlops, cost: CostModel, *, gpu_indices: list[int] | None = None,
                 gpu_count: int = 0, count_cpu_package: bool = True, sample_interval_s: float = 1.0,
                 meter_kwargs: Mapping[str, Any] | None = None):
        self.flops = RunFlops(step)
        self.cost = cost
        self.gpu_indices = gpu_indices if gpu_indices is not None else []
        self.gpu_count = gpu_count
        self.count_cpu_package = count_cpu_package
        self.sample_interval_s = sample_interval_s
        self.meter_kwargs = dict(meter_kwargs or {})
        self.hardware = hardware_info()
        self.energy = EnergyReading()  # every finished segment, all ranks (and what a checkpoint restored)
        self._synced = EnergyReading()  # the running segment, all ranks, as of the last sync()
        self._meter: EnergyMeter | None = None

    @classmethod
    def from_config(cls, cfg, dist=None, device=None) -> "RunAccounting":
        """For a :class:`~robustscale.config.Config`; ``dist`` a :class:`DistInfo`, ``device`` this rank's device."""
        import torch

        world = getattr(dist, "world_size", 1)
        on_gpu = device is not None and torch.device(device).type == "cuda"
        index = torch.device(device).index if on_gpu else None
        indices = [index if index is not None else torch.cuda.current_device()] if on_gpu else []
        return cls(step_flops_for_config(cfg), CostModel.from_config(cfg.accounting), gpu_indices=indices,
                   gpu_count=world if on_gpu else 0, count_cpu_package=getattr(dist, "local_rank", 0) == 0,
                   sample_interval_s=cfg.accounting.power_sample_s)

    # -- FLOPs

    def add_train(self, n_samples: int) -> None:
        self.flops.add_train(n_samples)

    def add_eval(self, n_samples: int, pgd_steps: int, n_attacked: int | None = None) -> None:
        """PGD-``pgd_steps`` validation of ``n_samples`` points (over all ranks), ``n_attacked`` of them attacked
        (those classified correctly; default all, an upper bound)."""
        self.flops.add_pgd_eval(n_samples, pgd_steps, n_attacked)

    @property
    def samples_seen(self) -> int:
        return self.flops.samples_seen

    @property
    def train_flops(self) -> int:
        return self.flops.train_flops

    # -- energy

    @contextlib.contextmanager
    def meter(self) -> Iterator[EnergyMeter]:
        """Meter the energy of the block on every rank; on exit the ranks' readings are summed (a collective)."""
        self._meter = EnergyMeter(self.gpu_indices, self.sample_interval_s, count_cpu_package=self.count_cpu_package,
                                  **self.meter_kwargs)
        self._synced = EnergyReading()
        self._meter.start()
        try:
            yield self._meter
        finally:
            segment = reduce_across_ranks(self._meter.stop())
            self.energy = self.energy + segment
            self._meter, self._synced = None, EnergyReading()

    def sync(self) -> None:
        """Gather the running segment's energy from all ranks (collective), so the next checkpoint holds it."""
        if self._meter is not None:
            self._synced = reduce_across_ranks(self._meter.read())

    @property
    def reading(self) -> EnergyReading:
        """Energy so far: finished segments plus the running one (all ranks as of the last :meth:`sync` under DDP;
        this rank's live reading in a single process)."""
        if self._meter is None:
            return self.energy
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            return self.energy + self._synced
        return self.energy + self._meter.read()

    # -- checkpoint and record

    def state_dict(self) -> dict[str, Any]:
        return {"flops": self.flops.state_dict(), "energy": self.reading.state_dict()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.flops.load_state_dict(state["flops"])
        self.energy = EnergyReading.from_state_dict(state.get("energy") or {})

    def block(self, *, wall_s: float) -> dict[str, Any]:
        return accounting_block(self.flops, self.reading, self.cost, wall_s=wall_s, hardware=self.hardware,
                                gpu_count=self.gpu_count)
