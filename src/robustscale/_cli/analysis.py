"""``robustscale fit | extrapolate | plan | predict | report``: scaling laws, predictions and the report (section IV).

Thin wrappers: each command reads the table, calls one library function and prints its dict (``--json``) or a few
readable lines.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, List, Optional

import typer

from robustscale._cli._common import print_json
from robustscale.config_checks import MAX_BINS, MAX_SEED
from robustscale.enums import CostRuns, Law

TABLE_HELP = "Results table (csv/parquet/json) or a runs directory."
MAP_HELP = "CANONICAL=COLUMN: read another framework's column under robustscale's name (repeatable)."
METRIC_HELP = "Accuracy column to analyse (pgd40_acc when AutoAttack was not run)."
MIN_ACC_HELP = "Drop runs below this accuracy first (collapsed runs), in the table's unit."

# the options every analysis command shares (one definition, the same flags and help everywhere)
TABLE = typer.Argument(..., help=TABLE_HELP)
MAPPING = typer.Option(None, "--map", help=MAP_HELP)
BINS = typer.Option(19, "--bins", min=2, max=MAX_BINS, help="Equal-width bins in log10(FLOPs) for the envelope.")
MIN_ACC = typer.Option(None, "--min-acc", help=MIN_ACC_HELP)
BOOTSTRAP = typer.Option(1000, "--bootstrap", min=0, help="Bootstrap resamples for the 95% intervals.")
METRIC = typer.Option("autoattack_acc", "--metric", help=METRIC_HELP)
AS_JSON = typer.Option(False, "--json", help="Print one JSON object.")
SEED_MAX = MAX_SEED  # numpy's and scikit-learn's seeds are 32-bit


def _table(path: Path, mapping: Optional[List[str]]) -> Any:
    from robustscale.analysis import parse_mapping, read_table

    return read_table(path, parse_mapping(mapping))


def _law_line(name: str, law: dict | None) -> str:
    if law is None:
        return f"{name}: no column in the table"
    ci = law.get("ci") or {}
    alpha_ci = ci.get("alpha")
    interval = f" [{alpha_ci[0]:.4g}, {alpha_ci[1]:.4g}]" if alpha_ci else ""
    return f"{name}: C = {law['C']:.4g}, alpha = {law['alpha']:.4g}{interval}, R^2 = {law['r2']:.3f}, n = {law['n']}"


def _fmt(value: Any) -> str:
    """``None`` is a quantity the table cannot give (no such column); inf is a target the law never reaches."""
    if value is None:
        return "n/a"
    return "unreachable" if value == float("inf") else f"{value:.3g}"


RESAMPLE_SEEDS = typer.Option(True, "--resample-seeds/--no-resample-seeds", help="When the table has replicates "
                              "(runs differing only in seed), the bootstrap resamples seeds within recipes.")


def fit(
    table: Path = TABLE,
    mapping: Optional[List[str]] = MAPPING,
    bins: int = BINS,
    min_acc: Optional[float] = MIN_ACC,
    bootstrap: int = BOOTSTRAP,
    seed: int = typer.Option(0, "--seed", min=0, max=SEED_MAX, help="Seed of the bootstrap."),
    metric: Optional[str] = typer.Option(None, "--metric", help=METRIC_HELP + " Default: autoattack_acc; with "
                                         "--law nd, adv_loss when the table has it, else robust error."),
    cost_runs: CostRuns = typer.Option(CostRuns.envelope, "--cost-runs", help="Runs the cost/energy/CO2 laws are "
                                       "fitted on: envelope (the accuracy envelope's, as the paper's Fig. 3b/c) or "
                                       "all."),
    cost_envelope: bool = typer.Option(False, "--cost-envelope", hidden=True, help="Deprecated: the default now."),
    law: Law = typer.Option(Law.flops, "--law", help="flops: accuracy, cost, energy, CO2 vs FLOPs (the paper's "
                            "laws); nd: loss = E + A/N^alpha + B/D^beta in params N and samples seen D."),
    resample_seeds: bool = RESAMPLE_SEEDS,
    as_json: bool = AS_JSON,
) -> None:
    """Fit the scaling laws: accuracy envelope vs FLOPs (with intervals), a saturating alternative, cost laws;
    with --law nd, the loss as a law of model size and data (compute-optimal split)."""
    if law is Law.nd:
        return _fit_nd(table, mapping, metric, bootstrap, seed, resample_seeds, as_json)
    from robustscale.analysis import fit_all

    result = fit_all(_table(table, mapping), metric=metric or "autoattack_acc", bins=bins, min_acc=min_acc,
                     bootstrap=bootstrap, seed=seed, cost_runs=CostRuns.envelope if cost_envelope else cost_runs,
                     resample_seeds=resample_seeds)
    if as_json:
        return print_json(result)
    sat = result["saturating_law"]
    typer.echo(f"{result['n_runs']} runs, metric {result['metric']} ({result['units']['accuracy']}), FLOPs from column train_flops")
    typer.echo(_law_line("accuracy law (envelope)", result["accuracy_law"]))
    typer.echo(f"saturating law: A = {sat['A']:.4g}, B = {sat['B']:.4g}, gamma = {sat['gamma']:.4g}, "
               f"R^2 = {sat['r2']:.3f}")
    typer.echo(f"held-out RMSE: power {_fmt(result['power_law_holdout_error'])}, saturating "
               f"{_fmt(sat['holdout_error'])} (better: {result['holdout']['better']})")
    for name in ("cost_law", "energy_law", "co2_law"):
        typer.echo(_law_line(f"{name} ({result['cost_runs']} runs)", result[name]))


def _fit_nd(table: Path, mapping: Optional[List[str]], metric: Optional[str], bootstrap: int, seed: int,
            resample_seeds: bool, as_json: bool) -> None:
    from robustscale.analysis.ndlaw import nd_fit_summary

    result = nd_fit_summary(_table(table, mapping), metric=metric, bootstrap=bootstrap, seed=seed,
                            resample_seeds=resample_seeds)
    if as_json:
        return print_json(result)
    law = result["nd_law"]
    ci = law["ci"] or {}
    typer.echo(f"{law['n']} runs, metric {law['metric']}; L = E + A/N^alpha + B/D^beta (N params, D samples seen)")
    for name in ("E", "A", "B", "alpha", "beta", "a", "b"):
        interval = f" [{ci[name][0]:.4g}, {ci[name][1]:.4g}]" if name in ci else ""
        typer.echo(f"  {name:5s} = {law[name]:.4g}{interval}")
    k = "n/a (no train_flops)" if law["k"] is None else f"{law['k']:.4g}"
    typer.echo(f"R^2 (log) = {law['r2']:.4f}; k = FLOPs / (N D) = {k}; N* ~ C^{law['a']:.3f}, D* ~ C^{law['b']:.3f}")
    for note in law["identifiability"]["notes"]:
        typer.echo(f"note: {note}")


def extrapolate(
    table: Path = TABLE,
    target: float = typer.Option(..., "--target", help="Robust accuracy wanted, in the table's unit."),
    gpu: str = typer.Option("h100", "--gpu", help="GPU for GPU-years and the TDP energy estimate."),
    utilization: Optional[float] = typer.Option(None, "--utilization", help="Assumed model-FLOPs utilisation, in "
                                                "(0, 1] (default 0.35)."),
    pue: Optional[float] = typer.Option(None, "--pue", min=1.0, help="Power usage effectiveness of the TDP energy "
                                        "estimate (default: the paper's 1.58)."),
    region: Optional[str] = typer.Option(None, "--region", help="Price and carbon preset (as accounting.region)."),
    config: Optional[Path] = typer.Option(None, "--config", help="Take PUE, price and carbon from this config's "
                                          "accounting section (--pue and --region override it)."),
    mapping: Optional[List[str]] = MAPPING,
    bins: int = BINS,
    min_acc: Optional[float] = MIN_ACC,
    bootstrap: int = BOOTSTRAP,
    seed: int = typer.Option(0, "--seed", min=0, max=SEED_MAX, help="Seed of the bootstrap."),
    metric: str = METRIC,
    as_json: bool = AS_JSON,
) -> None:
    """How much compute, energy, money, CO2 and GPU time a target robust accuracy needs under each law."""
    from robustscale.accounting.hardware import check_utilization
    from robustscale.analysis import extrapolate as run_extrapolation

    check_utilization(utilization)  # before the table is read and the laws fitted

    result = run_extrapolation(_table(table, mapping), target, gpu=gpu, metric=metric, min_acc=min_acc, bins=bins,
                               bootstrap=bootstrap, seed=seed, utilization=utilization,
                               cost=_cost_model(config, pue, region))
    if as_json:
        return print_json(result)
    a = result["assumptions"]
    typer.echo(f"target {target:g} {result['metric']} ({result['units']['accuracy']}); best run "
               f"{result['observed_best']:.4g}; GPU {a['gpu']} {a['precision']} at utilisation {a['utilization']}")
    for key in ("power_law", "saturating_law"):
        law = result[key]
        lo, hi = law["interval"]
        typer.echo(f"{key}: {_fmt(law['train_flops'])} FLOPs [{_fmt(lo)}, {_fmt(hi)}], "
                   f"{_fmt(law['gpu_years']['value'])} GPU-years, {_fmt(_value(law['energy_kwh']))} kWh (law), "
                   f"${_fmt(_value(law['cost_usd']))}, {_fmt(_value(law['co2_kg']))} kg CO2 -- {law['note']}")


def _cost_model(config: Optional[Path], pue: Optional[float], region: Optional[str]) -> Any:
    """The user's cost model: a config's accounting section (``--config``), with ``--pue`` / ``--region`` on top."""
    from robustscale.accounting.cost import CostModel
    from robustscale.config import AccountingConfig, load_config

    section = load_config(config).accounting if config is not None else AccountingConfig()
    changes = {k: v for k, v in (("pue", pue), ("region", region)) if v is not None}
    return CostModel.from_config(section.model_copy(update=changes))


def plan(
    table: Path = TABLE,
    flops: Optional[float] = typer.Option(None, "--flops", help="Compute budget C, in the table's FLOP unit."),
    target: Optional[float] = typer.Option(None, "--target", help="A loss (in the law's metric) to reach: the "
                                           "cheapest budget on the frontier that reaches it."),
    target_acc: Optional[float] = typer.Option(None, "--target-acc", help="A robust accuracy to reach, through the "
                                               "table's loss-accuracy relation (table unit)."),
    dataset_size: Optional[int] = typer.Option(None, "--dataset-size", help="Unique training images, for epochs "
                                               "(default: the table's dataset's train split)."),
    mapping: Optional[List[str]] = MAPPING,
    metric: Optional[str] = typer.Option(None, "--metric", help="Loss column, or an accuracy column to use robust "
                                         "error (default: adv_loss when the table has it)."),
    bootstrap: int = typer.Option(200, "--bootstrap", min=0, help="Bootstrap refits for the intervals (max 200)."),
    seed: int = typer.Option(0, "--seed", min=0, max=SEED_MAX, help="Seed of the bootstrap."),
    resample_seeds: bool = RESAMPLE_SEEDS,
    as_json: bool = AS_JSON,
) -> None:
    """Compute-optimal robust training: model size N*, samples D*, epochs and the nearest WRN for a budget."""
    from robustscale.analysis.plan import plan as make_plan

    result = make_plan(_table(table, mapping), flops, target_loss=target, target_acc=target_acc,
                       dataset_size=dataset_size, metric=metric, bootstrap=bootstrap, seed=seed,
                       resample_seeds=resample_seeds)
    if as_json:
        return print_json(result)
    if result["target"] is not None:
        t = result["target"]
        typer.echo(f"target loss {t['loss']:.4g}: cheapest budget on the frontier {_fmt(t['flops'])} FLOPs")
    acc = "" if result["accuracy"] is None else f", {result['accuracy_metric']} {result['accuracy']:.4g}"
    if result["accuracy_in_table_range"] is False:
        acc += " (the loss lies beyond the table's: accuracy held at the table's edge)"
    epochs = "" if result["epochs"] is None else f" = {result['epochs']:.3g} epochs of {result['dataset_size']}"
    typer.echo(f"budget {result['flops']:.4g} FLOPs (k = {result['k']:.4g}): N* = {result['params']:.4g} params "
               f"(nearest {result['wrn']['name']}, {result['wrn']['params']:,}), D* = {result['samples']:.4g} "
               f"samples{epochs}; predicted {result['metric']} {result['loss']:.4g}{acc}")
    for note in result["nd_law"]["identifiability"]["notes"]:
        typer.echo(f"note: {note}")


def _value(quantity: dict | None) -> float | None:
    return None if quantity is None else quantity["value"]


def predict(
    table: Path = TABLE,
    mapping: Optional[List[str]] = MAPPING,
    min_acc: Optional[float] = MIN_ACC,
    metric: str = METRIC,
    seed: int = typer.Option(0, "--seed", min=0, max=SEED_MAX, help="Seed of the split, boosting and folds."),
    model: Optional[str] = typer.Option(None, "--model", help="Recipe: timm model name, e.g. wrn_34_20."),
    params: Optional[int] = typer.Option(None, "--params", help="Recipe: parameter count (instead of --model)."),
    activation: Optional[str] = typer.Option(None, "--activation", help="Recipe: relu, gelu or silu."),
    loss: Optional[str] = typer.Option(None, "--loss", help="Recipe: standard, at or trades."),
    steps: Optional[int] = typer.Option(None, "--steps", help="Recipe: attack steps during training."),
    ema: Optional[bool] = typer.Option(None, "--ema/--no-ema", help="Recipe: EMA of the weights."),
    synthetic: Optional[bool] = typer.Option(None, "--synthetic/--no-synthetic", help="Recipe: synthetic data."),
    epochs: Optional[int] = typer.Option(None, "--epochs", help="Recipe: training epochs."),
    dataset: Optional[str] = typer.Option(None, "--dataset", help="Recipe: dataset."),
    features: Optional[str] = typer.Option(None, "--features", help="Comma-separated feature columns (default the "
                                           "paper's six: params,synthetic,activation,loss,attack_steps,ema)."),
    as_json: bool = AS_JSON,
) -> None:
    """Predict robust accuracy from the recipe (gradient boosting); with a recipe, predict one nobody trained."""
    from robustscale.analysis import predict_summary

    recipe = {"model": model, "params": params, "activation": activation, "loss": loss, "attack_steps": steps,
              "ema": ema, "synthetic": synthetic, "epochs": epochs, "dataset": dataset}
    recipe = {k: v for k, v in recipe.items() if v is not None}
    chosen = [f.strip() for f in features.split(",") if f.strip()] if features else None
    result = predict_summary(_table(table, mapping), metric=metric, min_acc=min_acc, recipe=recipe or None, seed=seed,
                             features=chosen)
    if as_json:
        return print_json(result)
    for name, why in result["dropped_features"].items():
        typer.echo(f"left out {name}: {why}")
    typer.echo(f"{result['n']} runs, {result['metric']} ({result['units']['accuracy']}); held-out R^2 "
               f"{result['r2']:.3f}, MAE {result['mae']:.4g}; {result['cv_folds']}-fold R^2 {result['cv_r2']:.3f}")
    for feature in sorted(result["features"], key=lambda f: -result["importance"]["permutation"][f]):
        typer.echo(f"  {feature:14s} impurity {result['importance']['impurity'][feature]:.3f}  "
                   f"permutation {result['importance']['permutation'][feature]:.3f}")
    if "prediction" in result:
        lo, hi = result["interval"]
        typer.echo(f"prediction: {result['prediction']:.4g} [{lo:.4g}, {hi:.4g}] ({result['interval_method']})")


def report(
    source: Path = TABLE,
    out: Path = typer.Option(Path("report.html"), "-o", "--out", help="HTML file; a .json and figures go beside it."),
    mapping: Optional[List[str]] = MAPPING,
    min_acc: Optional[float] = MIN_ACC,
    metric: str = METRIC,
    bins: int = BINS,
    bootstrap: int = BOOTSTRAP,
    seed: int = typer.Option(0, "--seed", min=0, max=SEED_MAX, help="Seed of the bootstrap and the predictor."),
    gpu: str = typer.Option("h100", "--gpu", help="GPU for the extrapolations."),
    targets: Optional[List[float]] = typer.Option(None, "--target", help="Accuracy to extrapolate to (repeatable)."),
    as_json: bool = typer.Option(False, "--json", help="Print the report's JSON content."),
) -> None:
    """Write one self-contained HTML report (figures embedded, opens offline) and the same content as JSON."""
    from robustscale.analysis import build_report

    result = build_report(_table(source, mapping), out, metric=metric, min_acc=min_acc, bins=bins,
                          bootstrap=bootstrap, seed=seed, gpu=gpu, targets=targets or None)
    if as_json:
        return print_json(result)
    typer.echo(f"wrote {result['html']} and {result['json']} ({len(result['figures'])} figures, PNG and SVG)")


def register(app: typer.Typer) -> None:
    """Add the analysis commands to the ``robustscale`` app."""
    for command in (fit, extrapolate, plan, predict, report):
        app.command(command.__name__)(command)
