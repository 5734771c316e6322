"""What robustness costs: exact FLOPs, measured energy, electricity cost and CO2 of every run.

* :mod:`~robustscale.accounting.flops`: per-sample FLOPs of each loss counted on the real graph, and a run's total.
* :mod:`~robustscale.accounting.energy`: an energy meter over :mod:`~robustscale.accounting.backends` (NVML, RAPL,
  or a flagged estimate); :mod:`~robustscale.accounting.phases` splits its reading into training and evaluation.
* :mod:`~robustscale.accounting.cost`: PUE, price and grid carbon intensity; region presets.
* :mod:`~robustscale.accounting.hardware`: GPU peaks and TDPs, and the one conversion of GPU time into energy.
* :mod:`~robustscale.accounting.host`: the GPUs and CPU of this machine.
* :mod:`~robustscale.accounting.budget`: a run's FLOPs, GPU-hours, kWh, $ and CO2 before it is trained.
* :mod:`~robustscale.accounting.run`: :class:`RunAccounting`, the training loop's bundle of the above, and the
  record's accounting.
"""

from robustscale.accounting.backends import (Backend, EstimateBackend, NVMLBackend, RAPLBackend, TDPEstimateBackend,
                                             default_backends)
from robustscale.accounting.cost import REGIONS, Cost, CostModel, Region
from robustscale.accounting.energy import EnergyMeter, EnergyReading, reduce_across_ranks
from robustscale.accounting.flops import RunFlops, StepFlops, step_flops, step_flops_for_config
from robustscale.accounting.hardware import DEFAULT_UTILIZATION, GPUS, GPUSpec, get_gpu, gpu_energy_kwh
from robustscale.accounting.host import cpu_model, gpu_names, hardware
from robustscale.accounting.phases import PhaseLedger
from robustscale.accounting.run import FLOPS_NOTE, SCOPE_NOTE, RunAccounting, accounting_block

__all__ = ["StepFlops", "RunFlops", "step_flops", "step_flops_for_config", "EnergyMeter", "EnergyReading",
           "reduce_across_ranks", "Backend", "NVMLBackend", "RAPLBackend", "EstimateBackend", "TDPEstimateBackend",
           "default_backends", "CostModel", "Cost", "Region", "REGIONS", "GPUS", "GPUSpec", "get_gpu",
           "gpu_energy_kwh", "DEFAULT_UTILIZATION", "cpu_model", "gpu_names", "hardware", "PhaseLedger",
           "accounting_block", "RunAccounting", "FLOPS_NOTE", "SCOPE_NOTE"]
