"""``robustscale replay``: how close a run-choosing strategy gets to a finished grid's law for a share of its compute.

Thin wrapper over :func:`robustscale.analysis.replay.replay`; the live ``sweep --adaptive`` will call the same
strategies.
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from robustscale._cli._common import print_json
from robustscale._cli.analysis import BINS, MAPPING, METRIC, MIN_ACC, TABLE, _table

STRATEGY_HELP = "random, cheapest-first, crude (the issue's baseline) or envelope (ours)."


def replay(
    table: Path = TABLE,
    strategy: str = typer.Option("envelope", "--strategy", help=STRATEGY_HELP),
    budget_frac: float = typer.Option(0.2, "--budget-frac", help="Share of the grid's total train_flops to spend."),
    seeds: int = typer.Option(8, "--seeds", help="Seeds to replay (0, 1, ...)."),
    first_seed: int = typer.Option(0, "--first-seed", help="First seed."),
    batch_size: int = typer.Option(1, "--batch-size", help="Runs chosen per round (a live sweep's workers)."),
    mapping: Optional[List[str]] = MAPPING,
    bins: int = BINS,
    min_acc: Optional[float] = MIN_ACC,
    metric: str = METRIC,
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Replay a strategy on a finished table (choosing a run reveals its row and spends its FLOPs); compare alphas."""
    from robustscale.analysis.replay import replay as run_replay

    result = run_replay(_table(table, mapping), strategy, budget_frac=budget_frac, seeds=seeds,
                        first_seed=first_seed, batch_size=batch_size, metric=metric, bins=bins, min_acc=min_acc)
    if as_json:
        return print_json(result)
    typer.echo(f"{result['n_candidates']} runs in the grid, full-table alpha {result['full_alpha']:.5g}; "
               f"strategy {strategy}, budget {budget_frac:g} of the grid's FLOPs")
    for episode in result["seeds"]:
        alpha = "no law" if episode["alpha"] is None else f"alpha {episode['alpha']:.5g} "
        error = "" if episode["alpha_error"] is None else f"(error {episode['alpha_error']:.2g})"
        typer.echo(f"  seed {episode['seed']}: {alpha}{error}, {episode['runs']} runs, "
                   f"{episode['compute_frac']:.3f} of the compute")
    median = result["median_alpha_error"]
    typer.echo(f"median alpha error {'n/a' if median is None else format(median, '.2g')}, median runs "
               f"{result['median_runs']:g}, median compute {result['median_compute_frac']:.3f}")


def register(app: typer.Typer) -> None:
    """Add ``replay`` to the ``robustscale`` app."""
    app.command("replay")(replay)
