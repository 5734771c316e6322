"""What a run will cost, before it is trained: FLOPs exactly as training counts them, then GPU-hours, kWh, $ and CO2.

FLOPs follow the training loop: an epoch is ``ceil((train_size - val_size) / batch_size)`` full global batches
(``floor`` with ``data.drop_last``)
(``val_size`` counted only when the validation points come from the training set, ``data.val_source: train``)
(synthetic data changes what is in a batch, not how many there are), ``train.max_steps`` caps the steps, and PGD
validation runs on the ``val_size`` held-out points after every ``eval.pgd_every`` epochs and after the last one.
Validation is counted as if every point were attacked (the loop skips points already misclassified, so this is an
upper bound); AutoAttack is not counted. Nothing here loads a dataset or allocates a model: counting is on the meta
device and cached, so a sweep can call :func:`plan` for every grid point.

Time comes from the GPU table (peak TFLOP/s for the run's precision x an assumed utilisation) or from a throughput
measured on this machine (``robustscale budget --measure``: :func:`robustscale.bench.measure_throughput` times the
real training step); energy assumes each GPU draws its TDP for the whole run (the host is not counted:
:func:`~robustscale.accounting.hardware.gpu_energy_kwh`); cost and CO2 use the config's ``accounting`` section. Every
assumption is returned next to the number it produced.
"""

from __future__ import annotations

import math
from typing import Any

from robustscale.accounting.cost import CostModel
from robustscale.accounting.flops import StepFlops, step_flops_for_config
from robustscale.accounting.hardware import DEFAULT_UTILIZATION, GPUSpec, check_utilization, get_gpu, gpu_energy_kwh
from robustscale.config import Config
from robustscale.datasets import dataset_info, epoch_steps
from robustscale.enums import ValSource
from robustscale.errors import ConfigError, ParameterError

__all__ = ["plan", "run_flops_plan"]


def run_flops_plan(cfg: Config, step: StepFlops | None = None) -> dict[str, Any]:
    """Optimiser steps, samples and FLOPs of a run as the training loop will count them."""
    step = step or step_flops_for_config(cfg)
    info = dataset_info(cfg.data.dataset)
    n_real = info.train_size - (cfg.data.val_size if _val_from_train(cfg) else 0)
    if n_real < 1:
        raise ConfigError(f"data.val_size: {cfg.data.val_size} leaves no training images out of {info.train_size} "
                          f"in {info.name}: lower data.val_size")
    if epoch_steps(n_real, cfg.data.batch_size, cfg.data.drop_last) < 1:
        raise ConfigError(f"data.drop_last: a global batch of {cfg.data.batch_size} above the {n_real} training "
                          "images leaves no step in an epoch: lower data.batch_size or set drop_last to false")
    batch, epochs = cfg.data.batch_size, cfg.train.epochs
    steps_per_epoch = epoch_steps(n_real, batch, cfg.data.drop_last)
    steps = epochs * steps_per_epoch
    if cfg.train.max_steps is not None:
        steps = min(steps, cfg.train.max_steps)
    epochs_run = math.ceil(steps / steps_per_epoch)
    evals = sum(1 for e in range(1, epochs_run + 1) if e % cfg.eval.pgd_every == 0 or e == epochs)
    samples = steps * batch
    eval_flops = evals * cfg.data.val_size * step.pgd_eval(cfg.eval.pgd_steps)
    train_flops = samples * step.train
    return {"steps_per_epoch": steps_per_epoch, "optimizer_steps": steps, "epochs_run": epochs_run,
            "train_samples": samples, "pgd_evaluations": evals,
            "train_flops": train_flops, "attack_flops": samples * step.attack, "update_flops": samples * step.update,
            "eval_flops": eval_flops, "total_flops": train_flops + eval_flops,
            "paper_convention_flops": samples * step.paper_convention}


def _val_from_train(cfg: Config) -> bool:
    return cfg.data.val_source is ValSource.train


def plan(cfg: Config, *, gpu: str | None = "h100", gpus: int = 1, utilization: float | None = None,
         measured_tflops: float | None = None) -> dict[str, Any]:
    """A run's FLOPs, time, energy, cost and CO2 before training, with the assumption behind each number.

    Args:
        cfg: the run's :class:`~robustscale.config.Config`.
        gpu: a name from :data:`~robustscale.accounting.hardware.GPUS` (peak TFLOP/s and TDP). None with
            ``measured_tflops`` plans for the measured device without a TDP (no energy figures).
        gpus: GPUs the run is spread over (time divides, GPU-hours do not).
        utilization: model-FLOPs utilisation of the peak (default ``DEFAULT_UTILIZATION``).
        measured_tflops: achieved TFLOP/s per GPU (:func:`robustscale.bench.measure_throughput`); replaces peak x
            utilisation.
    """
    if gpus < 1:
        raise ParameterError(f"gpus must be at least 1, got {gpus}", "gpus")
    check_utilization(utilization)
    step = step_flops_for_config(cfg)
    out: dict[str, Any] = {
        "run": {"model": cfg.model.name, "dataset": cfg.data.dataset.value, "loss": cfg.train.loss.value,
                "attack_steps": step.steps, "epochs": cfg.train.epochs, "batch_size": cfg.data.batch_size,
                "image_size": cfg.data.image_size, "precision": cfg.train.precision.value},
        "params": step.params, "flops_per_sample": step.as_dict(), **run_flops_plan(cfg, step)}
    out["assumptions"] = assumptions = _flops_assumptions(cfg, out)
    spec = get_gpu(gpu) if gpu is not None else None
    precision = cfg.train.precision
    if measured_tflops is not None:
        per_gpu = measured_tflops
        assumptions["wall_hours"] = f"measured throughput {measured_tflops:.4g} TFLOP/s per device x {gpus}"
    elif spec is not None:
        util = DEFAULT_UTILIZATION if utilization is None else utilization
        per_gpu = spec.peak(precision) * util
        assumptions["wall_hours"] = (f"{gpus} x {spec.name} at {spec.peak(precision):g} TFLOP/s peak ({precision}; "
                                     f"{spec.source}) x utilisation {util:g} = {per_gpu:.4g} TFLOP/s per GPU")
    else:
        raise ParameterError("a budget needs a gpu from the table (e.g. h100) or measured_tflops", "gpu",
                             "measured_tflops")
    out.update(gpu=spec.name if spec else None, gpus=gpus, tflops_per_gpu=per_gpu)
    out["wall_hours"] = out["total_flops"] / (per_gpu * 1e12 * gpus) / 3600.0
    out["gpu_hours"] = out["wall_hours"] * gpus
    assumptions["gpu_hours"] = f"wall hours x {gpus} {'GPUs' if spec is not None else 'devices'}"
    _energy(out, cfg, spec, assumptions)
    return out


def _flops_assumptions(cfg: Config, out: dict[str, Any]) -> dict[str, str]:
    info = dataset_info(cfg.data.dataset)
    cap = f", capped by train.max_steps={cfg.train.max_steps}" if cfg.train.max_steps is not None else ""
    return {
        "train_flops": (f"{out['optimizer_steps']} steps ({cfg.train.epochs} epochs x "
                        f"{'floor' if cfg.data.drop_last else 'ceil'}(({info.train_size} - "
                        f"{cfg.data.val_size if _val_from_train(cfg) else 0}) / {cfg.data.batch_size}) full "
                        f"batches{cap}) x {cfg.data.batch_size} "
                        f"samples x {out['flops_per_sample']['train']:.4g} FLOPs/sample (FlopCounterMode)"),
        "eval_flops": (f"PGD-{cfg.eval.pgd_steps} on {cfg.data.val_size} validation points x "
                       f"{out['pgd_evaluations']} evaluations, every point attacked (upper bound); AutoAttack "
                       "not counted"),
        "paper_convention_flops": "3 x forward FLOPs per pass the paper charges (docs/flops.md), training only",
    }


def _energy(out: dict[str, Any], cfg: Config, spec: GPUSpec | None, assumptions: dict[str, str]) -> None:
    cost_model = CostModel.from_config(cfg.accounting)
    if spec is None:
        out.update(energy_kwh_it=None, energy_kwh=None, cost_usd=None, co2_kg=None, cloud_cost_usd=None)
        assumptions["energy_kwh"] = "no GPU named: no TDP to convert hours into energy"
        return
    it = gpu_energy_kwh(out["gpu_hours"], spec.tdp_w)
    cost = cost_model.cost(it, out["gpu_hours"])
    out.update(energy_kwh_it=it, energy_kwh=cost.energy_kwh, cost_usd=cost.cost_usd, co2_kg=cost.co2_kg,
               cloud_cost_usd=cost.cloud_cost_usd, pue=cost_model.pue)
    assumptions["energy_kwh"] = (f"GPU-hours x {spec.tdp_w:g} W TDP (each GPU at its power limit; host not "
                                 f"counted) x PUE {cost_model.pue:g}")
    where = f"region {cost_model.region}: " if cost_model.region else ""
    assumptions["cost_usd"] = f"energy_kwh x ${cost_model.price_per_kwh:g}/kWh ({where}{cost_model.source})"
    assumptions["co2_kg"] = f"energy_kwh x {cost_model.carbon_g_per_kwh:g} gCO2e/kWh ({where}{cost_model.source})"
    if cost_model.gpu_hour_usd is not None:
        assumptions["cloud_cost_usd"] = f"GPU-hours x ${cost_model.gpu_hour_usd:g}/GPU-hour (accounting.gpu_hour_usd)"
