"""``robustscale replay`` (how close a run-choosing strategy gets to a finished grid's law for a share of its compute)
and the ``sweep --adaptive`` options (the same strategies, live).

Thin wrappers over :func:`robustscale.analysis.replay.replay` and :func:`robustscale.sweep.adaptive.adaptive_sweep`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, List, Optional

import typer

from robustscale._cli._common import print_json
from robustscale._cli.analysis import BINS, MAPPING, METRIC, MIN_ACC, SEED_MAX, TABLE, _table
from robustscale.errors import UserError

MAX_REPLAY_SEEDS = 10_000  # each seed replays a whole sweep; the study replays 8
STRATEGY_HELP = "random, cheapest-first, crude (the issue's baseline) or envelope (ours)."

# `robustscale sweep` options of an adaptive sweep (declared here so the sweep command stays a table of contents)
ADAPTIVE = typer.Option(False, "--adaptive", help="Train in rounds (one run per worker) chosen by --strategy, "
                        "refitting the law after each, until --budget-flops / --budget-gpu-hours or --target-ci; "
                        "resumable.")
ADAPTIVE_STRATEGY = typer.Option(None, "--strategy", help=f"Adaptive: {STRATEGY_HELP} Default envelope (or the "
                                 "folder's plan).")
BUDGET_FLOPS = typer.Option(None, "--budget-flops", help="Adaptive: stop when no untrained run fits this many "
                            "training FLOPs (as the results table counts train_flops).")
BUDGET_GPU_HOURS = typer.Option(None, "--budget-gpu-hours", help="Adaptive: stop at this many GPU-hours (wall hours "
                                "of CPU runs).")
TARGET_CI = typer.Option(None, "--target-ci", help="Adaptive: stop once the law is pinned (README) and alpha's 95% "
                         "interval is narrower than this.")
ADAPTIVE_SEED = typer.Option(None, "--seed", help="Adaptive: the strategy's seed (default 0, or the folder's plan).")
ADAPTIVE_METRIC = typer.Option(None, "--metric", help="Adaptive: accuracy the law is fitted to (autoattack_acc, or "
                               "pgd40_acc when the runs skip AutoAttack; clean_acc).")

_STOPS = {
    "budget": "no untrained run fits the budget left",
    "target_ci": "the law is pinned and alpha's interval is narrower than --target-ci",
    "grid_exhausted": "every run of the spec was chosen",
    "interrupted": "a run of the last round did not finish (its worker died or another holds it): rerun to continue",
}


def sweep_adaptive(spec: Path, out: Optional[Path], adaptive: bool, options: dict[str, Any], *, dry_run: bool,
                   no_wait: bool, as_json: bool, **sweep_options: Any) -> None:
    """``robustscale sweep --adaptive``: check the flags, run :func:`robustscale.sweep.adaptive.adaptive_sweep`,
    print its summary; exit 1 when a run failed or the last round was interrupted."""
    given = [name for name, value in options.items() if value is not None]
    if not adaptive:
        raise UserError(f"--{given[0].replace('_', '-')} belongs to an adaptive sweep: add --adaptive")
    if dry_run:
        raise UserError("--dry-run with --adaptive: an adaptive sweep's rounds depend on its results; drop --adaptive "
                        "to list every candidate run with its planned FLOPs")
    if no_wait:
        raise UserError("--no-wait with --adaptive: each round waits for the last one's results; drop --no-wait")
    from robustscale.sweep.adaptive import adaptive_sweep

    summary = adaptive_sweep(spec, out, **options, **sweep_options, progress=not as_json)
    if as_json:
        print_json(summary)
    else:
        _print_adaptive(summary)
    if summary["failed"] or summary["stop_reason"] == "interrupted":
        raise typer.Exit(1)


def _print_adaptive(summary: dict) -> None:
    law = "no law yet" if summary["alpha"] is None else f"alpha {summary['alpha']:.4g}"
    if summary["alpha_ci"] is not None:
        law += f" (95% interval [{summary['alpha_ci'][0]:.4g}, {summary['alpha_ci'][1]:.4g}])"
    frac, rounds = summary["compute_frac"], len(summary["rounds"])
    typer.echo(f"{summary['out']}: adaptive sweep ({summary['strategy']}), {rounds} round{'s' if rounds != 1 else ''}, "
               f"{len(summary['chosen'])} of {summary['candidates']} runs chosen ({len(summary['runs_trained'])} "
               f"trained now), {summary['spent_flops']:.3g} train FLOPs"
               f"{'' if frac is None else f' ({frac:.0%} of the grid)'}; {law}")
    reason = summary["stop_reason"]
    typer.echo(f"stopped: {reason}: {_STOPS.get(reason, '')}")
    if summary.get("not_pinned"):
        typer.echo(f"the runs do not pin the law: {'; '.join(summary['not_pinned'])}")
    for rid, why in summary["reasons"].items():
        typer.echo(f"failed {rid}: {why}", err=True)


def replay(
    table: Path = TABLE,
    strategy: str = typer.Option("envelope", "--strategy", help=STRATEGY_HELP),
    budget_frac: float = typer.Option(0.2, "--budget-frac", help="Share of the grid's total train_flops to spend."),
    seeds: int = typer.Option(8, "--seeds", min=1, max=MAX_REPLAY_SEEDS, help="Seeds to replay (0, 1, ...)."),
    first_seed: int = typer.Option(0, "--first-seed", min=0, max=SEED_MAX, help="First seed."),
    batch_size: int = typer.Option(1, "--batch-size", min=1, help="Runs chosen per round (a live sweep's workers)."),
    target_ci: Optional[float] = typer.Option(None, "--target-ci", help="Stop a seed once the law is pinned and "
                                              "alpha's 95% interval is narrower than this (as sweep --adaptive)."),
    bootstrap: int = typer.Option(1000, "--bootstrap", min=2, help="Bootstrap resamples of each 95% interval."),
    mapping: Optional[List[str]] = MAPPING,
    bins: int = BINS,
    min_acc: Optional[float] = MIN_ACC,
    metric: str = METRIC,
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Replay a strategy on a finished table (choosing a run reveals its row and spends its FLOPs); compare alphas."""
    from robustscale.analysis.replay import replay as run_replay

    result = run_replay(_table(table, mapping), strategy, budget_frac=budget_frac, seeds=seeds,
                        first_seed=first_seed, batch_size=batch_size, metric=metric, bins=bins, min_acc=min_acc,
                        target_ci=target_ci, bootstrap=bootstrap)
    if as_json:
        return print_json(result)
    typer.echo(f"{result['n_candidates']} runs in the grid, full-table alpha {result['full_alpha']:.5g}"
               f"{_interval(result['full_alpha_ci'])}; strategy {strategy}, budget {budget_frac:g} of the grid's FLOPs"
               f"{'' if target_ci is None else f', or until pinned with an interval under {target_ci:g}'}")
    for episode in result["seeds"]:
        alpha = "no law" if episode["alpha"] is None else f"alpha {episode['alpha']:.5g}"
        error = "" if episode["alpha_error"] is None else f" (error {episode['alpha_error']:.2g})"
        why = ", ".join(reason.split(":")[0] for reason in episode["not_pinned"])
        typer.echo(f"  seed {episode['seed']}: {alpha}{_interval(episode['alpha_ci'])}{error}, {episode['runs']} "
                   f"runs, {episode['compute_frac']:.3f} of the compute, stop {episode['stop_reason']}"
                   f"{'' if episode['pinned'] else f'; not pinned: {why}'}")
    median = result["median_alpha_error"]
    typer.echo(f"median alpha error {'n/a' if median is None else format(median, '.2g')}, median runs "
               f"{result['median_runs']:g}, median compute {result['median_compute_frac']:.3f}; the 95% interval "
               f"holds the full-table alpha in {sum(e['covered'] for e in result['seeds'])} of {len(result['seeds'])} "
               "seeds")


def _interval(ci: Optional[list]) -> str:
    return "" if ci is None else f" [{ci[0]:.4g}, {ci[1]:.4g}]"


def register(app: typer.Typer) -> None:
    """Add ``replay`` to the ``robustscale`` app."""
    app.command("replay")(replay)
