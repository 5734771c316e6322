"""``robustscale train``: one config in, one run folder out."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer


def train(
    config: Path = typer.Argument(..., help="YAML config, or a run folder to resume.", show_default=False),
    overrides: Optional[List[str]] = typer.Argument(None, help="section.key=value overrides."),
    out: Optional[Path] = typer.Option(None, "--out", help="Run folder (default: output.dir/<run id>)."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out (or the run folder given)."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar."),
    as_json: bool = typer.Option(False, "--json", help="Print the run record as JSON at the end."),
) -> None:
    """Train one model (PGD-AT, TRADES or standard) and write config.yaml, metrics.jsonl, checkpoints, record.json.

    Multi-GPU: torchrun --nproc_per_node=N -m robustscale train CONFIG ...
    """
    from robustscale.training import resolve_run, train as run_training

    cfg, run_dir, resume = resolve_run(config, overrides, out, resume)
    record = run_training(cfg, run_dir, resume=resume, progress=not quiet)
    if not record:  # DDP ranks other than 0
        return
    if as_json:
        from robustscale._cli._common import print_json

        print_json(record)
    else:
        m = record.get("metrics", {})
        typer.echo(f"{record['status']}: {run_dir}")
        for key in ("clean_acc", "pgd40_acc", "autoattack_acc", "best_epoch"):
            if m.get(key) is not None:
                typer.echo(f"  {key:15s} {m[key]:.4f}" if isinstance(m[key], float) else f"  {key:15s} {m[key]}")
        acc = record.get("accounting", {})
        if acc:
            typer.echo(f"  train_flops     {acc.get('train_flops', 0):.3e}")
            typer.echo(f"  energy_kwh      {acc.get('energy_kwh', 0):.3e} ({'estimated' if acc.get('energy_estimated') else 'measured'})")
    if record["status"] == "failed":
        typer.echo(f"failed: {record.get('reason')}", err=True)
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command("train")(train)
