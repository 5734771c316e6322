"""The CPU figures of BENCHMARKS.md: the demo's models, the fast-path switches one by one, the done-when command.

    OMP_NUM_THREADS=2 python benchmarks/bench_cpu.py --threads 2 [--out cpu.json] [--compile]

Three tables, each a row per :func:`robustscale.bench.bench` call (real training steps: attack + update + EMA, random
images of the dataset's shape, median of ``--repeats`` timed windows):

1. the demo's models (WRN-10-1, WRN-16-1, WRN-16-2 on digits 8x8) with PGD-AT and TRADES at 1 and 3 attack steps,
   batch 64: img/s of the plain path (fp32, NCHW, eager) and of bf16 + channels_last, measured in the same process;
2. the fast-path switches one at a time on WRN-16-4 TRADES-2, CIFAR-10 shape, batch 32 (``--compile`` adds
   torch.compile, whose first step compiles for minutes on 2 cores);
3. the done-when command, ``robustscale bench --model wrn_16_4 --loss trades --steps 2 --batch 64 --iters 5
   --baseline --json``, as the library call it makes.

Variants compared in one table row (or table) run in one process with their timed windows alternating
(:func:`robustscale.bench.compare`), so a burst of load on a shared machine hits them alike; img/s is the median
window. MFU on a CPU is against the best 2048^2 matmul or 3x3 convolution measured between the windows in the step's
precision with the same threads (on AMD, MKL's fp32 GEMM runs AVX2 code, oneDNN's convolution AVX-512).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from robustscale.bench import bench, bench_config, compare

DEMO_MODELS = ("wrn_10_1", "wrn_16_1", "wrn_16_2")


def demo_models(repeats: int) -> list[dict]:
    rows = []
    for name in DEMO_MODELS:
        for loss in ("at", "trades"):
            for steps in (1, 3):
                cfg = bench_config(name, loss=loss, steps=steps, batch=64, dataset="digits", precision="bf16",
                                   channels_last=True)
                r = bench(cfg, iters=5, warmup=3, repeats=repeats, baseline=True, device="cpu")
                rows.append(r)
                print(f"| {name} | {loss}-{steps} | {r['baseline_img_per_s']:.0f} | {r['baseline_mfu']:.1%} | "
                      f"{r['img_per_s']:.0f} | {r['mfu']:.1%} | {r['speedup']:.2f}x | {r['cpu_share']:.0%} |",
                      flush=True)
    return rows


def switches(repeats: int, compile: bool) -> dict[str, dict]:
    variants = {"fp32, NCHW, eager (plain)": {}, "+ channels_last": dict(channels_last=True),
                "bf16 autocast": dict(precision="bf16"),
                "bf16 + channels_last": dict(precision="bf16", channels_last=True)}
    if compile:
        variants["bf16 + channels_last + compile"] = dict(precision="bf16", channels_last=True, compile=True)
    cfgs = {label: bench_config("wrn_16_4", loss="trades", steps=2, batch=32, dataset="cifar10", **switch)
            for label, switch in variants.items()}
    res = compare(cfgs, iters=2, warmup=3 if compile else 1, repeats=repeats, device="cpu")  # windows alternate
    plain = res["fp32, NCHW, eager (plain)"]["img_per_s"]
    for label, r in res.items():
        print(f"| {label} | {r['img_per_s']:.2f} | {r['tflops'] * 1e3:.1f} | {r['mfu']:.1%} | "
              f"{r['img_per_s'] / plain:.2f}x | {r['cpu_share']:.0%} |", flush=True)
    return res


def done_when() -> dict:
    cfg = bench_config("wrn_16_4", loss="trades", steps=2, batch=64)
    r = bench(cfg, iters=5, warmup=3, baseline=True, device="cpu")
    print(json.dumps({k: r[k] for k in ("img_per_s", "tflops", "mfu", "peak_mem_gb", "device", "baseline_img_per_s",
                                        "speedup", "cpu_share", "load_avg_1m")}, indent=2), flush=True)
    return r


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5, help="timed windows per variant (median reported)")
    ap.add_argument("--compile", action="store_true", help="add a torch.compile row to the switches table")
    ap.add_argument("--only", choices=("demo", "switches", "done-when"), default=None)
    ap.add_argument("--out", type=Path, default=None, help="write every row as JSON")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    out: dict = {}
    if args.only in (None, "demo"):
        print("| model | loss | fp32 img/s | fp32 MFU | bf16+CL img/s | bf16+CL MFU | speedup | CPU share |")
        print("|---|---|---|---|---|---|---|---|")
        out["demo"] = demo_models(args.repeats)
    if args.only in (None, "switches"):
        print("\n| WRN-16-4 TRADES-2, 32x32, batch 32 | img/s | GFLOP/s | MFU | vs plain | CPU share |")
        print("|---|---|---|---|---|---|")
        out["switches"] = switches(args.repeats, args.compile)
    if args.only in (None, "done-when"):
        print("\nrobustscale bench --model wrn_16_4 --loss trades --steps 2 --batch 64 --iters 5 --baseline --json")
        out["done_when"] = done_when()
    if args.out:
        args.out.write_text(json.dumps(out, indent=2, default=str))


if __name__ == "__main__":
    main()
