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

The names below are imported on first use (PEP 562): the cost and hardware tables (``accounting.cost``,
``accounting.hardware``) carry no torch, so the analysis that prices compute with them (``robustscale fit``,
``extrapolate``, ``report``) does not wait for torch. ``hardware`` here is that module (the GPU table); the function
that describes this machine is :func:`robustscale.accounting.host.hardware`.
"""

from robustscale._lazy import attribute

__all__ = ["StepFlops", "RunFlops", "step_flops", "step_flops_for_config", "EnergyMeter", "EnergyReading",
           "reduce_across_ranks", "Backend", "NVMLBackend", "RAPLBackend", "EstimateBackend", "TDPEstimateBackend",
           "default_backends", "CostModel", "Cost", "Region", "REGIONS", "GPUS", "GPUSpec", "get_gpu",
           "gpu_energy_kwh", "DEFAULT_UTILIZATION", "cpu_model", "gpu_names", "PhaseLedger",
           "accounting_block", "RunAccounting", "FLOPS_NOTE", "SCOPE_NOTE"]

_LAZY = {  # public name -> the module defining it
    **dict.fromkeys(["Backend", "EstimateBackend", "NVMLBackend", "RAPLBackend", "TDPEstimateBackend",
                     "default_backends"], "robustscale.accounting.backends"),
    **dict.fromkeys(["REGIONS", "Cost", "CostModel", "Region"], "robustscale.accounting.cost"),
    **dict.fromkeys(["EnergyMeter", "EnergyReading", "reduce_across_ranks"], "robustscale.accounting.energy"),
    **dict.fromkeys(["RunFlops", "StepFlops", "step_flops", "step_flops_for_config"], "robustscale.accounting.flops"),
    **dict.fromkeys(["DEFAULT_UTILIZATION", "GPUS", "GPUSpec", "get_gpu", "gpu_energy_kwh"],
                    "robustscale.accounting.hardware"),
    **dict.fromkeys(["cpu_model", "gpu_names"], "robustscale.accounting.host"),
    "PhaseLedger": "robustscale.accounting.phases",
    **dict.fromkeys(["FLOPS_NOTE", "SCOPE_NOTE", "RunAccounting", "accounting_block"], "robustscale.accounting.run"),
}


def __getattr__(name: str):
    return attribute(__name__, _LAZY, globals(), name)
