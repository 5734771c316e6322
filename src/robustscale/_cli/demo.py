"""``robustscale demo``: the whole study in miniature on the embedded data, on a laptop CPU, in minutes."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def demo(
    out: Optional[Path] = typer.Option(None, "--out", help="Folder for the synthetic data, runs and report "
                                       "(default: runs/demo, or runs/demo-medium for --budget medium)."),
    budget: str = typer.Option("small", "--budget", help="small (27 tiny runs: minutes on 2 cores) or medium (a "
                               "workstation)."),
    workers: Optional[int] = typer.Option(None, "--workers", help="Parallel training processes, one CPU thread "
                                         "each (default: one per core)."),
    as_json: bool = typer.Option(False, "--json", help="Print the headline as JSON."),
) -> None:
    """Synthetic data, a sweep of the paper's knobs, results, scaling laws, predictor and HTML report."""
    from robustscale.demo import run_demo

    head = run_demo(out, budget, workers, progress=not as_json)
    if as_json:
        from robustscale._cli._common import print_json

        print_json(head)
        return
    typer.echo(f"\nreport: {head['report']}  ({head['runs_done']} runs, {head['seconds'] / 60:.1f} min)")
    for label, key in (("what drives robustness", "drivers"), ("what compute buys", "compute"),
                       ("what more robustness costs", "target")):
        typer.echo(f"  {label}: {head['answers'].get(key, 'n/a')}")


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)
