"""Accelerator specifications used to plan budgets and to compute model-FLOPs utilisation.

Peak figures are the vendors' dense (no sparsity) tensor-core numbers for the SXM / flagship variant, in TFLOP/s.
``tdp_w`` is the board power limit. These are *assumptions* for planning: every number derived from them is printed
next to the assumption that produced it. :func:`gpu_energy_kwh` is the one conversion of GPU time into energy.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from robustscale.enums import Precision
from robustscale.errors import ParameterError, UserError, shown


@dataclass(frozen=True)
class GPUSpec:
    name: str
    peak_tflops: dict[str, float]  # precision -> dense peak TFLOP/s
    tdp_w: float
    source: str = ""
    aliases: tuple[str, ...] = field(default=())

    def peak(self, precision: Precision | str) -> float:
        """Peak TFLOP/s for ``precision`` (fp32 runs on TF32 tensor cores where the GPU has them)."""
        precision = str(precision)
        key = {"fp32": "tf32" if "tf32" in self.peak_tflops else "fp32"}.get(precision, precision)
        if key not in self.peak_tflops:  # e.g. bf16 on V100: fall back to fp16 tensor cores
            key = "fp16"
        return self.peak_tflops[key]


GPUS: dict[str, GPUSpec] = {
    g.name: g
    for g in [
        GPUSpec("h100", {"bf16": 989.4, "fp16": 989.4, "tf32": 494.7, "fp32": 66.9}, 700.0,
                "NVIDIA H100 SXM5 datasheet (dense)", ("h100-sxm", "nvidia h100")),
        GPUSpec("h200", {"bf16": 989.4, "fp16": 989.4, "tf32": 494.7, "fp32": 66.9}, 700.0,
                "NVIDIA H200 SXM datasheet (dense)", ("nvidia h200",)),
        GPUSpec("a100", {"bf16": 312.0, "fp16": 312.0, "tf32": 156.0, "fp32": 19.5}, 400.0,
                "NVIDIA A100 SXM4 datasheet (dense)", ("a100-sxm", "nvidia a100")),
        GPUSpec("v100", {"fp16": 125.0, "fp32": 15.7}, 300.0,
                "NVIDIA V100 SXM2 datasheet", ("tesla v100", "nvidia v100")),
        GPUSpec("a10g", {"bf16": 70.0, "fp16": 70.0, "tf32": 35.0, "fp32": 31.2}, 300.0,
                "NVIDIA A10G (AWS g5) datasheet (dense)", ("nvidia a10g",)),
        GPUSpec("l4", {"bf16": 121.0, "fp16": 121.0, "tf32": 60.0, "fp32": 30.3}, 72.0,
                "NVIDIA L4 datasheet (dense)", ("nvidia l4",)),
        GPUSpec("rtx4090", {"bf16": 165.2, "fp16": 165.2, "tf32": 82.6, "fp32": 82.6}, 450.0,
                "NVIDIA Ada whitepaper, FP32 accumulate", ("geforce rtx 4090",)),
        GPUSpec("t4", {"fp16": 65.0, "fp32": 8.1}, 70.0, "NVIDIA T4 datasheet", ("tesla t4",)),
    ]
}


def get_gpu(name: str) -> GPUSpec:
    """Look a GPU up by short name (``h100``) or by the name NVML reports (``NVIDIA H100 80GB HBM3``)."""
    key = name.strip().lower()
    if key in GPUS:
        return GPUS[key]
    for spec in GPUS.values():
        if any(alias in key for alias in spec.aliases) or spec.name in key.replace(" ", "").replace("-", ""):
            return spec
    raise ParameterError(f"gpu '{shown(name)}': unknown GPU; choose one of {', '.join(GPUS)}", "gpu")


# Model-FLOPs utilisation assumed when planning from peak figures (no measurement): a well-tuned bf16 WRN step
# reaches 30-50% on Hopper; 0.35 is printed next to every number it produces.
DEFAULT_UTILIZATION = 0.35
DEFAULT_GPU_TDP_W = 300.0  # a GPU missing from the table


def check_utilization(utilization: float | None) -> float | None:
    """``utilization`` as given, or a one-line :class:`ParameterError` unless it is a share of the peak in (0, 1]:
    0 divided by zero and a negative one gave negative GPU-years."""
    if utilization is not None and (isinstance(utilization, bool) or not 0 < utilization <= 1):
        raise ParameterError(f"utilization must be in (0, 1] (a share of the GPU's peak), got {utilization}",
                             "utilization")
    return utilization


def gpu_tdp_w(name: str) -> float:
    """The board power limit of a GPU by name (:func:`get_gpu`), or :data:`DEFAULT_GPU_TDP_W` for one not in the
    table."""
    try:
        return get_gpu(name).tdp_w
    except UserError:
        return DEFAULT_GPU_TDP_W


def gpu_energy_kwh(gpu_hours: float, tdp_w: float, power_fraction: float = 1.0) -> float:
    """IT energy in kWh of GPUs drawing ``power_fraction`` of their board power ``tdp_w`` for ``gpu_hours``: how
    GPU time becomes energy wherever nothing was metered. ``budget`` plans at the power limit (1.0), ``extrapolate``
    too (an upper bound), the meter's fallback at ``ASSUMED_GPU_POWER_FRACTION``. Facility energy, cost and CO2
    follow from :meth:`robustscale.accounting.cost.CostModel.cost` (x PUE, x price, x carbon intensity)."""
    return gpu_hours * tdp_w * power_fraction / 1000.0
