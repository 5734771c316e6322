"""``robustscale eval``: AutoAttack or PGD on a run folder or checkpoint, with the sanity checks in the result."""

from __future__ import annotations

from pathlib import Path
from typing import Any, List, Optional

import typer

from robustscale.enums import Attack, Norm, PGDLoss, Tracker
from robustscale.errors import UserError, shown


def parse_eps(text: Optional[str]) -> Optional[float]:
    """``"8/255"`` or ``"0.03"`` -> float; anything else is a one-line :class:`UserError`."""
    if text is None:
        return None
    from robustscale.config import parse_number

    value = parse_number(text)
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise UserError(f"--eps must be a number or a fraction such as 8/255, got '{shown(text)}'") from None
    if not 0 <= value < float("inf"):
        raise UserError(f"--eps must be a finite non-negative number, got '{shown(text)}'")
    return value


def _rows(res: dict[str, Any]) -> list[tuple[str, str]]:
    rows = [("attack", f"{res['attack']}" + (f" ({res['version']})" if "version" in res else f"-{res['steps']}")),
            ("eps", f"{res['eps']:.6g} ({res['norm']})"), ("points", str(res["n"])),
            ("clean accuracy", f"{res['clean_acc']:.2%}"), ("robust accuracy", f"{res['robust_acc']:.2%}")]
    rows += [(f"  after {name}", f"{acc:.2%}") for name, acc in (res.get("per_attack") or {}).items()]
    rows.append(("seconds", f"{res['seconds']:.1f}"))
    rows += [(f"check {c['name']}", ("ok" if c["ok"] else "FAILED") + f"  {c['detail']}") for c in res["checks"]]
    rows += [("warning", w) for w in res.get("warnings") or []]
    return rows


def _print_table(res: dict[str, Any]) -> None:
    rows = _rows(res)
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        typer.echo(f"{key:<{width}}  {value}")
    for error in res["errors"]:
        typer.echo(f"error: sanity check failed: {error}", err=True)


def eval_cmd(
    path: Path = typer.Argument(..., help="Run folder (its best weights) or a .safetensors checkpoint.",
                                show_default=False),
    attack: Attack = typer.Option(Attack.autoattack, "--attack", help="autoattack or pgd."),
    steps: int = typer.Option(20, "--steps", min=0, help="PGD steps (--attack pgd)."),
    eps: Optional[str] = typer.Option(None, "--eps", help="Radius in pixel units, e.g. 8/255 (default: the run's)."),
    norm: Optional[Norm] = typer.Option(None, "--norm", help="linf or l2 (default: the run's)."),
    n: Optional[int] = typer.Option(None, "--n", min=1, help="Evaluate a seeded subset of N test points (default: "
                                    "all)."),
    version: str = typer.Option("standard", "--version", help="AutoAttack version: standard, plus or rand."),
    attacks: Optional[str] = typer.Option(None, "--attacks", help="Custom AutoAttack list, e.g. apgd-ce,square."),
    loss: Optional[PGDLoss] = typer.Option(None, "--loss", help="PGD loss: ce or margin (default: the run's)."),
    batch_size: int = typer.Option(500, "--batch-size", min=1, help="Points per attack batch."),
    seed: int = typer.Option(0, "--seed", min=0, max=2**32 - 1, help="Seeds the subset and the attacks."),
    data_root: Optional[Path] = typer.Option(None, "--data-root", help="Folder holding the test set (default: data). "
                                             "A model file's own data.root is never used."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object on stdout."),
    tracker: Optional[List[Tracker]] = typer.Option(None, "--tracker", help="Log the result to the run's tracker run "
                                                    "too (repeatable): tensorboard, mlflow or wandb; a run folder "
                                                    "only."),
) -> None:
    """Measure robust accuracy; exits 1 when a sanity check fails. With a run folder the result is also written to
    eval/<attack>-<eps>.json there."""
    from robustscale.evaluate import evaluate

    attack_names = [a.strip() for a in attacks.split(",") if a.strip()] if attacks else None
    res = evaluate(path, attack=attack, eps=parse_eps(eps), norm=norm, steps=steps, loss=loss, n=n,
                   version=version, attacks=attack_names, batch_size=batch_size, seed=seed, data_root=data_root,
                   trackers=tracker or ())
    if as_json:
        from robustscale._cli._common import print_json

        print_json(res)
    else:
        _print_table(res)
    if not res["ok"]:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command("eval")(eval_cmd)
