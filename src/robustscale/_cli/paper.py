"""``robustscale import``: another framework's results table in robustscale's columns (the paper's, for now)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from robustscale.enums import TableFormat
from robustscale.errors import UserError

SOURCES = ("paper",)


def import_table(
    table: Path = typer.Argument(..., help="The table to import, e.g. the paper's results.csv.", show_default=False),
    source: str = typer.Option("paper", "--from", help="Whose table it is: paper (dedeswim/timm-adv-training)."),
    output: Optional[Path] = typer.Option(None, "-o", "--output", help="Write csv, parquet or json here (by "
                                          "suffix); default: csv on stdout."),
) -> None:
    """Read another framework's results into robustscale's table: run-total FLOPs, fractions, activation, ...

    The paper's results.csv holds TFLOPs per epoch on one of 4 ranks: train_flops becomes the run's total (x 1e12 x
    4 x epochs) and the per-epoch figure stays beside it (paper_train_tflops_per_epoch_rank)."""
    if source not in SOURCES:
        raise UserError(f"--from '{source}': choose one of {', '.join(SOURCES)}")
    from robustscale._cli.sweep import _emit, _format_from_suffix
    from robustscale.store.paper_table import read_paper_table

    frame = read_paper_table(table)
    fmt = _format_from_suffix(output) if output is not None else TableFormat.csv
    if output is not None:
        output.parent.mkdir(parents=True, exist_ok=True)
    if fmt is TableFormat.parquet:
        frame.to_parquet(output, index=False)
    elif fmt is TableFormat.json:
        _emit(frame.to_json(orient="records", indent=2) + "\n", output)
    else:
        _emit(frame.to_csv(index=False), output)


def register(app: typer.Typer) -> None:
    app.command("import")(import_table)
