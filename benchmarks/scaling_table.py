"""Does cost grow as FLOPs grow? Step time and achieved TFLOP/s over WideResNets x attack steps (issue 9, item 5).

    python benchmarks/scaling_table.py                      # GPU: WRN-16-4 ... WRN-70-16 x 1 ... 10 steps, bf16
    OMP_NUM_THREADS=2 python benchmarks/scaling_table.py --threads 2   # CPU: a reduced grid (2-5 min on 2 cores)
    python benchmarks/scaling_table.py --models wrn_28_10 --steps 1 10 --batch 256 --out table.json

Every row is :func:`robustscale.bench.bench` on the real training step (TRADES by default: attack + update + EMA)
with exact FlopCounterMode FLOPs. ``ps/FLOP`` is step time per FLOP; ``rel`` divides it by the first row's. A flat
``rel`` means the step costs what its FLOPs say; a rising one means time the FLOP count does not see (memory-bound
BatchNorm/activations, per-step optimiser and EMA work, launch overhead of small layers). On a GPU, a model that
does not fit at the batch asked for runs at the largest halving that fits (its rows show the batch).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from robustscale.bench import device_label, scaling_table

GPU_GRID = dict(models=["wrn_16_4", "wrn_28_4", "wrn_28_10", "wrn_34_10", "wrn_70_16"], steps=[1, 2, 3, 5, 7, 10],
                batch=512, precision="bf16", channels_last=True, iters=10, warmup=3, repeats=3, interleave=False)
# CPU: every cell resident and timed in alternating single-step windows, so other jobs' load hits all cells alike
CPU_GRID = dict(models=["wrn_16_4", "wrn_28_4", "wrn_28_10"], steps=[1, 2, 5, 10], batch=4, precision="fp32",
                channels_last=False, iters=1, warmup=1, repeats=3, interleave=True)


def _share(value) -> str:
    return "-" if value is None else f"{value:.0%}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+")
    ap.add_argument("--steps", nargs="+", type=int)
    ap.add_argument("--batch", type=int)
    ap.add_argument("--loss", default="trades", choices=("at", "trades"))
    ap.add_argument("--precision", choices=("fp32", "bf16", "fp16"))
    ap.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None)
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--iters", type=int)
    ap.add_argument("--warmup", type=int)
    ap.add_argument("--repeats", type=int, help="timed windows per cell (median reported)")
    ap.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's)")
    ap.add_argument("--out", type=Path, default=None, help="write the rows as JSON")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    grid = dict(GPU_GRID if torch.cuda.is_available() else CPU_GRID)
    for key in ("models", "steps", "batch", "precision", "channels_last", "iters", "warmup", "repeats"):
        if getattr(args, key) is not None:
            grid[key] = getattr(args, key)
    steps = grid.pop("steps")
    models = grid.pop("models")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    print(f"{device_label(device)}, torch {torch.__version__}; {args.loss}, batch {grid['batch']}, "
          f"{grid['precision']}{', channels_last' if grid['channels_last'] else ''}"
          f"{', compile' if args.compile else ''}; median of {grid['repeats']} windows of {grid['iters']} steps"
          f"{', windows of all cells alternating' if grid['interleave'] else ''}")
    print("| model | attack steps | batch | GFLOP/step | step s | TFLOP/s | MFU | img/s | ps/FLOP | rel | CPU share |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    rows = scaling_table(models, steps, loss=args.loss, compile=args.compile, device=device, **grid)
    for row in rows:
        print(f"| {row['model']} | {row['steps']} | {row['batch']} | {row['flops_per_step'] / 1e9:.0f} | "
              f"{row['step_s']:.3f} | {row['tflops']:.3f} | {row['mfu']:.1%} | {row['img_per_s']:.1f} | "
              f"{row['ps_per_flop']:.2f} | {row['rel_time_per_flop']:.2f} | {_share(row['cpu_share'])} |")
    if args.out:
        args.out.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
