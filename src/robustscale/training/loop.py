"""One config in, one run record out: adversarial training as the paper's grid needs it.

``train(cfg, run_dir)`` trains with PGD-AT or TRADES (or standard training), mixes synthetic data into every batch,
keeps an EMA of the weights, picks the best checkpoint by PGD-40 on the held-out validation subset, evaluates it
with AutoAttack, and accounts for every FLOP and joule. It checkpoints every epoch and resumes exactly: the batch,
augmentation and attack randomness of step ``t`` are functions of ``(seed, t)`` and everything else is restored.
"""

from __future__ import annotations

import json
import logging
import math
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from robustscale.config import Config, config_to_dict, config_to_yaml
from robustscale.errors import UserError, shown
from robustscale.data import DataBundle, MixedBatchSampler, load_train_data, random_crop_flip, step_generator
from robustscale.models import create_from_config, save_model
from robustscale.store.atomic import append_line, keep_lines, remove_stale_temp_files, write_text
from robustscale.store.record import Status, mark_failed_if_running, new_record, read_record, write_record
from robustscale.training import checkpoint as ckpt
from robustscale.training.distributed import (DistInfo, all_reduce_sum, barrier, cleanup, device_for,
                                                  init_distributed, is_main_process)
from robustscale.training.ema import ModelEMA
from robustscale.training.losses import compute_loss
from robustscale.training.optim import make_optimizer, make_scheduler
from robustscale.accounting import RunAccounting

log = logging.getLogger(__name__)

LOG_EVERY = 20  # optimiser steps between host syncs (progress bar, divergence check)


@dataclass
class Progress:
    """Counters that survive a resume (saved in every checkpoint)."""

    epoch: int = 0  # epochs completed
    step: int = 0  # optimiser steps completed (global, over the whole run)
    best_metric: float = -1.0
    best_epoch: int = -1
    wall_s: float = 0.0  # the training steps only (what train_flops and energy_kwh cover)
    eval_s: float = 0.0  # PGD validation
    history: list[dict[str, Any]] = field(default_factory=list)


class Divergence(RuntimeError):
    pass


# ---------------------------------------------------------------------------------------------- the step


@dataclass
class StepParts:
    """Everything a training step updates, built once by :func:`build_step` (for ``train()`` and the benchmark)."""

    model: nn.Module  # the weights: checkpointed, averaged into the EMA, evaluated
    train_model: nn.Module  # what the update runs through: ``model``, DDP-wrapped and/or compiled
    attack_model: nn.Module  # what the attack runs through: ``model`` (no DDP: no gradient sync), compiled or not
    ema: ModelEMA | None
    optimizer: torch.optim.Optimizer
    scheduler: Any
    scaler: torch.amp.GradScaler


def train_step(s: StepParts, x, y, cfg: Config, gen, soft=None) -> torch.Tensor:
    """Attack, loss, update, EMA. Returns device-side stats [loss_sum, clean_correct, adv_correct, n] (no sync).

    ``y`` are hard labels; ``soft`` the mixed targets of a CutMix batch (:meth:`BatchSource.training_batch`)."""
    with _autocast(cfg, x.device):
        out = compute_loss(cfg.train.loss.value, s.train_model, x, y, cfg, attack_model=s.attack_model,
                           generator=gen, soft=soft)
    s.optimizer.zero_grad(set_to_none=True)
    s.scaler.scale(out.loss).backward()
    if cfg.train.grad_clip:
        s.scaler.unscale_(s.optimizer)
        nn.utils.clip_grad_norm_(s.model.parameters(), cfg.train.grad_clip)
    s.scaler.step(s.optimizer)
    s.scaler.update()
    s.scheduler.step()
    if s.ema is not None:
        s.ema.update(s.model)
    with torch.no_grad():
        n = torch.tensor(float(len(y)), device=x.device)
        clean = (out.clean_logits.argmax(1) == y).sum() if out.clean_logits is not None else torch.zeros_like(n)
        adv = (out.adv_logits.argmax(1) == y).sum() if out.adv_logits is not None else torch.zeros_like(n)
        return torch.stack([out.loss.detach().float() * n, clean.float(), adv.float(), n])


def build_step(cfg: Config, device: torch.device, steps_per_epoch: int, dist: DistInfo | None = None) -> StepParts:
    """Model (channels-last, SyncBN), EMA, optimiser, schedule and scaler from the config; then the two views the
    step runs through: DDP for the update only (the attack needs no gradient sync), ``torch.compile`` for both."""
    model = create_from_config(cfg).to(device)
    if cfg.train.channels_last:
        model = model.to(memory_format=torch.channels_last)
    distributed = dist is not None and dist.enabled
    if distributed and cfg.train.sync_bn:
        if device.type != "cuda":
            raise UserError("train.sync_bn needs GPUs (PyTorch's SyncBatchNorm has no CPU kernel): set it to false")
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    ema = ModelEMA(model, cfg.train.ema_decay, warmup=cfg.train.ema_warmup) if cfg.train.ema else None
    optimizer = make_optimizer(model, cfg.train, cfg.data.batch_size)
    scheduler = make_scheduler(optimizer, cfg.train, steps_per_epoch, cfg.data.batch_size)
    scaler = torch.amp.GradScaler(device.type, enabled=cfg.train.precision.value == "fp16")
    train_model = attack_model = model
    if distributed:
        train_model = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda"
                                                          else None)
    if cfg.train.compile:
        train_model, attack_model = torch.compile(train_model), torch.compile(model)
    return StepParts(model, train_model, attack_model, ema, optimizer, scheduler, scaler)


def _autocast(cfg: Config, device: torch.device):
    if cfg.train.precision.value == "fp32":
        return nullcontext()
    dtype = torch.bfloat16 if cfg.train.precision.value == "bf16" else torch.float16
    return torch.autocast(device.type, dtype=dtype)


# ---------------------------------------------------------------------------------------------- data on device


class BatchSource:
    """The real training set resident on the device (uint8), synthetic images memory-mapped on the host."""

    def __init__(self, data: DataBundle, sampler: MixedBatchSampler, cfg: Config, device: torch.device):
        self.data, self.sampler, self.cfg, self.device = data, sampler, cfg, device
        self.real_x = torch.as_tensor(data.train_x).to(device)
        self.real_y = torch.as_tensor(data.train_y).to(device)

    def batch(self, step: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """This rank's slice of global batch ``step``: real then synthetic images, augmented."""
        return self._assemble(step, gen)[:2]

    def training_batch(self, step: int, gen: torch.Generator):
        """:meth:`batch` plus CutMix when ``train.cutmix > 0``: ``(x, hard labels, soft targets or None)``.

        The real and synthetic parts are mixed apart, as the paper's two data loaders each mixed their own batch;
        the hard labels are the arg-max of the mixed targets (the label the paper's PGD-AT attack used)."""
        x, y, n_real = self._assemble(step, gen)
        if not self.cfg.train.cutmix:
            return x, y, None
        from robustscale.data.cutmix import cutmix, cutmix_rng

        rng, xs, softs = cutmix_rng(self.cfg.train.seed, step), [], []
        for part in (slice(0, n_real), slice(n_real, len(y))):
            if part.stop > part.start:
                xp, sp = cutmix(x[part], y[part], alpha=self.cfg.train.cutmix,
                                num_classes=self.data.info.num_classes, rng=rng)
                xs.append(xp)
                softs.append(sp)
        soft = torch.cat(softs)
        return torch.cat(xs), soft.argmax(1), soft

    def _assemble(self, step: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, int]:
        real_idx, syn_idx = self.sampler.batch(step)
        real_idx = real_idx.to(self.device, non_blocking=True)
        x, y = self.real_x[real_idx], self.real_y[real_idx]
        if len(syn_idx):
            order = np.argsort(syn_idx.numpy())  # sorted reads from the memory map, then back to the drawn order
            idx = syn_idx.numpy()[order]
            sx = torch.from_numpy(np.ascontiguousarray(self.data.synthetic_x[idx]))
            sy = torch.from_numpy(np.asarray(self.data.synthetic_y[idx], dtype=np.int64))
            inv = torch.from_numpy(np.argsort(order))
            x = torch.cat([x, sx[inv].to(self.device, non_blocking=True)])
            y = torch.cat([y, sy[inv].to(self.device, non_blocking=True)])
        x = x.permute(0, 3, 1, 2).float().div_(255.0)
        if self.cfg.data.augment:
            x = random_crop_flip(x, self.data.info.crop_padding, self.data.info.flip, gen)
        if self.cfg.train.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x, y, len(real_idx)


# ---------------------------------------------------------------------------------------------- the run


def train(cfg: Config, run_dir: str | Path, *, resume: bool = False, progress: bool = True) -> dict[str, Any]:
    """Train one run into ``run_dir`` (created) and return its record (``{}`` on ranks other than 0, which write
    nothing). A run that stops on an error (a full disk, a corrupt checkpoint, a bad batch) does not stay ``running``:
    its record says ``failed`` and why, and the error propagates."""
    try:
        return _train(cfg, run_dir, resume=resume, progress=progress)
    except Exception as err:
        if is_main_process():
            mark_failed_if_running(run_dir, err)
        raise


def _train(cfg: Config, run_dir: str | Path, *, resume: bool, progress: bool) -> dict[str, Any]:
    dist = init_distributed()
    run_dir = Path(run_dir)
    device = device_for(dist)
    torch.manual_seed(cfg.train.seed)
    np.random.seed(cfg.train.seed)

    data = load_train_data(cfg.data)
    sampler = MixedBatchSampler(len(data.train_x), data.n_synthetic, cfg.data.batch_size,
                                cfg.data.synthetic.fraction, cfg.train.seed, dist.rank, dist.world_size)
    parts = build_step(cfg, device, sampler.steps_per_epoch, dist)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed shapes: autotune the convolutions once
    accounting = RunAccounting.from_config(cfg, dist, device)
    state = Progress()

    record = read_record(run_dir) if resume else None
    if resume and (run_dir / ckpt.CHECKPOINT).is_file():  # killed before its first checkpoint: start over
        state = _restore(run_dir / ckpt.CHECKPOINT, parts, accounting, device)
    record = record or new_record(config_to_dict(cfg))
    if dist.is_main:
        _prepare_run_dir(run_dir, cfg, record, resume, state.epoch)

    source = BatchSource(data, sampler, cfg, device)
    val = (torch.as_tensor(data.val_x).permute(0, 3, 1, 2).float().div(255.0).to(device),
           torch.as_tensor(data.val_y).to(device))

    try:
        with accounting.meter():
            _epochs(cfg, dist, run_dir, parts, source, val, state, accounting, progress)
        status, reason = Status.done, None
    except Divergence as err:
        status, reason = Status.failed, str(err)
    record = _finish(cfg, dist, run_dir, record, parts.model, state, accounting, status, reason, device)
    barrier()
    if dist.owns_group:
        cleanup()
    return record


def _epochs(cfg, dist, run_dir, parts: StepParts, source, val, state, accounting, progress) -> None:
    steps_per_epoch = source.sampler.steps_per_epoch
    bar = _ProgressBar(cfg.train.epochs, steps_per_epoch, enabled=progress and dist.is_main)
    with bar:
        while state.epoch < cfg.train.epochs:
            with accounting.phase("train"):  # energy_kwh covers what wall_s and train_flops cover
                t0 = time.perf_counter()
                stats = _train_epoch(cfg, parts, source, state, accounting, bar, val[0].device, steps_per_epoch)
                summary = _summary(stats)  # a host sync: the epoch's GPU work is done when the clock stops
                epoch_s = time.perf_counter() - t0
            _check_finite(summary, parts, state, run_dir)
            state.epoch += 1
            state.wall_s += epoch_s
            row = {"epoch": state.epoch, "step": state.step, "lr": parts.optimizer.param_groups[0]["lr"], **summary,
                   "img_per_s": summary["n"] / max(epoch_s, 1e-9), "epoch_s": epoch_s,
                   "samples_seen": accounting.samples_seen, "train_flops": accounting.train_flops}
            with accounting.phase("eval"):
                t_eval = time.perf_counter()
                row.update(_validate(cfg, dist, run_dir, parts, val, state, accounting))
                state.eval_s += time.perf_counter() - t_eval
            bar.update(state, row, steps_per_epoch, epoch_done=True)
            checkpoint = state.epoch % cfg.train.checkpoint_every == 0 or state.epoch == cfg.train.epochs
            if checkpoint:
                accounting.sync()  # a collective: every rank, before rank 0 writes the energy so far
            if dist.is_main:
                append_line(run_dir / "metrics.jsonl", json.dumps(row))
                state.history.append({k: row[k] for k in ("epoch", "val_pgd_acc", "val_clean_acc") if k in row})
                if checkpoint:
                    _save(run_dir, cfg, parts, accounting, state)
            barrier()
            if cfg.train.max_steps is not None and state.step >= cfg.train.max_steps:
                break


def _train_epoch(cfg, parts: StepParts, source, state, accounting, bar, device, steps_per_epoch) -> torch.Tensor:
    """One epoch's optimiser steps; returns the stats summed over ranks (the epoch's one collective)."""
    parts.model.train()
    stats = torch.zeros(4, device=device)
    first = state.epoch * steps_per_epoch
    for step in range(first, first + steps_per_epoch):
        if cfg.train.max_steps is not None and step >= cfg.train.max_steps:
            break
        gen = step_generator(cfg.train.seed, step, device)
        x, y, soft = source.training_batch(step, gen)
        stats += train_step(parts, x, y, cfg, gen, soft)
        accounting.add_train(cfg.data.batch_size)
        state.step = step + 1
        if bar.enabled and (step + 1 - first) % LOG_EVERY == 0:  # the only host sync inside an epoch
            bar.update(state, _summary(stats), step + 1 - first)
    return all_reduce_sum(stats)


def _summary(stats: torch.Tensor) -> dict[str, float]:
    loss_sum, clean, adv, n = stats.tolist()
    n = max(n, 1.0)
    return {"loss": loss_sum / n, "train_clean_acc": clean / n, "train_adv_acc": adv / n, "n": n}


def _validate(cfg, dist, run_dir, parts: StepParts, val, state, accounting) -> dict[str, Any]:
    """PGD-40 on the held-out validation subset: the early-stopping metric. Saves the best weights."""
    if state.epoch % cfg.eval.pgd_every and state.epoch != cfg.train.epochs:
        return {}
    from robustscale.attacks import pgd_accuracy

    net = parts.ema.module if parts.ema is not None else parts.model
    res = pgd_accuracy(net, val[0], val[1], eps=cfg.attack.eps, steps=cfg.eval.pgd_steps,
                       step_size=cfg.eval.pgd_step_size_factor * cfg.attack.eps / cfg.eval.pgd_steps,
                       norm=cfg.attack.norm.value, loss=cfg.eval.pgd_loss.value, batch_size=cfg.eval.batch_size,
                       seed=cfg.train.seed)
    n = len(val[1])
    accounting.add_eval(n, cfg.eval.pgd_steps, n_attacked=round(res["clean_acc"] * n))  # only correct points are attacked
    row = {"val_clean_acc": res["clean_acc"], "val_pgd_acc": res["robust_acc"]}
    # best robust accuracy, ties to the better clean accuracy; standard training (the baseline) selects on clean
    first, second = ("clean_acc", "robust_acc") if cfg.train.loss.value == "standard" else ("robust_acc", "clean_acc")
    score = res[first] + 1e-6 * res[second]
    if score > state.best_metric:
        state.best_metric, state.best_epoch = score, state.epoch
        if dist.is_main:
            save_model(run_dir / "best.safetensors", net, cfg)
    return row


# ---------------------------------------------------------------------------------------------- state on disk


def _prepare_run_dir(run_dir: Path, cfg: Config, record: dict[str, Any], resume: bool, epoch: int) -> None:
    """Config, a clean log and a running record. On resume the log keeps only the epochs the checkpoint holds (a kill
    between a log line and the checkpoint would otherwise repeat an epoch), and a kill's temp files are removed."""
    run_dir.mkdir(parents=True, exist_ok=True)
    remove_stale_temp_files(run_dir)
    write_text(run_dir / "config.yaml", config_to_yaml(cfg))
    if not resume:
        (run_dir / "metrics.jsonl").unlink(missing_ok=True)
    else:
        keep_lines(run_dir / "metrics.jsonl", lambda row: row.get("epoch", 0) <= epoch)
    record.update(status=Status.running.value, reason=None)
    write_record(run_dir, record)


def _save(run_dir, cfg, s: StepParts, accounting, state: Progress) -> None:
    save_model(run_dir / "last.safetensors", s.model, cfg)
    ckpt.save_checkpoint(run_dir / ckpt.CHECKPOINT, {
        "model": s.model.state_dict(),
        "ema": s.ema.state_dict() if s.ema is not None else None,
        "optimizer": s.optimizer.state_dict(),
        "scheduler": s.scheduler.state_dict(),
        "scaler": s.scaler.state_dict(),
        "rng": ckpt.rng_state(),
        "accounting": accounting.state_dict(),
        "env": ckpt.runtime_env(next(s.model.parameters()).device),
        "progress": {"epoch": state.epoch, "step": state.step, "best_metric": state.best_metric,
                     "best_epoch": state.best_epoch, "wall_s": state.wall_s, "eval_s": state.eval_s,
                     "history": state.history},
    })


def _restore(path: Path, s: StepParts, accounting, device: torch.device) -> Progress:
    """Load the checkpoint at ``path`` into the step's parts. A checkpoint that does not fit this run (missing or
    mistyped entries, other shapes) is a one-line :class:`UserError`; one written under another torch version,
    thread count, device or world size resumes with a warning: the continuation is then not bitwise exact."""
    saved = ckpt.load_checkpoint(path)
    try:
        s.model.load_state_dict(saved["model"])
        if s.ema is not None and saved.get("ema") is not None:
            s.ema.load_state_dict(saved["ema"])
        s.optimizer.load_state_dict(saved["optimizer"])
        s.scheduler.load_state_dict(saved["scheduler"])
        if saved.get("scaler"):
            s.scaler.load_state_dict(saved["scaler"])
        ckpt.set_rng_state(saved["rng"])
        accounting.load_state_dict(saved["accounting"])
        state = Progress(**saved["progress"])
    except (KeyError, TypeError, ValueError, RuntimeError, AttributeError, IndexError) as err:
        raise UserError(f"checkpoint '{path}' does not fit this run ({type(err).__name__}: "
                        f"{shown(str(err).splitlines()[0] if str(err) else '')}); delete it to restart the run") \
            from None
    changed = ckpt.env_differences(saved.get("env"), ckpt.runtime_env(device))
    if changed:
        log.warning("resuming %s with %s: the continuation is not bitwise identical to an uninterrupted run (exact "
                    "resume needs the same torch version, thread count, device and world size)", path.parent,
                    ", ".join(changed))
    return state


def _check_finite(summary: dict[str, float], s: StepParts, state: Progress, run_dir: Path) -> None:
    """Divergence is a non-finite loss *or* non-finite weights or buffers (a huge learning rate can keep the loss
    finite while BatchNorm's running variance overflows): stop before anything of this epoch is saved, and say
    truthfully which checkpoint is kept."""
    bad = ckpt.first_nonfinite(s.model.state_dict())
    if bad is None and s.ema is not None:
        bad = ckpt.first_nonfinite(s.ema.module.state_dict())
        bad = bad and f"ema {bad}"
    if math.isfinite(summary["loss"]) and bad is None:
        return
    what = f"loss became {summary['loss']}" if not math.isfinite(summary["loss"]) else f"{bad} became non-finite"
    kept = ckpt.saved_epoch(run_dir / ckpt.CHECKPOINT)
    kept = (f"the checkpoint of epoch {kept} (finite) is kept" if kept is not None
            else "no checkpoint was written before it, so there is nothing to resume")
    raise Divergence(f"{what} in epoch {state.epoch + 1}: lower train.lr or use train.grad_clip; {kept}")


# ---------------------------------------------------------------------------------------------- the end


def _finish(cfg, dist, run_dir, record, model, state, accounting, status, reason, device) -> dict[str, Any]:
    """Final evaluation of the best checkpoint (clean test accuracy, AutoAttack), accounting, record."""
    if not dist.is_main:
        return {}  # only rank 0 writes and reports
    best = next((h for h in state.history if h["epoch"] == state.best_epoch), {})
    metrics: dict[str, Any] = {"pgd40_acc": best.get("val_pgd_acc"), "val_clean_acc": best.get("val_clean_acc"),
                               "best_epoch": state.best_epoch}
    evaluations = dict(record.get("evaluations") or {})
    final_s = 0.0
    if status is Status.done and state.best_epoch >= 0:
        t0 = time.perf_counter()
        metrics, evaluations = _final_eval(cfg, run_dir, metrics, evaluations, device, accounting)
        final_s = time.perf_counter() - t0
    record.update(
        status=status.value, reason=reason, metrics=metrics, evaluations=evaluations,
        params=sum(p.numel() for p in model.parameters()),
        epochs_run=state.epoch, samples_seen=accounting.samples_seen, wall_s=state.wall_s,
        accounting=accounting.block(wall_s=state.wall_s, eval_wall_s=state.eval_s + final_s),
        hardware=accounting.hardware,
    )
    write_record(run_dir, record)
    return record


def _final_eval(cfg, run_dir, metrics, evaluations, device, accounting):
    """Clean test accuracy and AutoAttack of the best checkpoint, metered and counted as evaluation."""
    from robustscale.data import load_data
    from robustscale.models import load_model

    best = load_model(run_dir, device=device)
    x, y = load_data(cfg.data.dataset, "test", root=cfg.data.root, image_size=cfg.data.image_size)
    with accounting.final_eval(best):
        return _evaluate_best(cfg, run_dir, best, x, y, metrics, evaluations, device)


def _evaluate_best(cfg, run_dir, best, x, y, metrics, evaluations, device):
    with torch.no_grad():
        correct = sum((best(xb.to(device)).argmax(1).cpu() == yb).sum().item()
                      for xb, yb in zip(x.split(cfg.eval.batch_size), y.split(cfg.eval.batch_size)))
    metrics["clean_acc"] = correct / len(y)
    metrics["autoattack_acc"] = None
    if cfg.eval.autoattack.value != "none":
        from robustscale.evaluate import evaluate_model

        res = evaluate_model(best, x, y, attack="autoattack", eps=cfg.attack.eps, norm=cfg.attack.norm.value,
                             n=cfg.eval.autoattack_n, version=cfg.eval.autoattack.value,
                             batch_size=cfg.eval.batch_size, seed=cfg.train.seed, run_dir=run_dir)
        metrics["autoattack_acc"] = res["robust_acc"]
        metrics["autoattack_clean_acc"] = res["clean_acc"]
        evaluations["autoattack"] = res
    return metrics, evaluations


class _ProgressBar:
    """A rich progress bar per epoch (loss, clean/robust train accuracy, img/s, ETA) on rank 0."""

    def __init__(self, epochs: int, steps: int, enabled: bool):
        self.enabled, self.epochs, self.steps = enabled, epochs, steps
        self.bar = self.task = None
        self.t0 = time.perf_counter()

    def __enter__(self):
        if self.enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self.bar = Progress(TextColumn("[bold]epoch {task.fields[epoch]}"), BarColumn(), MofNCompleteColumn(),
                                TextColumn("{task.fields[info]}"), TimeRemainingColumn(), transient=False)
            self.bar.__enter__()
            self.task = self.bar.add_task("train", total=self.steps, epoch="1", info="")
        return self

    def __exit__(self, *exc):
        if self.bar is not None:
            self.bar.__exit__(*exc)

    def update(self, state: Progress, row: dict[str, Any], done: int, epoch_done: bool = False) -> None:
        if self.bar is None:
            return
        info = (f"loss {row['loss']:.3f} clean {row['train_clean_acc']:.1%} adv {row['train_adv_acc']:.1%}")
        if "val_pgd_acc" in row:
            info += f" | val pgd {row['val_pgd_acc']:.1%}"
        if "img_per_s" in row:
            info += f" | {row['img_per_s']:.0f} img/s"
        epoch = state.epoch if epoch_done else state.epoch + 1
        self.bar.update(self.task, completed=done, epoch=f"{epoch}/{self.epochs}", info=info)
        if epoch_done and state.epoch < self.epochs:
            self.bar.reset(self.task, total=self.steps)
