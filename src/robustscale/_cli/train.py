"""``robustscale train``: one config in, one run folder out."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from robustscale.enums import Tracker
from robustscale.errors import UserError


TRACKER = typer.Option(None, "--tracker", help="Log to this experiment tracker too (repeatable): tensorboard, mlflow "
                       "or wandb, each an extra (pip install 'robustscale[mlflow]'); sets output.trackers.")


def resolve_run(config_or_run: Path, overrides: Optional[List[str]], out: Optional[Path], resume: bool,
                trackers: Optional[List[Tracker]] = None):
    """``(cfg, run_dir, resume)`` from the command's arguments: a config file (a new run, or ``--resume`` of
    ``--out``), or a run folder (``robustscale train --resume RUN_DIR``), whose saved config is used. ``--tracker``
    sets ``output.trackers``, also on resume (a tracker is not part of what a run trains); a tracker that is not
    installed is refused here, before anything is trained."""
    from robustscale.config import config_to_dict
    from robustscale.store.record import run_id
    from robustscale.tracking import require_installed
    from robustscale.training.run_config import load_config

    path = Path(config_or_run)
    if path.is_dir():
        if not (path / "config.yaml").is_file():
            raise UserError(f"'{path}' is a folder but not a run folder (no config.yaml): pass a YAML config or a run")
        if overrides:
            raise UserError("overrides cannot change a run being resumed: start a new run with the changed config")
        cfg = load_config(path / "config.yaml")
        if trackers:
            cfg.output.trackers = trackers
        require_installed(cfg.output.trackers)
        return cfg, path, True
    cfg = load_config(path, overrides or [])
    if trackers:
        cfg.output.trackers = trackers
    require_installed(cfg.output.trackers)
    run_dir = Path(out) if out is not None else cfg.output.dir / run_id(config_to_dict(cfg))
    if resume and not (run_dir / "config.yaml").is_file():
        raise UserError(f"--resume: '{run_dir}' holds no run to resume; drop --resume to start it")
    return cfg, run_dir, resume


def train(
    config: Path = typer.Argument(..., help="YAML config, or a run folder to resume.", show_default=False),
    overrides: Optional[List[str]] = typer.Argument(None, help="section.key=value overrides."),
    out: Optional[Path] = typer.Option(None, "--out", help="Run folder (default: output.dir/<run id>)."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out (or the run folder given)."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar."),
    as_json: bool = typer.Option(False, "--json", help="Print the run record as JSON at the end."),
    procs_per_node: int = typer.Option(1, "--procs-per-node", min=1, help="DDP on this machine: train on this many "
                                       "processes (one per GPU; gloo processes sharing the cores on a CPU)."),
    tracker: Optional[List[Tracker]] = TRACKER,
) -> None:
    """Train one model (PGD-AT, TRADES or standard) and write config.yaml, metrics.jsonl, checkpoints, record.json.

    Multi-GPU: --procs-per-node N on one machine, or torchrun --nproc_per_node=N -m robustscale train CONFIG ...
    """
    from robustscale.enums import Status

    cfg, run_dir, resume = resolve_run(config, overrides, out, resume, tracker)
    record = _run(cfg, run_dir, resume, not quiet, procs_per_node)
    if record is None:  # DDP ranks other than 0
        return
    if as_json:
        from robustscale._cli._common import print_json

        print_json(record.to_dict())
    else:
        _print_record(record, run_dir)
    if record.status is Status.failed:
        typer.echo(f"failed: {record.reason}", err=True)
        raise typer.Exit(1)


def _run(cfg, run_dir: Path, resume: bool, progress: bool, procs: int):
    """The run in this process (or as one rank of torchrun's group), or as a DDP job of ``procs`` processes; while it
    trains, this process holds the run folder's claim, as a sweep worker does (not under torchrun, whose ranks
    are started by torchrun)."""
    import os

    from robustscale.store.rundir import holding_claim
    from robustscale.training.launch import check_local_ranks

    if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # a rank of torchrun's group
        return _train(cfg, run_dir, resume, progress, procs, None)
    check_local_ranks(procs)  # before the claim: nothing is written for a job this machine cannot run
    with holding_claim(run_dir) as claim:
        return _train(cfg, run_dir, resume, progress, procs, claim)


def _train(cfg, run_dir: Path, resume: bool, progress: bool, procs: int, claim):
    if procs == 1:
        from robustscale.training.loop import train as run_training

        return run_training(cfg, run_dir, resume=resume, progress=progress)
    from robustscale.training.launch import RankFailed, train_on_ranks

    try:
        return train_on_ranks(cfg, run_dir, procs, resume=resume, progress=progress, claim=claim)
    except RankFailed as err:  # the record says failed (rank 0 wrote why, or the launcher did: this line)
        typer.echo(f"failed: {err}", err=True)
        raise typer.Exit(1) from None


def _print_record(record, run_dir: Path) -> None:
    typer.echo(f"{record.status}: {run_dir}")
    for key in ("clean_acc", "pgd40_acc", "autoattack_acc", "best_epoch"):
        value = getattr(record.metrics, key)
        if value is not None:
            typer.echo(f"  {key:15s} {value:.4f}" if isinstance(value, float) else f"  {key:15s} {value}")
    acc = record.accounting
    if acc.train_flops is not None:
        typer.echo(f"  train_flops     {acc.train_flops:.3e}")
    if acc.energy_kwh is not None:
        typer.echo(f"  energy_kwh      {acc.energy_kwh:.3e} ({'estimated' if acc.energy_estimated else 'measured'})")
    stop = record.stopped_early
    if stop is not None:
        planned = record.config.get("train", {}).get("epochs")
        typer.echo(f"  stopped early   epoch {stop.epoch} of {planned}: {stop.reason} (best checkpoint: epoch "
                   f"{record.metrics.best_epoch})")


def register(app: typer.Typer) -> None:
    app.command("train")(train)
