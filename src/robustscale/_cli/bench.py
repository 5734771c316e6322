"""``robustscale bench``: images/s, achieved TFLOP/s and MFU of the real training step, next to the plain path."""

from __future__ import annotations

from typing import List, Optional

import typer

from robustscale.enums import Dataset, Loss, Precision  # the config's own choices: one set everywhere


def bench(
    overrides: Optional[List[str]] = typer.Argument(None, help="section.key=value overrides (e.g. attack.eps=0.1)."),
    model: str = typer.Option("wrn_28_10", "--model", help="wrn_D_W or any timm model."),
    loss: Loss = typer.Option(Loss.trades, "--loss"),
    steps: int = typer.Option(10, "--steps", min=0, help="Attack steps per training step."),
    batch: int = typer.Option(512, "--batch", min=1, help="Images per training step."),
    dataset: Dataset = typer.Option(Dataset.cifar10, "--dataset",
                                          help="Image shape and classes (random images: no files are read)."),
    precision: Precision = typer.Option(Precision.fp32, "--precision",
                                              help="Autocast for attack and update."),
    channels_last: bool = typer.Option(False, "--channels-last", help="NHWC model and batches."),
    compile: bool = typer.Option(False, "--compile", help="torch.compile the model (minutes of warm-up)."),
    cudnn_benchmark: bool = typer.Option(True, "--cudnn-benchmark/--no-cudnn-benchmark",
                                         help="cuDNN autotuning (CUDA only)."),
    iters: int = typer.Option(10, "--iters", min=1, help="Timed steps per window."),
    warmup: int = typer.Option(3, "--warmup", min=0, help="Untimed steps first."),
    repeats: int = typer.Option(1, "--repeats", min=1, help="Timed windows; the median is reported."),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, help="CPU threads (default: torch's)."),
    device: Optional[str] = typer.Option(None, "--device", help="cpu or cuda[:N] (default: the GPU if any)."),
    baseline: bool = typer.Option(False, "--baseline", help="Also time fp32, NCHW, eager in this process."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Time real training steps (attack + update + EMA) on random data of the dataset's shape.

    Reports img/s, achieved TFLOP/s (exact FlopCounterMode count), MFU against the device's peak for the precision
    (GPU datasheet table; on CPU the best measured matmul or conv), peak memory and the device; --baseline adds the
    plain path.
    """
    from robustscale.bench import bench as run_bench, bench_config

    cfg = bench_config(model, loss=loss, steps=steps, batch=batch, dataset=dataset, precision=precision,
                       channels_last=channels_last, compile=compile, overrides=overrides or [])
    out = run_bench(cfg, iters=iters, warmup=warmup, repeats=repeats, baseline=baseline,
                    cudnn_benchmark=cudnn_benchmark, device=device, threads=threads)
    if as_json:
        from robustscale._cli._common import print_json

        print_json(out)
        return
    _print(out)


def _print(out: dict) -> None:
    typer.echo(f"{out['model']} {out['loss']}-{out['steps']}, batch {out['batch']} {out['dataset']} "
               f"{out['image_size']}x{out['image_size']}, {out['precision']}"
               f"{', channels_last' if out['channels_last'] else ''}{', compile' if out['compile'] else ''}"
               f" on {out['device']}")
    typer.echo(f"  img_per_s       {out['img_per_s']:.1f}")
    typer.echo(f"  tflops          {out['tflops']:.3f}  ({out['flops_per_step']:.3e} FLOPs per step)")
    typer.echo(f"  mfu             {out['mfu']:.1%}  (peak {out['peak_tflops']:.1f} TFLOP/s: {out['peak_source']})")
    typer.echo(f"  peak_mem_gb     {out['peak_mem_gb']:.2f}  ({out['peak_mem_source']})")
    if "speedup" in out:
        typer.echo(f"  baseline        {out['baseline_img_per_s']:.1f} img/s, {out['baseline_mfu']:.1%} MFU "
                   "(fp32, NCHW, eager)")
        typer.echo(f"  speedup         {out['speedup']:.2f}x")


def register(app: typer.Typer) -> None:
    app.command("bench")(bench)
