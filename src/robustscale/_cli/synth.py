"""``robustscale synth``: synthetic training data for the embedded dataset, in the DDPM release format."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Optional

import typer

from robustscale.datasets import MAX_SYNTH_IMAGES


def synth(
    dataset: str = typer.Option("digits", "--dataset", help="Dataset to model (digits)."),
    n: int = typer.Option(20000, "--n", min=1, max=MAX_SYNTH_IMAGES, help="Number of images to draw (held in "
                          "memory)."),
    out: Path = typer.Option(..., "-o", "--out", help="Output .npz (image uint8 NHWC, label)."),
    split: str = typer.Option("train", "--split", help="Split to fit on: only 'train' is allowed."),
    seed: int = typer.Option(0, "--seed", min=0, max=2**32 - 1, help="Seed of the density model and the draw."),
    method: str = typer.Option("ddpm", "--method",
                               help="ddpm (a class-conditional diffusion model, EDM recipe: minutes on one CPU core; "
                                    "its samples beat the GMM's in adversarial training, BENCHMARKS.md) or gmm (PCA + "
                                    "Gaussian mixture per class, seconds)."),
    train_steps: Optional[int] = typer.Option(None, "--train-steps", help="ddpm: training steps (default: recipe)."),
    guidance: Optional[float] = typer.Option(None, "--guidance",
                                             help="ddpm: classifier-free guidance weight (1: none; default: recipe)."),
    holdout: int = typer.Option(200, "--holdout", min=0,
                                help="Validation images left out of the fit: a run with data.val_size up to this "
                                     "never early-stops on an image the generator saw."),
) -> None:
    """Fit a class-conditional generative model on the training split and sample new labelled images."""
    from robustscale.data.generate import synthesize

    recipe = None
    if train_steps is not None or guidance is not None:
        if method != "ddpm":
            from robustscale.errors import UserError

            raise UserError(f"synth --train-steps and --guidance apply to --method ddpm only (got --method {method})")
        recipe = _recipe(train_steps, guidance)
    path, count = synthesize(dataset, n, out, split=split, seed=seed, method=method, recipe=recipe, log=_progress,
                             holdout=holdout)
    typer.echo(f"wrote {count} synthetic {dataset} images ({method}) to {path}")


def _progress(step: int, loss: float, seconds: float) -> None:
    typer.echo(f"ddpm: training step {step}, loss {loss:.3f}, {seconds:.0f} s", err=True)


def _recipe(train_steps: Optional[int], guidance: Optional[float]):
    from dataclasses import replace

    from robustscale.data.diffusion import DiffusionRecipe
    from robustscale.errors import UserError

    recipe = DiffusionRecipe()
    if train_steps is not None:
        if train_steps < 1:
            raise UserError(f"synth --train-steps must be at least 1, got {train_steps}")
        recipe = replace(recipe, train_steps=train_steps)
    if guidance is not None:
        if not (math.isfinite(guidance) and guidance >= 0):
            raise UserError(f"synth --guidance must be a finite non-negative number, got {guidance}")
        recipe = replace(recipe, guidance=guidance)
    return recipe


def register(app: typer.Typer) -> None:
    app.command("synth")(synth)
