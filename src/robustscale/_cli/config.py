"""``robustscale config``: print the resolved config, so users see exactly what a run will use."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer


def config(
    path: Path = typer.Argument(..., help="YAML config, e.g. configs/digits.yaml.", show_default=False),
    overrides: Optional[List[str]] = typer.Argument(None, help="section.key=value overrides, e.g. train.epochs=10."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of YAML."),
) -> None:
    """Print the resolved config (defaults and dataset defaults filled in) as YAML."""
    from robustscale.config import config_to_dict, config_to_yaml
    from robustscale.training.run_config import load_config

    cfg = load_config(path, overrides or [])
    if as_json:
        from robustscale._cli._common import print_json

        print_json(config_to_dict(cfg))
    else:
        typer.echo(config_to_yaml(cfg), nl=False)


def register(app: typer.Typer) -> None:
    app.command("config")(config)
