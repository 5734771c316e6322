"""``robustscale flops`` (per-sample FLOPs of a model and loss) and ``robustscale budget`` (a run's cost, before it
is trained)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, List, Optional

import typer

from robustscale.enums import Loss

def flops(
    model: str = typer.Argument(..., help="Model name: wrn_28_10, wrn_70_16, any wrn_D_W or timm model.",
                                show_default=False),
    image_size: int = typer.Option(32, "--image-size", min=1, help="Input height = width in pixels."),
    num_classes: int = typer.Option(10, "--num-classes", min=1),
    in_chans: int = typer.Option(3, "--in-chans", min=1),
    loss: Loss = typer.Option(Loss.at, "--loss", help="Training loss."),
    steps: int = typer.Option(10, "--steps", min=0, help="Training attack steps (ignored for standard)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """FLOPs per sample of one training step, counted with FlopCounterMode on the meta device (2 FLOPs per MAC)."""
    from robustscale.accounting.flops import step_flops

    s = step_flops(model, image_size=image_size, in_chans=in_chans, num_classes=num_classes, loss=loss, steps=steps)
    out = {"model": model, "image_size": image_size, "num_classes": num_classes, "loss": s.loss, "steps": s.steps,
           "params": s.params, "forward_flops": s.forward, "attack_step_flops": s.attack_step,
           "attack_flops_per_sample": s.attack, "update_flops_per_sample": s.update,
           "train_flops_per_sample": s.train, "paper_convention_flops_per_sample": s.paper_convention,
           "pgd40_eval_flops_per_sample": s.pgd_eval(40), "stem_flops": s.stem,
           "note": "FlopCounterMode on the meta device: matmul/conv only, 2 FLOPs per multiply-add; "
                   "paper convention = 3 x forward x passes the paper charges (docs/flops.md)"}
    if as_json:
        from robustscale._cli._common import print_json

        print_json(out)
        return
    rows = [("params", s.params, ""), ("forward", s.forward, "F"),
            ("attack step", s.attack_step, "forward + input-gradient backward"),
            ("attack", s.attack, _attack_how(s)),
            ("update", s.update, "2 x (F + full backward)" if s.loss is Loss.trades else "F + full backward"),
            ("train", s.train, "attack + update"), ("paper convention", s.paper_convention, "3 x F x passes"),
            ("PGD-40 eval", s.pgd_eval(40), "F + 40 x attack step + F")]
    _table(f"{model} {s.loss}{s.steps if s.loss is not Loss.standard else ''}, {image_size}x{image_size}: per sample",
           ["quantity", "FLOPs", "how"], [(k, _num(v), how) for k, v, how in rows])


def _attack_how(s) -> str:
    if s.loss is Loss.standard:
        return "no attack"
    return f"{s.steps} x attack step" + (" + clean target forward" if s.loss is Loss.trades else "")


def budget(
    config: Path = typer.Argument(..., help="YAML config, e.g. configs/gowal2020_wrn70_16.yaml.", show_default=False),
    overrides: Optional[List[str]] = typer.Argument(None, help="section.key=value overrides."),
    gpu: str = typer.Option("h100", "--gpu", help="GPU from the table: h100, h200, a100, v100, a10g, l4, ..."),
    gpus: Optional[int] = typer.Option(None, "--gpus", min=1, help="GPUs the run is spread over (default: nodes x "
                                       "procs per node, else 1)."),
    nodes: Optional[int] = typer.Option(None, "--nodes", min=1, help="DDP: nodes the run trains on."),
    procs_per_node: Optional[int] = typer.Option(None, "--procs-per-node", min=1,
                                                 help="DDP: processes (GPUs) per node."),
    utilization: Optional[float] = typer.Option(None, "--utilization", help="Fraction of peak reached (default 0.35)."),
    measure: bool = typer.Option(False, "--measure", help="Time the real training step here instead of the table."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """A run's FLOPs (as training counts them), GPU-hours, kWh, $ and CO2, with every assumption."""
    from robustscale.accounting.budget import plan
    from robustscale.accounting.hardware import get_gpu
    from robustscale.bench import measure_throughput
    from robustscale.errors import UserError
    from robustscale.training.run_config import load_config

    layout = (nodes or 1) * (procs_per_node or 1)
    if gpus is not None and (nodes or procs_per_node) and gpus != layout:
        raise UserError(f"--gpus {gpus} but --nodes x --procs-per-node is {layout}: give one or the other")
    gpus = gpus or layout
    cfg = load_config(config, overrides or [])
    spec_name: str | None = get_gpu(gpu).name
    measured = None
    if measure:
        measured = measure_throughput(cfg)
        if measured["device"].startswith("cpu"):
            spec_name = None
        else:
            try:
                spec_name = get_gpu(measured["device"]).name
            except UserError:
                pass  # an unlisted GPU: keep --gpu for its TDP
    out = plan(cfg, gpu=spec_name, gpus=gpus, utilization=utilization,
               measured_tflops=measured["tflops"] if measured else None)
    out["nodes"], out["procs_per_node"] = nodes or 1, procs_per_node or gpus // (nodes or 1)
    if measured:
        out["measured"] = measured
        out["assumptions"]["wall_hours"] += (f" (measured on {measured['device']}, batch {measured['batch_size']}: "
                                             "the real training step, attack, update and EMA, without data loading)")
    if as_json:
        from robustscale._cli._common import print_json

        print_json(out)
        return
    _print_budget(config, out)


def _print_budget(config: Path, out: dict[str, Any]) -> None:
    a = out["assumptions"]
    r = out["run"]
    rows = [("train FLOPs", _num(out["train_flops"]), a["train_flops"]),
            ("  attack", _num(out["attack_flops"]), ""), ("  update", _num(out["update_flops"]), ""),
            ("eval FLOPs", _num(out["eval_flops"]), a["eval_flops"]),
            ("total FLOPs", _num(out["total_flops"]), "train + eval"),
            ("paper convention", _num(out["paper_convention_flops"]), a["paper_convention_flops"]),
            ("wall hours", f"{out['wall_hours']:.4g}", a["wall_hours"]),
            ("GPU-hours", f"{out['gpu_hours']:.4g}", a["gpu_hours"])]
    if out.get("energy_kwh") is not None:
        rows += [("energy kWh", f"{out['energy_kwh']:.4g}", a["energy_kwh"]),
                 ("cost $", f"{out['cost_usd']:.4g}", a["cost_usd"]), ("CO2 kg", f"{out['co2_kg']:.4g}", a["co2_kg"])]
        if out.get("cloud_cost_usd") is not None:
            rows.append(("cloud $", f"{out['cloud_cost_usd']:.4g}", a["cloud_cost_usd"]))
    else:
        rows.append(("energy kWh", "-", a["energy_kwh"]))
    title = (f"{config}: {r['model']} {r['loss']}-{r['attack_steps']} on {r['dataset']}, {r['epochs']} epochs, "
             f"batch {r['batch_size']}, {r['precision']}")
    _table(title, ["quantity", "value", "assumption"], rows)


def _num(v: int | float) -> str:
    return f"{v:,}" if isinstance(v, int) and abs(v) < 1e15 else f"{v:.4e}"


def _table(title: str, header: list[str], rows: list[tuple]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    for i, h in enumerate(header):
        table.add_column(h, justify="right" if i == 1 else "left", overflow="fold")
    for row in rows:
        table.add_row(*(str(c) for c in row))
    Console(width=160).print(table)


def register(app: typer.Typer) -> None:
    app.command("flops")(flops)
    app.command("budget")(budget)
