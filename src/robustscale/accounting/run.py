"""A training run's accounting: FLOPs counted, energy metered (training apart from evaluation), cost and CO2, as
the record's :class:`~robustscale.store.record.Accounting` and :class:`~robustscale.store.record.Hardware`.

:class:`RunAccounting` is what the training loop holds and checkpoints; :func:`accounting_block` turns FLOP totals and
energy readings into the record's accounting.
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator, Mapping

import torch
import torch.distributed as dist

from robustscale.accounting.cost import CostModel
from robustscale.accounting.energy import EnergyMeter, EnergyReading, reduce_across_ranks
from robustscale.accounting.flops import RunFlops, StepFlops, count_model_calls, step_flops_for_config
from robustscale.accounting.host import device_gpus, gpu_names, hardware
from robustscale.accounting.phases import PhaseLedger
from robustscale.config import AccountingConfig, Config
from robustscale.store.record import Accounting, Hardware

__all__ = ["RunAccounting", "accounting_block", "FLOPS_NOTE", "SCOPE_NOTE"]

FLOPS_NOTE = ("FlopCounterMode counts (matmul/conv, 2 FLOPs per multiply-add) x samples processed; eval_flops: PGD "
              "validation (val_flops) plus the final evaluation (final_eval_flops: the best model's calls, a forward "
              "F, a forward with input gradient 2F); paper_convention_flops: 3 x forward FLOPs per pass the paper's "
              "code ran (docs/flops.md)")
SCOPE_NOTE = ("energy_kwh, cost_usd, co2_kg, metered_s: the training steps that wall_s and train_flops cover; eval_*: "
              "PGD validation and the final evaluation; total_*: everything metered (training, evaluation, "
              "checkpoints, setup)")


def accounting_block(flops: RunFlops, reading: EnergyReading, cost: CostModel | AccountingConfig, *, wall_s: float,
                     gpu_count: int, eval_reading: EnergyReading | None = None, eval_wall_s: float = 0.0,
                     total_reading: EnergyReading | None = None) -> Accounting:
    """The record's :class:`~robustscale.store.record.Accounting`.

    Time, FLOPs and energy have one scope each (:data:`SCOPE_NOTE`): ``wall_s``, ``train_flops`` and ``energy_kwh``
    all cover the training steps, as the paper's code metered only its training epochs (``src/engine.py``); the
    evaluation's share and the whole bill sit beside them under ``eval_*`` and ``total_*``.

    Args:
        flops: the run's FLOP totals.
        reading: the energy of the training steps (all ranks, all resume segments), IT energy before PUE.
        cost: a :class:`CostModel`, or the config's :class:`~robustscale.config.AccountingConfig`.
        wall_s: training wall time in seconds.
        gpu_count: GPUs the run used (0 on CPU): ``gpu_hours = wall_s * gpu_count / 3600``.
        eval_reading, eval_wall_s: the energy and wall time of PGD validation and the final evaluation.
        total_reading: everything metered (default: training plus evaluation).
    """
    model = cost if isinstance(cost, CostModel) else CostModel.from_config(cost)
    gpu_hours = wall_s * gpu_count / 3600.0
    train = model.cost(reading.kwh, gpu_hours)
    eval_reading = eval_reading if eval_reading is not None else EnergyReading()
    total_reading = total_reading if total_reading is not None else reading + eval_reading
    evaluation, total = model.cost(eval_reading.kwh, 0.0), model.cost(total_reading.kwh, 0.0)
    return Accounting(
        train_flops=flops.train_flops, attack_flops=flops.attack_flops, update_flops=flops.update_flops,
        eval_flops=flops.eval_flops, val_flops=flops.val_flops, final_eval_flops=flops.final_eval_flops,
        flops_per_sample=flops.step.train, paper_convention_flops=flops.paper_convention_flops,
        samples_seen=flops.samples_seen, eval_samples=flops.eval_samples, flops_note=FLOPS_NOTE,
        scope_note=SCOPE_NOTE, gpu_hours=gpu_hours, wall_s=wall_s, metered_s=reading.seconds,
        eval_wall_s=eval_wall_s, eval_metered_s=eval_reading.seconds, eval_energy_kwh=evaluation.energy_kwh,
        eval_energy_kwh_it=eval_reading.kwh, eval_cost_usd=evaluation.cost_usd, eval_co2_kg=evaluation.co2_kg,
        total_metered_s=total_reading.seconds, total_energy_kwh=total.energy_kwh,
        total_energy_kwh_it=total_reading.kwh, total_cost_usd=total.cost_usd, total_co2_kg=total.co2_kg,
        energy_kwh=train.energy_kwh, energy_kwh_it=reading.kwh, energy_kwh_gpu=reading.gpu_kwh,
        energy_kwh_cpu=reading.cpu_kwh, energy_estimated=reading.estimated,
        energy_gpu_estimated=reading.gpu_estimated, energy_cpu_estimated=reading.cpu_estimated,
        energy_sources={"gpu": total_reading.gpu_source, "cpu": total_reading.cpu_source},
        energy_warnings=list(total_reading.warnings), mean_power_w=reading.mean_power_w, pue=model.pue,
        price_per_kwh=model.price_per_kwh, carbon_g_per_kwh=model.carbon_g_per_kwh, region=model.region,
        cost_source=model.source, cost_usd=train.cost_usd, co2_kg=train.co2_kg, gpu_hour_usd=model.gpu_hour_usd,
        cloud_cost_usd=train.cloud_cost_usd)


class RunAccounting:
    """FLOPs, energy and cost of one training run: what the training loop holds and checkpoints.

    ``meter()`` wraps the training; ``add_train(global_batch)`` once per optimiser step; ``add_eval`` after each
    PGD validation; ``sync()`` on *every* rank before rank 0 saves a checkpoint (it gathers the ranks' energy so the
    checkpoint holds all of it); ``state_dict``/``load_state_dict`` through the checkpoint; ``block(wall_s=...)``
    and ``hardware()`` for the record. Energy after the last checkpoint of a killed run is lost with the steps it
    paid for; the resumed run meters those steps again, so, like FLOPs, each step is counted once.
    """

    def __init__(self, step: StepFlops, cost: CostModel, *, gpu_indices: list[int] | None = None,
                 gpu_count: int = 0, count_cpu_package: bool = True, sample_interval_s: float = 1.0,
                 world_size: int = 1, nodes: int = 1):
        self.flops = RunFlops(step)
        self.cost = cost
        self.gpu_indices = gpu_indices if gpu_indices is not None else []
        self.gpu_count = gpu_count
        self.world_size, self.nodes = world_size, nodes
        self.count_cpu_package = count_cpu_package
        self.sample_interval_s = sample_interval_s
        self.energy = EnergyReading()  # every finished segment, all ranks (and what a checkpoint restored)
        self._synced = EnergyReading()  # the running segment, all ranks, as of the last sync()
        self._meter: EnergyMeter | None = None
        self.phases = PhaseLedger()  # training steps and evaluation, apart (accounting/phases.py)

    @classmethod
    def from_config(cls, cfg: Config, world_size: int = 1, local_rank: int = 0,
                    device: torch.device | str | None = None, nodes: int = 1) -> "RunAccounting":
        """For a :class:`~robustscale.config.Config`, on this rank (of ``world_size``, over ``nodes`` machines) and
        its ``device``. Each rank meters its own GPU; the CPU package (RAPL) is read by local rank 0 of each node
        only, so a node's package is counted once however many ranks share it."""
        indices = device_gpus(device)
        return cls(step_flops_for_config(cfg), CostModel.from_config(cfg.accounting), gpu_indices=indices,
                   gpu_count=world_size if indices else 0, count_cpu_package=local_rank == 0,
                   sample_interval_s=cfg.accounting.power_sample_s, world_size=world_size, nodes=nodes)

    # -- FLOPs

    def add_train(self, n_samples: int) -> None:
        self.flops.add_train(n_samples)

    def add_eval(self, n_samples: int, pgd_steps: int, n_attacked: int | None = None) -> None:
        """PGD-``pgd_steps`` validation of ``n_samples`` points (over all ranks), ``n_attacked`` of them attacked
        (those classified correctly; default all, an upper bound)."""
        self.flops.add_pgd_eval(n_samples, pgd_steps, n_attacked)

    @contextlib.contextmanager
    def final_eval(self, model) -> Iterator[None]:
        """Meter and count the final evaluation of ``model``, which every rank runs on its share of the points (a
        collective: every rank enters it): each rank meters its own devices and counts the model's calls
        (:func:`~robustscale.accounting.flops.count_model_calls`), and both are summed over the ranks when the block
        ends, so the evaluation is counted once for the work done, whatever the world size. Its own meter: the
        training meter has stopped."""
        meter = self._new_meter()
        meter.start()
        try:
            with count_model_calls(model) as calls:
                yield
        except BaseException:  # no collective on the way out of a failure: the other ranks may be gone
            meter.stop()
            raise
        self.phases.add("eval", reduce_across_ranks(meter.stop()))
        flops, samples = _sum_over_ranks(calls.flops(self.flops.step), calls.samples)
        self.flops.add_final_eval(flops, samples)

    @property
    def samples_seen(self) -> int:
        return self.flops.samples_seen

    @property
    def train_flops(self) -> int:
        return self.flops.train_flops

    # -- energy

    def _new_meter(self) -> EnergyMeter:
        return EnergyMeter(self.gpu_indices, self.sample_interval_s, count_cpu_package=self.count_cpu_package)

    def phase(self, name: str) -> contextlib.AbstractContextManager:
        """Charge the energy metered while the block runs to ``train`` or ``eval`` (inside :meth:`meter`)."""
        return self.phases.phase(name, self._meter)

    @contextlib.contextmanager
    def meter(self) -> Iterator[EnergyMeter]:
        """Meter the energy of the block on every rank; on exit the ranks' readings are summed (a collective)."""
        self._meter = self._new_meter()
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
    def train_energy_kwh(self) -> float:
        """The training steps' energy so far, after PUE: the scope of the record's ``energy_kwh``, for the per-epoch
        log (all ranks as of the last :meth:`sync` under DDP)."""
        reading = self.phase_reading("train") if self.phases.used else self.reading
        return self.cost.pue * reading.kwh

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

    def block(self, *, wall_s: float, eval_wall_s: float = 0.0) -> Accounting:
        """The record's accounting. Without phases (a caller that never split its metering) the whole metered
        energy counts as training."""
        evaluation = self.phase_reading("eval")
        total = self.reading + self.phases.done_outside_meter
        train = self.phase_reading("train") if self.phases.used else self.reading
        return accounting_block(self.flops, train, self.cost, wall_s=wall_s, gpu_count=self.gpu_count,
                                eval_reading=evaluation, eval_wall_s=eval_wall_s, total_reading=total)

    def hardware(self) -> Hardware:
        """The record's hardware: the GPUs the run used (every rank's metered name in rank order, else this rank's),
        the ranks and nodes, and the host."""
        names = (self.reading + self.phases.done_outside_meter).gpu_names or gpu_names(self.gpu_indices)
        return hardware(names, self.gpu_count, world_size=self.world_size, nodes=self.nodes)


def _sum_over_ranks(*counts: int) -> list[int]:
    """Integer counts summed over the ranks (a collective; the counts themselves in a single process)."""
    if not _distributed():
        return list(counts)
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, list(counts))
    return [sum(column) for column in zip(*gathered)]


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
