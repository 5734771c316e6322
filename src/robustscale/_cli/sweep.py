"""``robustscale sweep`` (a grid of runs, resumable, concurrent-safe) and ``robustscale results`` (the table)."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import List, Optional

import typer

from robustscale._cli import adaptive as _adaptive
from robustscale.enums import ExecutorKind, TableFormat, Tracker
from robustscale.errors import UserError

# the columns `results --format table` shows (csv/parquet/json carry every column)
_SHOWN = ("run_id", "status", "model", "activation", "loss", "attack_steps", "epochs", "ema", "synthetic", "clean_acc",
          "pgd40_acc", "autoattack_acc", "train_flops", "energy_kwh", "reason")


def sweep(
    spec: Path = typer.Argument(..., help="Sweep spec (YAML), e.g. configs/sweeps/demo.yaml.", show_default=False),
    out: Optional[Path] = typer.Option(None, "--out", help="Folder of the run folders (default: the spec's out)."),
    executor: ExecutorKind = typer.Option(ExecutorKind.local, "--executor", help="local or slurm (submitit)."),
    workers: Optional[int] = typer.Option(None, "--workers", min=1,
                                          help="Local parallel workers (one per GPU / CPU share)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="List the runs and their planned FLOPs; train nothing."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON (the plan, or the summary) instead of text."),
    retry_failed: bool = typer.Option(False, "--retry-failed", help="Train failed runs again (from their checkpoint)."),
    stale_after: Optional[float] = typer.Option(None, "--stale-after", help="Seconds without heartbeat after which "
                                                "another worker's claim is taken over (default 600)."),
    partition: Optional[str] = typer.Option(None, "--partition", help="Slurm partition."),
    account: Optional[str] = typer.Option(None, "--account", help="Slurm account."),
    gpus: Optional[int] = typer.Option(None, "--gpus", help="Slurm GPUs per run."),
    time_min: Optional[int] = typer.Option(None, "--time-min", help="Slurm time limit per job, minutes (a run that "
                                           "needs longer is requeued and resumes)."),
    no_wait: bool = typer.Option(False, "--no-wait", help="Slurm: submit the jobs and return."),
    adaptive: bool = _adaptive.ADAPTIVE,
    strategy: Optional[str] = _adaptive.ADAPTIVE_STRATEGY,
    budget_flops: Optional[float] = _adaptive.BUDGET_FLOPS,
    budget_gpu_hours: Optional[float] = _adaptive.BUDGET_GPU_HOURS,
    target_ci: Optional[float] = _adaptive.TARGET_CI,
    seed: Optional[int] = _adaptive.ADAPTIVE_SEED,
    metric: Optional[str] = _adaptive.ADAPTIVE_METRIC,
    nodes: Optional[int] = typer.Option(None, "--nodes", min=1, help="DDP: nodes per run (Slurm; default: the "
                                        "spec's ddp.nodes, else 1)."),
    procs_per_node: Optional[int] = typer.Option(None, "--procs-per-node", min=1, help="DDP: processes per node "
                                                 "and run, one per GPU (default: the spec's ddp.procs_per_node, "
                                                 "else 1)."),
    gpu: str = typer.Option("h100", "--gpu", help="--dry-run: the GPU model to plan wall time and GPU-hours on."),
    tracker: Optional[List[Tracker]] = typer.Option(None, "--tracker", help="Log every run to this experiment "
                                                    "tracker too (repeatable): tensorboard, mlflow or wandb; runs "
                                                    "grouped under the sweep's name, named by run id."),
) -> None:
    """Train every run of a sweep spec: done runs are skipped, interrupted ones resumed, each run trained once.
    With --adaptive, only the runs a strategy chooses, in rounds, until a budget (README "Adaptive sweeps")."""
    from robustscale.sweep import sweep as run_sweep

    chosen_by = {"strategy": strategy, "budget_flops": budget_flops, "budget_gpu_hours": budget_gpu_hours,
                 "target_ci": target_ci, "seed": seed, "metric": metric}
    slurm = {k: v for k, v in {"partition": partition, "account": account, "gpus": gpus, "time": time_min}.items()
             if v is not None}
    if adaptive or any(v is not None for v in chosen_by.values()):
        return _adaptive.sweep_adaptive(spec, out, adaptive, chosen_by, dry_run=dry_run, no_wait=no_wait,
                                        as_json=as_json, executor=executor, workers=workers, slurm=slurm,
                                        retry_failed=retry_failed, stale_s=stale_after, nodes=nodes,
                                        procs_per_node=procs_per_node, trackers=tracker)
    if dry_run:
        plan = run_sweep(spec, dry_run=True, nodes=nodes, procs_per_node=procs_per_node, gpu=gpu)
        _print_plan(plan, as_json)
        return
    summary = run_sweep(spec, out, executor=executor, workers=workers, retry_failed=retry_failed,
                        stale_s=stale_after, slurm=slurm, wait=not no_wait, progress=not as_json, nodes=nodes,
                        procs_per_node=procs_per_node, trackers=tracker)
    _print_summary(summary, as_json)
    if summary["failed"]:
        raise typer.Exit(1)


def _print_plan(plan: dict, as_json: bool) -> None:
    if as_json:
        from robustscale._cli._common import print_json

        print_json(plan)
        return
    for run in plan["runs"]:
        typer.echo(f"{run['run_id']:60s} {run['planned_flops']:.3e} FLOPs {run['gpus']:3d} GPUs "
                   f"{run['planned_wall_hours']:9.3g} h wall {run['planned_gpu_hours']:9.3g} GPU-h")
    typer.echo(f"{len(plan['runs'])} runs, {plan['total_planned_flops']:.3e} FLOPs, "
               f"{plan['total_planned_gpu_hours']:.4g} GPU-hours planned on {plan['gpu']} x {plan['gpus_per_run']} "
               f"per run ({plan['total_planned_wall_hours']:.4g} h of wall time one run after another)")


def _print_summary(summary: dict, as_json: bool) -> None:
    if as_json:
        from robustscale._cli._common import print_json

        print_json(summary)
        return
    typer.echo(f"{summary['out']}: {summary['runs']} runs, {len(summary['done'])} done, {len(summary['failed'])} "
               f"failed, {len(summary['running'])} running, {len(summary['pending'])} pending "
               f"(trained now: {len(summary['trained'])}, skipped: {len(summary['skipped'])})")
    if summary["submitted"]:
        typer.echo(f"submitted {len(summary['submitted'])} jobs; rerun the sweep (or `robustscale results "
                   f"{summary['out']}`) to see where they are")
    for rid, reason in summary["reasons"].items():
        typer.echo(f"failed {rid}: {reason}", err=True)
    if summary["failed"]:
        typer.echo("rerun with --retry-failed to train the failed runs again", err=True)


def results(
    runs_dir: Path = typer.Argument(..., help="A sweep's --out folder (or any folder of run folders).",
                                    show_default=False),
    fmt: Optional[TableFormat] = typer.Option(None, "--format", help="table, csv, parquet or json (default: from "
                                              "-o, else table)."),
    output: Optional[Path] = typer.Option(None, "-o", "--output", help="Write to this file instead of stdout."),
    by_recipe: bool = typer.Option(False, "--by-recipe", help="One row per recipe (runs differing only in seed): "
                                   "mean, std, n and a 95% t-interval of every metric."),
) -> None:
    """One row per run: config knobs, accuracies (fractions), FLOPs, GPU-hours, energy, cost and CO2."""
    from robustscale.store.results import results_table

    fmt = fmt or _format_from_suffix(output)
    if fmt is TableFormat.parquet and output is None:
        raise UserError("--format parquet is binary: add -o FILE.parquet")
    table = results_table(runs_dir)
    if by_recipe:
        from robustscale.analysis.replicates import by_recipe as summarise

        table = summarise(table)
        if fmt is TableFormat.table:
            return _emit(_render_recipes(table), output)
    if output is not None:
        output.parent.mkdir(parents=True, exist_ok=True)
    if fmt is TableFormat.parquet:
        table.to_parquet(output, index=False)
    elif fmt is TableFormat.csv:
        _emit(table.to_csv(index=False), output)
    elif fmt is TableFormat.json:
        _emit(table.to_json(orient="records", indent=2) + "\n", output)
    else:
        _emit(_render(table), output)


def _format_from_suffix(output: Optional[Path]) -> TableFormat:
    suffix = output.suffix.lower().lstrip(".") if output is not None else ""
    return {"csv": TableFormat.csv, "parquet": TableFormat.parquet, "pq": TableFormat.parquet,
            "json": TableFormat.json}.get(suffix, TableFormat.table)


def _emit(text: str, output: Optional[Path]) -> None:
    if output is None:
        typer.echo(text, nl=False)
    else:
        from robustscale.store.atomic import write_text

        write_text(output, text)


def _cell(value) -> str:
    import pandas as pd

    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return ""
    if isinstance(value, float):
        return f"{value:.3e}" if value and not 1e-3 <= abs(value) < 1e4 else f"{value:.4f}"
    return str(value)


def _render(table) -> str:
    from io import StringIO

    from rich.console import Console
    from rich.table import Table

    view = Table(show_header=True, header_style="bold", show_lines=False)
    shown = [*_SHOWN, *(c for c in ("adaptive_round",) if c in table)]  # an adaptive sweep: the round that chose it
    if table["stop_epoch"].notna().any():  # some run stopped early: why, and at which epoch
        shown[shown.index("reason"):shown.index("reason")] = ["stop_reason", "stop_epoch"]
    for column in shown:
        view.add_column(column, overflow="fold")
    for row in table[shown].itertuples(index=False):
        view.add_row(*(_cell(v) for v in row))
    counts = table["status"].value_counts().to_dict()
    buffer = StringIO()
    width = shutil.get_terminal_size((240, 24)).columns if sys.stdout.isatty() else 240
    console = Console(file=buffer, width=width, force_terminal=False)
    console.print(view)
    stops = table["stop_reason"].value_counts().to_dict()
    console.print(f"{len(table)} runs: " + ", ".join(f"{n} {status}" for status, n in counts.items())
                  + ("; stopped early: " + ", ".join(f"{n} {why}" for why, n in stops.items()) if stops else ""))
    return buffer.getvalue()


_RECIPE_SHOWN = ("model", "loss", "attack_steps", "epochs", "ema", "synthetic", "n", "seeds")
_RECIPE_METRICS = ("clean_acc", "pgd40_acc", "autoattack_acc", "adv_loss")


def _spread(row, metric: str) -> str:
    """``0.6412 ± 0.0123 [0.6107, 0.6717]``: mean ± std [95% t-interval]; a single run has no spread."""
    import pandas as pd

    mean, std = row[f"{metric}_mean"], row[f"{metric}_std"]
    if pd.isna(mean):
        return ""
    if pd.isna(std):
        return f"{mean:.4f}"
    return f"{mean:.4f} ± {std:.4f} [{row[f'{metric}_ci_lo']:.4f}, {row[f'{metric}_ci_hi']:.4f}]"


def _render_recipes(table) -> str:
    from io import StringIO

    from rich.console import Console
    from rich.table import Table

    if table.empty:
        return "no done runs\n"
    knobs = [c for c in _RECIPE_SHOWN if c in table]
    metrics = [m for m in _RECIPE_METRICS if f"{m}_mean" in table and table[f"{m}_mean"].notna().any()]
    view = Table(show_header=True, header_style="bold")
    for column in ("recipe_id", *knobs, *metrics):
        view.add_column(column, overflow="fold")
    for _, row in table.iterrows():
        view.add_row(str(row["recipe_id"]), *(_cell(row[k]) for k in knobs), *(_spread(row, m) for m in metrics))
    buffer = StringIO()
    console = Console(file=buffer, width=shutil.get_terminal_size((240, 24)).columns if sys.stdout.isatty() else 240,
                      force_terminal=False)
    console.print(view)
    console.print(f"{len(table)} recipes; metric cells: mean ± std (n - 1) [95% t-interval of the mean over seeds]")
    return buffer.getvalue()


def register(app: typer.Typer) -> None:
    app.command("sweep")(sweep)
    app.command("results")(results)
