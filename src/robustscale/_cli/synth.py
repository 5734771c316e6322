"""``robustscale synth``: synthetic training data for the embedded dataset, in the DDPM release format."""

from __future__ import annotations

from pathlib import Path

import typer


def synth(
    dataset: str = typer.Option("digits", "--dataset", help="Dataset to model (digits)."),
    n: int = typer.Option(20000, "--n", help="Number of images to draw."),
    out: Path = typer.Option(..., "-o", "--out", help="Output .npz (image uint8 NHWC, label)."),
    split: str = typer.Option("train", "--split", help="Split to fit on: only 'train' is allowed."),
    seed: int = typer.Option(0, "--seed", min=0, max=2**32 - 1, help="Seed of the density model and the draw."),
) -> None:
    """Fit a class-conditional density model on the training split and sample new labelled images."""
    from robustscale.data.generate import synthesize

    path, count = synthesize(dataset, n, out, split=split, seed=seed)
    typer.echo(f"wrote {count} synthetic {dataset} images to {path}")


def register(app: typer.Typer) -> None:
    app.command("synth")(synth)
