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
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn
from rich.progress import Progress as RichProgress
from torch import nn

from robustscale.accounting.run import RunAccounting
from robustscale.attacks.evaluation import clean_accuracy, evaluate_model
from robustscale.attacks.autoattack import subset_indices
from robustscale.attacks.pgd import adversarial_loss, pgd_accuracy
from robustscale.attacks.sharding import Shard
from robustscale.config import Config, config_to_dict, config_to_yaml, pgd_eval_step_size
from robustscale.data import MixedBatchSampler, load_data, load_train_data, step_generator
from robustscale.enums import Attack, AutoAttackVersion, Loss, Precision
from robustscale.errors import UserError, shown
from robustscale.store.atomic import append_line, keep_lines, remove_stale_temp_files, write_text
from robustscale.store.record import Metrics, RunRecord, Status, mark_failed_if_running, read_record, write_record
from robustscale.tracking import End, Trackers, open_trackers
import robustscale.training.checkpoint as ckpt
from robustscale.training.batches import BatchSource
from robustscale.training.collapse import StopRules, Watch, describe
from robustscale.training.distributed import (DistInfo, all_reduce_sum, barrier, broadcast_buffers, cleanup, device_for,
                                              gather_objects, init_distributed, is_main_process)
from robustscale.training.ema import ModelEMA
from robustscale.training.losses import compute_loss
from robustscale.training.model_files import create_from_config, load_model, save_model
from robustscale.training.optim import make_optimizer, make_scheduler
from robustscale.training.precision import autocast
from robustscale.training.preemption import Preempted, agreed, stoppable

__all__ = ["train", "train_step", "build_step", "StepParts", "Run", "Progress", "BatchSource", "Divergence",
           "Preempted"]

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
    # an epoch stopped at a step boundary (preemption): each rank's stats so far, and its training time so far
    partial_stats: list[list[float]] | None = None
    partial_s: float = 0.0
    watch: dict[str, Any] = field(default_factory=dict)  # the stop rules' state (training/collapse.py)


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
    with autocast(cfg.train.precision, x.device):
        out = compute_loss(cfg.train.loss, s.train_model, x, y, cfg, attack_model=s.attack_model, generator=gen,
                           soft=soft)
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
    scaler = torch.amp.GradScaler(device.type, enabled=cfg.train.precision is Precision.fp16)
    train_model = attack_model = model
    if distributed:
        train_model = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda"
                                                          else None)
    if cfg.train.compile:
        train_model, attack_model = torch.compile(train_model), torch.compile(model)
    return StepParts(model, train_model, attack_model, ema, optimizer, scheduler, scaler)


# ---------------------------------------------------------------------------------------------- the run


@dataclass
class Run:
    """One run in progress: what every helper of the loop works on."""

    cfg: Config
    dist: DistInfo
    device: torch.device
    dir: Path
    parts: StepParts
    accounting: RunAccounting
    progress: Progress = field(default_factory=Progress)
    trackers: Trackers = field(default_factory=Trackers)  # rank 0's experiment trackers (empty elsewhere)
    synthetic_key: str | None = None  # the content key of the synthetic set it trains on (checkpoint and record)

    @property
    def net(self) -> nn.Module:
        """The weights that are validated, saved as best and evaluated: the EMA's when EMA is on."""
        return self.parts.ema.module if self.parts.ema is not None else self.parts.model

    @property
    def shard(self) -> Shard:
        """This rank's part of an evaluation: validation and the final evaluation are split over the ranks."""
        return Shard(self.dist.rank, self.dist.world_size)


def train(cfg: Config, run_dir: str | Path, *, resume: bool = False, progress: bool = True) -> RunRecord | None:
    """Train one run into ``run_dir`` (created) and return its record (None on ranks other than 0, which write
    nothing). A run that stops on an error (a full disk, a corrupt checkpoint, a bad batch) does not stay ``running``:
    its record says ``failed`` and why, and the error propagates."""
    # rank 0's experiment trackers; one not installed is a UserError before anything is written (tracking/)
    trackers = open_trackers(cfg, run_dir, resume=resume, enabled=is_main_process())
    try:
        record = _train(cfg, Path(run_dir), resume=resume, progress=progress, trackers=trackers)
    except Preempted:  # not a failure: the checkpoint of the step it stopped at resumes it
        trackers.close(End.stopped)
        raise
    except Exception as err:
        if is_main_process():
            mark_failed_if_running(run_dir, err)
        trackers.close(End.failed)
        raise
    trackers.finish(record)
    return record


def _train(cfg: Config, run_dir: Path, *, resume: bool, progress: bool, trackers: Trackers) -> RunRecord | None:
    dist = init_distributed()
    device = device_for(dist)
    torch.manual_seed(cfg.train.seed)
    np.random.seed(cfg.train.seed)

    data = load_train_data(cfg.data)
    sampler = MixedBatchSampler(len(data.train_x), data.n_synthetic, cfg.data.batch_size,
                                cfg.data.synthetic.fraction, cfg.train.seed, dist.rank, dist.world_size,
                                cfg.data.drop_last)
    parts = build_step(cfg, device, sampler.steps_per_epoch, dist)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed shapes: autotune the convolutions once
    accounting = RunAccounting.from_config(cfg, dist.world_size, dist.local_rank, device, nodes=dist.nodes)
    run = Run(cfg, dist, device, run_dir, parts, accounting, trackers=trackers, synthetic_key=data.synthetic_key)

    record = read_record(run_dir) if resume else None
    if resume and (run_dir / ckpt.CHECKPOINT).is_file():  # killed before its first checkpoint: start over
        run.progress = _restore(run, run_dir / ckpt.CHECKPOINT)
    record = record or RunRecord.new(config_to_dict(cfg))
    if dist.is_main:
        _prepare_run_dir(run, record, resume)

    source = BatchSource(data, sampler, cfg, device)
    val = (torch.as_tensor(data.val_x).permute(0, 3, 1, 2).float().div(255.0).to(device),
           torch.as_tensor(data.val_y).to(device))

    try:
        with accounting.meter(), stoppable():
            _epochs(run, source, val, progress)
        status, reason = Status.done, None
    except Divergence as err:
        status, reason = Status.failed, str(err)
    except Preempted:
        if dist.owns_group:
            cleanup()
        raise
    record = _finish(run, record, status, reason, source.sampler)
    barrier()
    if dist.owns_group:
        cleanup()
    return record


def _epochs(run: Run, source: BatchSource, val, progress: bool) -> None:
    cfg, state, accounting = run.cfg, run.progress, run.accounting
    steps_per_epoch = source.sampler.steps_per_epoch
    with _ProgressBar(cfg.train.epochs, steps_per_epoch, enabled=progress and run.dist.is_main) as bar:
        while state.epoch < cfg.train.epochs and Watch.from_dict(state.watch).stopped is None:
            with accounting.phase("train"):  # energy_kwh covers what wall_s and train_flops cover
                t0 = time.perf_counter()
                stats = _train_epoch(run, source, bar)
                summary = _summary(stats) if stats is not None else None  # a host sync: the epoch's GPU work is done
                elapsed_s = time.perf_counter() - t0
            if summary is None:
                _stop(run, elapsed_s)
            _check_finite(run, summary)
            state.epoch += 1
            state.wall_s += elapsed_s
            epoch_s, state.partial_s = state.partial_s + elapsed_s, 0.0
            row = {"epoch": state.epoch, "step": state.step, "lr": run.parts.optimizer.param_groups[0]["lr"],
                   **summary, "img_per_s": summary["n"] / max(epoch_s, 1e-9), "epoch_s": epoch_s,
                   "samples_seen": accounting.samples_seen, "train_flops": accounting.train_flops}
            with accounting.phase("eval"):
                t_eval = time.perf_counter()
                row.update(_validate(run, val))
                state.eval_s += time.perf_counter() - t_eval
            bar.update(state, row, steps_per_epoch, epoch_done=True)
            stop = _watch(run, row)  # catastrophic overfitting, patience: may end training here
            _log_and_checkpoint(run, row)
            if stop:
                break
            if cfg.train.max_steps is not None and state.step >= cfg.train.max_steps:
                break
    if agreed(run.device):  # asked during the last validation: stop before the final evaluation, which no step
        _stop(run, 0.0)  # boundary interrupts


def _train_epoch(run: Run, source: BatchSource, bar: "_ProgressBar") -> torch.Tensor | None:
    """One epoch's optimiser steps (its remaining ones, resumed mid-epoch); returns the stats summed over ranks (the
    epoch's one collective), or None when the ranks agreed to stop at a step boundary (:mod:`.preemption`): each
    rank's stats so far are then in ``run.progress.partial_stats``, for the checkpoint."""
    cfg, state = run.cfg, run.progress
    steps_per_epoch = source.sampler.steps_per_epoch
    run.parts.model.train()
    stats = _stats_so_far(run)
    first = state.epoch * steps_per_epoch
    for step in range(max(first, state.step), first + steps_per_epoch):
        if cfg.train.max_steps is not None and step >= cfg.train.max_steps:
            break
        gen = step_generator(cfg.train.seed, step, run.device)
        x, y, soft = source.training_batch(step, gen)
        stats += train_step(run.parts, x, y, cfg, gen, soft)
        run.accounting.add_train(cfg.data.batch_size)
        state.step = step + 1
        if bar.enabled and (step + 1 - first) % LOG_EVERY == 0:  # the only host sync inside an epoch
            bar.update(state, _summary(stats), step + 1 - first)
        if agreed(run.device):  # armed only under a scheduler that may preempt: a collective then, else free
            state.partial_stats = gather_objects(stats.tolist())
            return None
    return all_reduce_sum(stats)


def _stats_so_far(run: Run) -> torch.Tensor:
    """This rank's epoch stats at the step the epoch resumes from: the checkpoint's (an epoch stopped mid-way), else
    zeros. Summed in the same order as without the stop, so the epoch's log line is the same bit for bit."""
    partial, run.progress.partial_stats = run.progress.partial_stats, None
    if partial is None or run.dist.rank >= len(partial):  # (another world size: not exact anyway, and warned)
        return torch.zeros(4, device=run.device)
    return torch.tensor(partial[run.dist.rank], dtype=torch.float32, device=run.device)


def _stop(run: Run, elapsed_s: float) -> None:
    """Stop at this step boundary: every rank gathers the energy so far, rank 0 checkpoints this exact step (the
    epoch's partial stats and time included), and :class:`Preempted` tells the caller to requeue."""
    state = run.progress
    state.wall_s += elapsed_s
    state.partial_s += elapsed_s
    run.accounting.sync()  # a collective, as before every checkpoint
    if run.dist.is_main:
        _save(run)
    barrier()
    raise Preempted(f"stopped at step {state.step} (epoch {state.epoch + 1}) and checkpointed it")


def _summary(stats: torch.Tensor) -> dict[str, float]:
    loss_sum, clean, adv, n = stats.tolist()
    n = max(n, 1.0)
    return {"loss": loss_sum / n, "train_clean_acc": clean / n, "train_adv_acc": adv / n, "n": n}


def _validate(run: Run, val) -> dict[str, Any]:
    """PGD-40 on the held-out validation subset: the early-stopping metric. Saves the best weights. Under DDP each
    rank attacks its share of the batches of rank 0's weights, and every rank gets the same numbers (exactly those of
    one process: :mod:`robustscale.attacks.sharding`)."""
    cfg, state = run.cfg, run.progress
    if state.epoch % cfg.eval.pgd_every and state.epoch != cfg.train.epochs:
        return {}
    broadcast_buffers(run.net)
    res = pgd_accuracy(run.net, val[0], val[1], eps=cfg.attack.eps, steps=cfg.eval.pgd_steps,
                       step_size=pgd_eval_step_size(cfg),
                       norm=cfg.attack.norm, loss=cfg.eval.pgd_loss, batch_size=cfg.eval.batch_size,
                       seed=cfg.train.seed, shard=run.shard)
    n = len(val[1])
    run.accounting.add_eval(n, cfg.eval.pgd_steps, n_attacked=round(res["clean_acc"] * n))  # correct points only
    row = {"val_clean_acc": res["clean_acc"], "val_pgd_acc": res["robust_acc"]}
    # best robust accuracy, ties to the better clean accuracy; standard training (the baseline) selects on clean
    first, second = ("clean_acc", "robust_acc") if cfg.train.loss is Loss.standard else ("robust_acc", "clean_acc")
    score = res[first] + 1e-6 * res[second]
    if score > state.best_metric:
        state.best_metric, state.best_epoch = score, state.epoch
        if run.dist.is_main:
            save_model(run.dir / "best.safetensors", run.net, cfg)
    return row


def _watch(run: Run, row: dict[str, Any]) -> bool:
    """The stop rules (:mod:`.collapse`) on this epoch's metrics: an alarm is logged and marked in the row, and True
    means training stops here. The decision is kept in the progress, so the checkpoint written next holds it."""
    state = run.progress
    watch = Watch.from_dict(state.watch)
    alarm = watch.observe(StopRules.from_config(run.cfg), state.epoch, row, improved=state.best_epoch == state.epoch)
    state.watch = watch.to_dict()
    if alarm is None:
        return False
    row.update(alarm=alarm.reason.value, stop=watch.stopped is alarm)
    if run.dist.is_main:
        log.warning("%s: %s", run.dir.name, describe(alarm, stops=row["stop"]))
    return row["stop"]


def _log_and_checkpoint(run: Run, row: dict[str, Any]) -> None:
    """Rank 0 appends the epoch's log line, then (every ``train.checkpoint_every`` epochs and at the end) writes the
    checkpoint; every rank first gathers the energy so far (a collective) and meets at the barrier after."""
    state = run.progress
    checkpoint = (state.epoch % run.cfg.train.checkpoint_every == 0 or state.epoch == run.cfg.train.epochs
                  or row.get("stop", False))  # a stop is checkpointed at once
    if checkpoint:
        run.accounting.sync()  # a collective: every rank, before rank 0 writes the energy so far
    if run.dist.is_main:
        row["energy_kwh"] = run.accounting.train_energy_kwh  # so far, after PUE: the record's energy_kwh's scope
        append_line(run.dir / "metrics.jsonl", json.dumps(row))
        run.trackers.log_epoch(row)  # after the line: metrics.jsonl is the source of truth, a tracker its window
        state.history.append({k: row[k] for k in ("epoch", "val_pgd_acc", "val_clean_acc") if k in row})
        if checkpoint:
            _save(run)
    barrier()


# ---------------------------------------------------------------------------------------------- state on disk


def _prepare_run_dir(run: Run, record: RunRecord, resume: bool) -> None:
    """Config, a clean log and a running record. On resume the log keeps only the epochs the checkpoint holds (a kill
    between a log line and the checkpoint would otherwise repeat an epoch), and a kill's temp files are removed."""
    run.dir.mkdir(parents=True, exist_ok=True)
    remove_stale_temp_files(run.dir)
    write_text(run.dir / "config.yaml", config_to_yaml(run.cfg))
    if not resume:
        (run.dir / "metrics.jsonl").unlink(missing_ok=True)
    else:
        keep_lines(run.dir / "metrics.jsonl", lambda row: row.get("epoch", 0) <= run.progress.epoch)
    record.status, record.reason = Status.running, None
    write_record(run.dir, record)


def _save(run: Run) -> None:
    s = run.parts
    save_model(run.dir / "last.safetensors", s.model, run.cfg)
    ckpt.save_checkpoint(run.dir / ckpt.CHECKPOINT, {
        "model": s.model.state_dict(),
        "ema": s.ema.state_dict() if s.ema is not None else None,
        "optimizer": s.optimizer.state_dict(),
        "scheduler": s.scheduler.state_dict(),
        "scaler": s.scaler.state_dict(),
        "rng": ckpt.rng_state(),
        "accounting": run.accounting.state_dict(),
        "env": ckpt.runtime_env(run.device),
        "progress": asdict(run.progress),
        "synthetic_key": run.synthetic_key,
    })


def _restore(run: Run, path: Path) -> Progress:
    """Load the checkpoint at ``path`` into the run's step parts and accounting. A checkpoint that does not fit this
    run (missing or mistyped entries, other shapes) is a one-line :class:`UserError`; one written under another torch
    version, thread count, device or world size resumes with a warning: the continuation is then not bitwise exact."""
    s, saved = run.parts, ckpt.load_checkpoint(path)
    try:
        s.model.load_state_dict(saved["model"])
        if s.ema is not None and saved.get("ema") is not None:
            s.ema.load_state_dict(saved["ema"])
        s.optimizer.load_state_dict(saved["optimizer"])
        s.scheduler.load_state_dict(saved["scheduler"])
        if saved.get("scaler"):
            s.scaler.load_state_dict(saved["scaler"])
        ckpt.set_rng_state(saved["rng"])
        run.accounting.load_state_dict(saved["accounting"])
        progress = Progress(**saved["progress"])
        started_on = saved.get("synthetic_key")  # absent from checkpoints of robustscale before it was kept
    except (KeyError, TypeError, ValueError, RuntimeError, AttributeError, IndexError) as err:
        raise UserError(f"checkpoint '{path}' does not fit this run ({type(err).__name__}: "
                        f"{shown(str(err).splitlines()[0] if str(err) else '')}); delete it to restart the run") \
            from None
    if started_on is not None and started_on != run.synthetic_key:
        raise UserError(f"data.synthetic.path '{run.cfg.data.synthetic.path}' is not the file this run started on "
                        f"(content key {started_on}, now {run.synthetic_key}): put that file back to resume, or train "
                        "into a new run folder")
    changed = ckpt.env_differences(saved.get("env"), ckpt.runtime_env(run.device))
    if changed:
        log.warning("resuming %s with %s: the continuation is not bitwise identical to an uninterrupted run (exact "
                    "resume needs the same torch version, thread count, device and world size)", path.parent,
                    ", ".join(changed))
    return progress


def _check_finite(run: Run, summary: dict[str, float]) -> None:
    """Divergence is a non-finite loss *or* non-finite weights or buffers (a huge learning rate can keep the loss
    finite while BatchNorm's running variance overflows): stop before anything of this epoch is saved, and say
    truthfully which checkpoint is kept."""
    s = run.parts
    bad = ckpt.first_nonfinite(s.model.state_dict())
    if bad is None and s.ema is not None:
        bad = ckpt.first_nonfinite(s.ema.module.state_dict())
        bad = bad and f"ema {bad}"
    if math.isfinite(summary["loss"]) and bad is None:
        return
    what = f"loss became {summary['loss']}" if not math.isfinite(summary["loss"]) else f"{bad} became non-finite"
    kept = ckpt.saved_epoch(run.dir / ckpt.CHECKPOINT)
    kept = (f"the checkpoint of epoch {kept} (finite) is kept" if kept is not None
            else "no checkpoint was written before it, so there is nothing to resume")
    raise Divergence(f"{what} in epoch {run.progress.epoch + 1}: lower train.lr or use train.grad_clip; {kept}")


# ---------------------------------------------------------------------------------------------- the end


def _finish(run: Run, record: RunRecord, status: Status, reason: str | None,
            sampler: MixedBatchSampler) -> RunRecord | None:
    """Final evaluation of the best checkpoint (clean test accuracy, AutoAttack) on every rank, each its share of the
    points; accounting and record on rank 0."""
    state = run.progress
    best = next((h for h in state.history if h["epoch"] == state.best_epoch), {})
    record.metrics = Metrics(pgd40_acc=best.get("val_pgd_acc"), val_clean_acc=best.get("val_clean_acc"),
                             best_epoch=state.best_epoch)
    final_s = 0.0
    if status is Status.done and state.best_epoch >= 0:
        t0 = time.perf_counter()
        _final_eval(run, record)
        final_s = time.perf_counter() - t0
    if not run.dist.is_main:
        return None  # only rank 0 writes and reports
    record.status, record.reason = status, reason
    record.params = sum(p.numel() for p in run.parts.model.parameters())
    norm = run.parts.model.normalize
    record.normalization = {"mean": norm.mean.flatten().tolist(), "std": norm.std.flatten().tolist()}
    record.synthetic_key = run.synthetic_key
    record.epochs_run = state.epoch
    watch = Watch.from_dict(state.watch)
    record.stopped_early, record.alarms = watch.stopped, watch.alarms
    record.accounting = run.accounting.block(wall_s=state.wall_s, eval_wall_s=state.eval_s + final_s)
    real, synthetic = sampler.unique_images(state.step)
    record.accounting.unique_images, record.accounting.unique_synthetic_images = real + synthetic, synthetic
    record.hardware = run.accounting.hardware()
    write_record(run.dir, record)
    return record


def _final_eval(run: Run, record: RunRecord) -> None:
    """Clean test accuracy, the adversarial test loss (PGD-CE at AutoAttack's points: the N-D law's metric) and
    AutoAttack of the best checkpoint (:mod:`robustscale.attacks.evaluation`), metered and counted as evaluation.
    Every rank runs it on its share of the batches (the numbers are those of one process); rank 0 writes."""
    cfg, metrics, shard = run.cfg, record.metrics, run.shard
    best = load_model(run.dir, device=run.device)
    x, y = load_data(cfg.data.dataset, "test", root=cfg.data.root, image_size=cfg.data.image_size)
    idx = subset_indices(len(y), cfg.eval.autoattack_n, cfg.train.seed)  # AutoAttack's points
    with run.accounting.final_eval(best):
        metrics.clean_acc = clean_accuracy(best, x, y, batch_size=cfg.eval.batch_size, shard=shard)
        loss = adversarial_loss(best, x[idx], y[idx], eps=cfg.attack.eps, norm=cfg.attack.norm,
                                steps=cfg.eval.pgd_steps, batch_size=cfg.eval.batch_size, seed=cfg.train.seed,
                                step_size=pgd_eval_step_size(cfg), shard=shard)
        metrics.adv_loss, metrics.adv_margin = loss["adv_loss"], loss["adv_margin"]
        record.evaluations = {**record.evaluations, "adv_loss": loss}
        if cfg.eval.autoattack is AutoAttackVersion.none:
            return
        res = evaluate_model(best, x, y, attack=Attack.autoattack, eps=cfg.attack.eps, norm=cfg.attack.norm,
                             n=cfg.eval.autoattack_n, version=cfg.eval.autoattack, only=cfg.eval.autoattack_attacks,
                             batch_size=cfg.eval.batch_size, seed=cfg.train.seed, run_dir=run.dir, shard=shard)
    metrics.autoattack_acc, metrics.autoattack_clean_acc = res["robust_acc"], res["clean_acc"]
    record.evaluations = {**record.evaluations, "autoattack": res}


class _ProgressBar:
    """A rich progress bar per epoch (loss, clean/robust train accuracy, img/s, ETA) on rank 0."""

    def __init__(self, epochs: int, steps: int, enabled: bool):
        self.enabled, self.epochs, self.steps = enabled, epochs, steps
        self.bar = self.task = None
        self.t0 = time.perf_counter()

    def __enter__(self):
        if self.enabled:
            self.bar = RichProgress(TextColumn("[bold]epoch {task.fields[epoch]}"), BarColumn(), MofNCompleteColumn(),
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
