"""Accelerator specifications used to plan budgets and to compute model-FLOPs utilisation.

Peak figures are the vendors' dense (no sparsity) tensor-core numbers for the SXM / flagship variant, in TFLOP/s.
``tdp_w`` is the board power limit. These are *assumptions* for planning: every number derived from them is printed
next to the assumption that produced it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from robustscale.errors import UserError


@dataclass(frozen=True)
class GPUSpec:
    name: str
    peak_tflops: dict[str, float]  # precision -> dense peak TFLOP/s
    tdp_w: float
    source: str = ""
    aliases: tuple[str, ...] = field(default=())

    def peak(self, precision: str) -> float:
        """Peak TFLOP/s for ``precision`` (fp32 runs on TF32 tensor cores where the GPU has them)."""
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
    raise UserError(f"unknown GPU '{name}': choose one of {', '.join(GPUS)}")

# Model-FLOPs utilisation assumed when planning from peak figures (no measurement): a well-tuned bf16 WRN step
# reaches 30-50% on Hopper; 0.35 is printed next to every number it produces.
DEFAULT_UTILIZATION = 0.35
