"""Throughput of the real training step: images/s, achieved TFLOP/s and model-FLOPs utilisation (MFU).

:func:`bench` times :func:`robustscale.training.loop.train_step` (attack, loss, update, EMA), built as
:func:`robustscale.training.train` builds it, on random images of the dataset's shape held on the device as uint8 and
augmented there (:class:`robustscale.training.loop.BatchSource`), so no dataset files are needed. Achieved FLOP/s use
the exact count of :func:`robustscale.accounting.step_flops_for_config` (2 FLOPs per multiply-add, matmul/conv only),
not a 3x-forward estimate; MFU divides them by the device's peak for the step's precision: the datasheet figure of
:data:`robustscale.accounting.GPUS` on a GPU, a measured matmul or convolution on a CPU (or on a GPU missing from the
table).

The fast path is switched on field by field (``train.precision``, ``train.channels_last``, ``train.compile``, cuDNN
benchmark), so each switch can be measured on its own; the baseline is the same step in fp32, NCHW, eager, without
cuDNN benchmark, run in the same process.
"""

from __future__ import annotations

import datetime
import gc
import math
import os
import resource
import statistics
import time
from typing import Any, Iterable, Mapping, Optional, Sequence

import numpy as np
import timm
import torch

from robustscale._version import __version__
from robustscale.accounting.flops import step_flops_for_config
from robustscale.accounting.hardware import get_gpu
from robustscale.accounting.host import cpu_model, gpu_names
from robustscale.config import Config, apply_overrides, config_to_dict
from robustscale.data import DataBundle, MixedBatchSampler, dataset_info, step_generator
from robustscale.enums import Dataset, Loss, Precision
from robustscale.errors import ParameterError, UserError
from robustscale.training.batches import BatchSource
from robustscale.training.loop import build_step, train_step
from robustscale.training.precision import dtype
from robustscale.training.run_config import config_from_dict, load_config

__all__ = ["bench", "compare", "bench_config", "baseline_config", "StepTimer", "time_train_steps",
           "measure_throughput", "matmul_peak_tflops", "conv_peak_tflops", "measured_peak_tflops", "peak_tflops",
           "device_label", "scaling_table"]

BENCH_SEED = 0
CPU_STEP_FLOPS = 5e10  # budget --measure on a CPU: a batch of about this many FLOPs per step (a few seconds)


# ---------------------------------------------------------------------------------------------- configs


def bench_config(model: str = "wrn_28_10", *, loss: Loss | str = Loss.trades, steps: int = 10, batch: int = 512,
                 dataset: Dataset | str = Dataset.cifar10, precision: Precision | str = Precision.fp32,
                 channels_last: bool = False, compile: bool = False, overrides: Sequence[str] = ()) -> Config:
    """The :class:`Config` of a benchmarked step: EMA on (it is part of the step), the dataset's eps and image size.

    ``overrides`` are ``section.key=value`` strings applied last (``attack.eps=...``, ``model.kwargs.drop_rate=0.3``).
    """
    return load_config(None, [f"data.dataset={dataset}", f"model.name={model}", f"train.loss={loss}",
                              f"attack.steps={steps}", f"data.batch_size={batch}", f"train.precision={precision}",
                              f"train.channels_last={str(channels_last).lower()}",
                              f"train.compile={str(compile).lower()}", "train.ema=true", *overrides])


def baseline_config(cfg: Config) -> Config:
    """The plain path of public adversarial-training code: the same step in fp32, NCHW, eager."""
    return config_from_dict(apply_overrides(config_to_dict(cfg), ["train.precision=fp32",
                                                                  "train.channels_last=false",
                                                                  "train.compile=false"]))


# ---------------------------------------------------------------------------------------------- the timed step


class StepTimer:
    """One benchmarked training step: built as :func:`robustscale.training.train` builds it, timed in windows.

    Model, EMA, optimiser, schedule, scaler and data come from the same public functions ``train()`` uses (single
    process, no DDP); the data are random uint8 images of the dataset's shape, resident on the device. Each window ends
    with one device synchronisation (the step itself never syncs); the loss, accumulated on the device over every
    step, is read once, in :meth:`result`. Two timers can alternate windows, so both see the same load on a shared
    machine.
    """

    def __init__(self, cfg: Config, device: torch.device | str, *, total_steps: int = 1000,
                 cudnn_benchmark: bool = False):
        self.cfg, self.device, self.cudnn_benchmark = cfg, torch.device(device), cudnn_benchmark
        torch.manual_seed(cfg.train.seed)
        self.source = _random_source(cfg, self.device, max(4 * cfg.data.batch_size, 256))
        self.parts = build_step(cfg, self.device, max(total_steps, self.source.sampler.steps_per_epoch))
        self.parts.model.train()
        self.stats = torch.zeros(4, device=self.device)
        self.steps_done = 0
        self.windows_s: list[float] = []
        self.cpu_s = 0.0  # process CPU time over the windows (all threads, neighbours' load is not counted)
        self.peak_mem_gb = 0.0

    def _run(self, n: int) -> None:
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = self.cudnn_benchmark
        for _ in range(n):
            gen = step_generator(self.cfg.train.seed, self.steps_done, self.device)
            x, y = self.source.batch(self.steps_done, gen)
            self.stats += train_step(self.parts, x, y, self.cfg, gen)
            self.steps_done += 1
        _sync(self.device)

    def warm_up(self, steps: int) -> None:
        """Untimed steps: allocator, cuDNN autotuning and torch.compile settle here."""
        self._run(steps)

    def window(self, iters: int) -> float:
        """Time ``iters`` steps; returns the seconds and records them (and this window's peak memory)."""
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        t0, c0 = time.perf_counter(), time.process_time()
        self._run(iters)
        self.windows_s.append(time.perf_counter() - t0)
        self.cpu_s += time.process_time() - c0
        self.peak_mem_gb = max(self.peak_mem_gb, _peak_mem(self.device)[0])
        return self.windows_s[-1]

    def result(self, iters: int) -> dict[str, Any]:
        """``step_s`` (median window / iters), ``img_per_s``, ``window_s``, ``loss`` (mean over every step),
        ``peak_mem_gb`` and ``peak_mem_source``; on CPU ``cpu_share``, the share of ``threads x wall time`` the
        windows actually ran on a core (well under 1: other processes took the rest, and the figures are low)."""
        loss_sum, _, _, n = self.stats.tolist()
        step_s = statistics.median(self.windows_s) / iters
        share = self.cpu_s / (sum(self.windows_s) * torch.get_num_threads()) if self.device.type == "cpu" else None
        return {"step_s": step_s, "img_per_s": self.cfg.data.batch_size / step_s, "window_s": list(self.windows_s),
                "loss": loss_sum / max(n, 1.0), "peak_mem_gb": self.peak_mem_gb,
                "peak_mem_source": _peak_mem(self.device)[1], "cpu_share": share}


def _random_source(cfg: Config, device: torch.device, n_images: int):
    """A :class:`BatchSource` over random uint8 images of the dataset's shape, resident on ``device``."""
    info = dataset_info(cfg.data.dataset)
    rng = np.random.default_rng(BENCH_SEED)
    size = cfg.data.image_size
    x = rng.integers(0, 256, (n_images, size, size, info.channels), dtype=np.uint8)
    y = rng.integers(0, info.num_classes, n_images, dtype=np.int64)
    data = DataBundle(info, x, y, x[:0], y[:0])
    sampler = MixedBatchSampler(n_images, 0, cfg.data.batch_size, 0.0, cfg.train.seed)
    return BatchSource(data, sampler, cfg, device)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _peak_mem(device: torch.device) -> tuple[float, str]:
    """Peak memory in GB (1e9 bytes) and what was measured."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 1e9, "torch.cuda.max_memory_allocated"
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9, "process max RSS (CPU, whole process)"


def time_train_steps(cfg: Config, device: torch.device | str, *, iters: int = 10, warmup: int = 3,
                     repeats: int = 1, cudnn_benchmark: bool = False) -> dict[str, Any]:
    """Warm up, then time ``repeats`` windows of ``iters`` real training steps (:class:`StepTimer`).

    Returns:
        :meth:`StepTimer.result` plus ``trained_model`` (the module the steps updated).
    """
    timer = StepTimer(cfg, device, total_steps=warmup + iters * repeats, cudnn_benchmark=cudnn_benchmark)
    timer.warm_up(warmup)
    for _ in range(repeats):
        timer.window(iters)
    return {**timer.result(iters), "trained_model": timer.parts.model}


def measure_throughput(cfg: Config, *, device: str | None = None, batch_size: int | None = None, iters: int = 2,
                       min_seconds: float = 2.0) -> dict[str, Any]:
    """Achieved TFLOP/s of ``cfg``'s real training step on this machine: what ``robustscale budget --measure``
    plans with. :class:`StepTimer` builds the step as ``train()`` does (attack, loss, update, EMA; random images of
    the dataset's shape, no data loading) and times it after one untimed step, at least ``iters`` steps and
    ``min_seconds``.

    The batch is the run's (at most 128) on a GPU, and on a CPU as many samples as fit in about ``CPU_STEP_FLOPS``
    per step. Returns ``tflops`` (per device), ``device``, ``batch_size``, ``seconds`` and ``flops`` per step,
    ``precision`` and ``steps_timed``.
    """
    dev = _resolve_device(device)
    step = step_flops_for_config(cfg)
    cap = 128 if dev.type == "cuda" else max(1, int(CPU_STEP_FLOPS // max(step.train, 1)))
    batch = batch_size or max(1, min(cfg.data.batch_size, cap))
    sized = config_from_dict(apply_overrides(config_to_dict(cfg), [f"data.batch_size={batch}"]))
    timer = StepTimer(sized, dev, total_steps=1 + iters, cudnn_benchmark=dev.type == "cuda")
    timer.warm_up(1)
    while timer.steps_done - 1 < iters or sum(timer.windows_s) < min_seconds:
        timer.window(1)
    seconds = sum(timer.windows_s) / len(timer.windows_s)
    flops = batch * step.train
    return {"tflops": flops / seconds / 1e12, "device": device_label(dev), "batch_size": batch, "seconds": seconds,
            "flops": flops, "precision": cfg.train.precision.value, "steps_timed": len(timer.windows_s)}


# ---------------------------------------------------------------------------------------------- peaks, device


def _best_tflops(fn, flops: int, device: torch.device, reps: int) -> float:
    best = math.inf
    for _ in range(reps + 2):  # the first two are warm-up (allocation, BLAS / oneDNN kernel choice)
        _sync(device)
        t0 = time.perf_counter()
        fn()
        _sync(device)
        best = min(best, time.perf_counter() - t0)
    return flops / best / 1e12


def matmul_peak_tflops(device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32, *, size: int = 2048,
                       reps: int = 5) -> float:
    """Measured TFLOP/s of the best of ``reps`` ``size`` x ``size`` matmuls, with the current thread count."""
    device = torch.device(device)
    a = torch.randn(size, size, device=device).to(dtype)
    b = torch.randn(size, size, device=device).to(dtype)
    return _best_tflops(lambda: a @ b, 2 * size ** 3, device, reps)


def conv_peak_tflops(device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32, *,
                     reps: int = 5) -> float:
    """Measured TFLOP/s of a WideResNet-sized 3x3 convolution (32 x 160 x 32 x 32, channels_last), best of ``reps``.

    On CPUs whose BLAS takes a slow path (MKL's fp32 GEMM runs AVX2 code on AMD), oneDNN's convolution is the
    fastest dense op the step has: a GEMM-only "peak" would let the step's MFU exceed 100%.
    """
    device = torch.device(device)
    x = torch.randn(32, 160, 32, 32, device=device).to(dtype).contiguous(memory_format=torch.channels_last)
    w = torch.randn(160, 160, 3, 3, device=device).to(dtype).contiguous(memory_format=torch.channels_last)
    return _best_tflops(lambda: torch.nn.functional.conv2d(x, w, padding=1), 2 * 32 * 32 * 32 * 160 * 160 * 9,
                        device, reps)


def measured_peak_tflops(device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32, *,
                         reps: int = 5) -> float:
    """The device's measured peak for MFU: the faster of a large matmul and a large 3x3 convolution in ``dtype``,
    with the current thread count (the fastest dense ops the step's kernels could run at).

    Not cached: on a shared machine the neighbours' load changes, so :func:`compare` measures it between its windows
    and keeps the best seen.
    """
    return max(matmul_peak_tflops(device, dtype, reps=reps), conv_peak_tflops(device, dtype, reps=reps))


def _table_peak(device: torch.device, precision: Precision) -> Optional[tuple[float, str]]:
    """The datasheet peak of a GPU in :data:`robustscale.accounting.GPUS`, or None (CPU, unknown GPU)."""
    if device.type != "cuda":
        return None
    try:
        spec = get_gpu(device_label(device))
    except UserError:
        return None
    return spec.peak(precision), f"{spec.source} ({precision}; fp32 = TF32 where the GPU has it)"


def _measured_source(precision: Precision) -> str:
    return (f"measured: best {dtype(precision)} 2048^2 matmul or 3x3 160-channel conv seen during the "
            f"bench, {torch.get_num_threads()} threads")


def peak_tflops(device: torch.device | str, precision: Precision | str) -> tuple[float, str]:
    """``(peak TFLOP/s, where it comes from)`` for ``precision``: the GPU table, else :func:`measured_peak_tflops`."""
    device, precision = torch.device(device), Precision(precision)
    table = _table_peak(device, precision)
    if table is not None:
        return table
    return measured_peak_tflops(device, dtype(precision)), _measured_source(precision)


def device_label(device: torch.device | str) -> str:
    """``"NVIDIA H100 80GB HBM3"`` or ``"cpu (AMD EPYC, 2 threads)"``."""
    device = torch.device(device)
    if device.type == "cuda":
        return gpu_names([device.index if device.index is not None else torch.cuda.current_device()])[0]
    return f"cpu ({cpu_model()}, {torch.get_num_threads()} threads)"


def _resolve_device(device: Optional[str]) -> torch.device:
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise ParameterError(f"device '{device}' is not a torch device: use cpu or cuda (cuda:N)", "device") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ParameterError("device cuda: no CUDA GPU is visible here: use cpu", "device")
    if dev.type not in ("cpu", "cuda"):
        raise ParameterError(f"device '{device}': only cpu and cuda are benchmarked", "device")
    return dev


# ---------------------------------------------------------------------------------------------- bench


def compare(cfgs: Mapping[str, Config], *, iters: int = 10, warmup: int = 3, repeats: int = 1,
            device: Optional[str] = None, cudnn_benchmark: Mapping[str, bool] | bool = True) -> dict[str, dict]:
    """Time several variants of a step in one process, their windows alternating, so a burst of load on a shared
    machine hits them alike. Returns, per name, ``img_per_s``, ``step_s``, ``tflops``, ``mfu``, ``peak_tflops``,
    ``peak_mem_gb`` and their sources.

    Where the peak is measured (CPU, a GPU missing from the table), :func:`measured_peak_tflops` runs after every
    round of windows and the best seen is the peak, so one slow measurement never inflates the MFU. With several
    variants, the others' weights, EMA and optimiser state stay resident while one runs (counted in a GPU's
    ``peak_mem_gb``).
    """
    for name, value, least in (("iters", iters, 1), ("warmup", warmup, 0), ("repeats", repeats, 1)):
        if value < least:
            raise ParameterError(f"{name} must be at least {least}, got {value}", name)
    dev = _resolve_device(device)
    if isinstance(cudnn_benchmark, bool):
        cudnn_benchmark = {name: cudnn_benchmark for name in cfgs}
    timers = {name: StepTimer(cfg, dev, total_steps=warmup + iters * repeats, cudnn_benchmark=cudnn_benchmark[name])
              for name, cfg in cfgs.items()}
    for timer in timers.values():
        timer.warm_up(warmup)
    precisions = {cfg.train.precision for cfg in cfgs.values()}
    measured = {p: 0.0 for p in precisions if _table_peak(dev, p) is None}
    for _ in range(repeats):
        for timer in timers.values():
            timer.window(iters)
        for p in measured:
            measured[p] = max(measured[p], measured_peak_tflops(dev, dtype(p), reps=3))
    return {name: _figures(timer, iters, dev, measured) for name, timer in timers.items()}


def _figures(timer: StepTimer, iters: int, dev: torch.device, measured: Mapping[Precision, float]) -> dict[str, Any]:
    cfg, res = timer.cfg, timer.result(iters)
    if not math.isfinite(res["loss"]):
        raise UserError(f"the benchmarked step's loss is {res['loss']} ({cfg.train.precision}): lower "
                        "train.lr or benchmark in fp32")
    precision = cfg.train.precision
    peak, source = _table_peak(dev, precision) or (measured[precision], _measured_source(precision))
    flops_per_step = step_flops_for_config(cfg).train * cfg.data.batch_size
    tflops = flops_per_step / res["step_s"] / 1e12
    return {"img_per_s": res["img_per_s"], "step_s": res["step_s"], "window_s": res["window_s"], "tflops": tflops,
            "mfu": tflops / peak, "peak_tflops": peak, "peak_source": source, "flops_per_step": flops_per_step,
            "peak_mem_gb": res["peak_mem_gb"], "peak_mem_source": res["peak_mem_source"], "train_loss": res["loss"],
            "cpu_share": res["cpu_share"]}


def bench(cfg: Config, *, iters: int = 10, warmup: int = 3, repeats: int = 1, baseline: bool = False,
          cudnn_benchmark: bool = True, device: Optional[str] = None, threads: Optional[int] = None) -> dict[str, Any]:
    """Time ``cfg``'s training step and report throughput, exact FLOP/s and MFU (and the plain path's, if asked).

    Args:
        cfg: from :func:`bench_config` (or any config: its model, loss, attack steps, batch and fast-path switches).
        iters, warmup, repeats: timed steps per window, untimed steps before, windows (the median is reported).
        baseline: also time :func:`baseline_config` (fp32, NCHW, eager, no cuDNN benchmark) in this process, its
            windows alternating with the fast path's (:func:`compare`), and report ``baseline_*`` and ``speedup``.
        cudnn_benchmark: ``torch.backends.cudnn.benchmark`` for the fast path (CUDA only).
        device: ``cpu``, ``cuda`` or ``cuda:N``; default the GPU when there is one.
        threads: CPU threads (``torch.set_num_threads``), also used for the measured CPU peak.

    Returns:
        ``img_per_s``, ``tflops`` (achieved), ``mfu``, ``peak_mem_gb``, ``device`` and the setup (model, loss,
        steps, batch, precision, switches, FLOPs, versions, date); ``baseline_*`` and ``speedup`` with ``baseline``.
    """
    if threads is not None:
        if threads < 1:
            raise ParameterError(f"threads must be at least 1, got {threads}", "threads")
        torch.set_num_threads(threads)
    cfgs = {"": cfg, "baseline_": baseline_config(cfg)} if baseline else {"": cfg}
    res = compare(cfgs, iters=iters, warmup=warmup, repeats=repeats, device=device,
                  cudnn_benchmark={"": cudnn_benchmark, "baseline_": False})
    dev = _resolve_device(device)
    out = _setup(cfg, dev, cudnn_benchmark, dict(iters=iters, warmup=warmup, repeats=repeats))
    out["flops"] = res[""]["flops_per_step"] * iters * repeats  # the FLOPs of the timed steps
    for prefix, figures in res.items():
        out.update({f"{prefix}{k}": v for k, v in figures.items() if not (prefix and k == "flops_per_step")})
    if baseline:
        out["speedup"] = out["img_per_s"] / out["baseline_img_per_s"]
    return out


def _setup(cfg: Config, dev: torch.device, cudnn_benchmark: bool, timing: dict) -> dict:
    return {"model": cfg.model.name, "loss": cfg.train.loss.value, "steps": cfg.attack.steps,
            "batch": cfg.data.batch_size, "dataset": cfg.data.dataset.value, "image_size": cfg.data.image_size,
            "precision": cfg.train.precision.value, "channels_last": cfg.train.channels_last,
            "compile": cfg.train.compile, "cudnn_benchmark": cudnn_benchmark and dev.type == "cuda",
            "ema": cfg.train.ema, **timing, "device": device_label(dev), "threads": torch.get_num_threads(),
            "load_avg_1m": os.getloadavg()[0],  # other processes' load: CPU figures on a shared machine move with it
            "versions": {"torch": torch.__version__, "timm": timm.__version__, "robustscale": __version__,
                         "cuda": torch.version.cuda if dev.type == "cuda" else None},
            "date": datetime.date.today().isoformat()}


# ---------------------------------------------------------------------------------------------- scaling table


def scaling_table(models: Iterable[str], attack_steps: Iterable[int], *, loss: Loss | str = Loss.trades,
                  batch: int = 512, dataset: Dataset | str = Dataset.cifar10,
                  precision: Precision | str = Precision.bf16, channels_last: bool = True,
                  compile: bool = False, iters: int = 5, warmup: int = 2, repeats: int = 1, interleave: bool = False,
                  device: Optional[str] = None, overrides: Sequence[str] = ()) -> list[dict[str, Any]]:
    """Step time and achieved TFLOP/s over models x attack steps: does cost grow as FLOPs grow?

    Each row adds ``ps_per_flop`` (picoseconds of step time per FLOP) and ``rel_time_per_flop`` (that, over the
    first row's): flat means the step costs what its FLOPs say; rising means time the FLOPs miss.

    Args:
        interleave: time every cell in one :func:`compare` (windows alternating, all models resident), so load on a
            shared CPU hits every cell alike. Otherwise cells run one after another, and a model that does not fit in
            GPU memory at ``batch`` is measured at the largest halving that fits (its rows say which batch).
    """
    options = dict(loss=loss, dataset=dataset, precision=precision, channels_last=channels_last, compile=compile,
                   overrides=overrides)
    steps_list = list(attack_steps)
    cells = [(name, k) for name in models for k in steps_list]
    if interleave:
        cfgs = {cell: bench_config(cell[0], steps=cell[1], batch=batch, **options) for cell in cells}
        res = compare(cfgs, iters=iters, warmup=warmup, repeats=repeats, device=device)
        measured = [(cell, res[cell], batch) for cell in cells]
    else:
        measured, fits = [], {}
        for name, k in cells:
            r, fits[name] = _fitting_bench(name, k, fits.get(name, batch), iters=iters, warmup=warmup,
                                           repeats=repeats, device=device, **options)
            measured.append(((name, k), r, fits[name]))
    rows = [{"model": name, "steps": k, "batch": b, "step_s": r["step_s"], "flops_per_step": r["flops_per_step"],
             "tflops": r["tflops"], "mfu": r["mfu"], "img_per_s": r["img_per_s"], "peak_mem_gb": r["peak_mem_gb"],
             "ps_per_flop": r["step_s"] / r["flops_per_step"] * 1e12, "cpu_share": r["cpu_share"]}
            for (name, k), r, b in measured]
    for row in rows:
        row["rel_time_per_flop"] = row["ps_per_flop"] / rows[0]["ps_per_flop"]
    return rows


def _fitting_bench(name: str, steps: int, batch: int, *, iters: int, warmup: int, repeats: int,
                   device: Optional[str], **options) -> tuple[dict[str, Any], int]:
    """:func:`bench` at ``batch``, halved after each CUDA out-of-memory error; returns the figures and the batch."""
    while True:
        cfg = bench_config(name, steps=steps, batch=batch, **options)
        try:
            return bench(cfg, iters=iters, warmup=warmup, repeats=repeats, device=device), batch
        except torch.cuda.OutOfMemoryError:
            if batch == 1:
                raise
        gc.collect()
        torch.cuda.empty_cache()
        batch //= 2
