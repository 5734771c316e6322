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
from robustscale.accounting.phases import PhaseLedger

__all__ = ["StepFlops", "RunFlops", "step_flops", "step_flops_for_config", "EnergyMeter", "EnergyReading",
           "reduce_across_ranks", "CostModel", "Cost", "Region", "REGIONS", "GPUS", "GPUSpec", "get_gpu",
           "DEFAULT_UTILIZATION", "accounting_block", "hardware_info", "RunAccounting", "FLOPS_NOTE"]

FLOPS_NOTE = ("FlopCounterMode counts (matmul/conv, 2 FLOPs per multiply-add) x samples processed; eval_flops: PGD "
              "validation (val_flops) plus the final evaluation (final_eval_flops: the best model's calls, a forward "
              "F, a forward with input gradient 2F); paper_convention_flops: 3 x forward FLOPs per pass the paper's "
              "code ran (docs/flops.md)")
SCOPE_NOTE = ("energy_kwh, cost_usd, co2_kg, metered_s: the training steps that wall_s and train_flops cover; eval_*: "
              "PGD validation and the final evaluation; total_*: everything metered (training, evaluation, "
              "checkpoints, setup)")


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
                     hardware: Mapping[str, Any], gpu_count: int, eval_reading: EnergyReading | None = None,
                     eval_wall_s: float = 0.0, total_reading: EnergyReading | None = None) -> dict[str, Any]:
    """The ``accounting`` block of ``record.json``.

    Time, FLOPs and energy have one scope each (:data:`SCOPE_NOTE`): ``wall_s``, ``train_flops`` and ``energy_kwh``
    all cover the training steps, as the paper's code metered only its training epochs (``src/engine.py``); the
    evaluation's share and the whole bill sit beside them under ``eval_*`` and ``total_*``.

    Args:
        flops: the run's FLOP totals.
        reading: the energy of the training steps (all ranks, all resume segments), IT energy before PUE.
        cost_cfg: an :class:`~robustscale.config.AccountingConfig` or a :class:`CostModel`.
        wall_s: training wall time in seconds.
        hardware: :func:`hardware_info` (GPU names are replaced by the metered ones when known).
        gpu_count: GPUs the run used (0 on CPU): ``gpu_hours = wall_s * gpu_count / 3600``.
        eval_reading, eval_wall_s: the energy and wall time of PGD validation and the final evaluation.
        total_reading: everything metered (default: training plus evaluation).
    """
    model = cost_cfg if isinstance(cost_cfg, CostModel) else CostModel.from_config(cost_cfg)
    gpu_hours = wall_s * gpu_count / 3600.0
    cost = model.cost(reading.kwh, gpu_hours)
    eval_reading = eval_reading if eval_reading is not None else EnergyReading()
    total_reading = total_reading if total_reading is not None else reading + eval_reading
    eval_cost, total_cost = model.cost(eval_reading.kwh, 0.0), model.cost(total_reading.kwh, 0.0)
    hw = dict(hardware)
    names = reading.gpu_names or total_reading.gpu_names
    if names:
        hw.update(gpu_name=names[0], gpus=list(names))
    hw["gpu_count"] = gpu_count
    return {
        "train_flops": flops.train_flops, "attack_flops": flops.attack_flops, "update_flops": flops.update_flops,
        "eval_flops": flops.eval_flops, "val_flops": flops.val_flops, "final_eval_flops": flops.final_eval_flops,
        "flops_per_sample": flops.step.train,
        "paper_convention_flops": flops.paper_convention_flops, "samples_seen": flops.samples_seen,
        "eval_samples": flops.eval_samples, "flops_note": FLOPS_NOTE, "scope_note": SCOPE_NOTE,
        "gpu_hours": gpu_hours, "wall_s": wall_s, "metered_s": reading.seconds,
        "eval_wall_s": eval_wall_s, "eval_metered_s": eval_reading.seconds, "eval_energy_kwh": eval_cost.energy_kwh,
        "eval_energy_kwh_it": eval_reading.kwh, "eval_cost_usd": eval_cost.cost_usd, "eval_co2_kg": eval_cost.co2_kg,
        "total_metered_s": total_reading.seconds, "total_energy_kwh": total_cost.energy_kwh,
        "total_energy_kwh_it": total_reading.kwh, "total_cost_usd": total_cost.cost_usd,
        "total_co2_kg": total_cost.co2_kg,
        "energy_kwh": cost.energy_kwh, "energy_kwh_it": reading.kwh,
        "energy_kwh_gpu": reading.gpu_kwh, "energy_kwh_cpu": reading.cpu_kwh,
        "energy_estimated": reading.estimated, "energy_gpu_estimated": reading.gpu_estimated,
        "energy_cpu_estimated": reading.cpu_estimated,
        "energy_sources": {"gpu": total_reading.gpu_source, "cpu": total_reading.cpu_source},
        "energy_warnings": list(total_reading.warnings), "mean_power_w": reading.mean_power_w,
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
        self.phases = PhaseLedger()  # training steps and evaluation, apart (accounting/phases.py)

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

    @contextlib.contextmanager
    def final_eval(self, model) -> Iterator[None]:
        """Meter and count the final evaluation of ``model`` (rank 0 alone): its own meter, no collective, so the
        other ranks waiting meanwhile are not charged; FLOPs from the model's calls
        (:func:`~robustscale.accounting.flops.count_model_calls`)."""
        from robustscale.accounting.flops import count_model_calls

        meter = EnergyMeter(self.gpu_indices, self.sample_interval_s, count_cpu_package=self.count_cpu_package,
                            **self.meter_kwargs)
        meter.start()
        try:
            with count_model_calls(model) as calls:
                yield
        finally:
            self.phases.add("eval", meter.stop())
            self.flops.add_final_eval(calls.flops(self.flops.step), calls.samples)

    @property
    def samples_seen(self) -> int:
        return self.flops.samples_seen

    @property
    def train_flops(self) -> int:
        return self.flops.train_flops

    # -- energy

    def phase(self, name: str) -> contextlib.AbstractContextManager:
        """Charge the energy metered while the block runs to ``train`` or ``eval`` (inside :meth:`meter`)."""
        return self.phases.phase(name, self._meter)

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
            self.phases.close_segment()
            self._meter, self._synced = None, EnergyReading()

    def sync(self) -> None:
        """Gather the running segment's energy from all ranks (collective), so the next checkpoint holds it."""
        if self._meter is not None:
            self._synced = reduce_across_ranks(self._meter.read())
            self.phases.sync()

    @property
    def reading(self) -> EnergyReading:
        """Energy so far: finished segments plus the running one (all ranks as of the last :meth:`sync` under DDP;
        this rank's live reading in a single process)."""
        if self._meter is None:
            return self.energy
        if _distributed():
            return self.energy + self._synced
        return self.energy + self._meter.read()

    def phase_reading(self, name: str) -> EnergyReading:
        """Energy of one phase so far (all ranks as of the last :meth:`sync` under DDP), plus what the final
        evaluation's meter added."""
        return self.phases.reading(name, _distributed())

    # -- checkpoint and record

    def state_dict(self) -> dict[str, Any]:
        return {"flops": self.flops.state_dict(), "energy": self.reading.state_dict(),
                "phases": self.phases.state_dict(_distributed())}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.flops.load_state_dict(state["flops"])
        self.energy = EnergyReading.from_state_dict(state.get("energy") or {})
        self.phases.load_state_dict(state.get("phases") or {})

    def block(self, *, wall_s: float, eval_wall_s: float = 0.0) -> dict[str, Any]:
        """The record's block. Without phases (a caller that never split its metering) the whole metered energy
        counts as training."""
        evaluation = self.phase_reading("eval")
        total = self.reading + self.phases.done_outside_meter
        train = self.phase_reading("train") if self.phases.used else self.reading
        return accounting_block(self.flops, train, self.cost, wall_s=wall_s, hardware=self.hardware,
                                gpu_count=self.gpu_count, eval_reading=evaluation, eval_wall_s=eval_wall_s,
                                total_reading=total)


def _distributed() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
