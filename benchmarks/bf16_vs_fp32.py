"""Is the bf16 fast path as robust as fp32? Train the digits recipe in both and compare PGD-20 test accuracy.

    OMP_NUM_THREADS=2 python benchmarks/bf16_vs_fp32.py --threads 2            # 3 seeds x 2 precisions, ~10 min
    python benchmarks/bf16_vs_fp32.py --seeds 0 1 2 3 4 --out bf16.json        # on a GPU: same recipe, on the GPU

Each run is :func:`robustscale.training.train` on ``configs/digits.yaml`` (PGD-AT, WRN-10-1, 15 epochs) with
``train.precision`` fp32 or bf16 (autocast for attack and update; weights, optimiser and EMA stay fp32) and the same
seed; AutoAttack is off to keep it short. Its best checkpoint (by validation PGD-40) is then attacked with PGD-20 at
the recipe's eps on the 360 test digits by :func:`robustscale.attacks.pgd_accuracy`, which always evaluates in fp32.
"Within noise" is judged against two yardsticks printed below the table: the seed-to-seed spread of each precision,
and the binomial standard error of a difference of two accuracies on 360 points.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import tempfile
from pathlib import Path

import torch

from robustscale.attacks import pgd_accuracy
from robustscale.config import load_config
from robustscale.data import load_data
from robustscale.training import train
from robustscale.training.model_files import load_model

RECIPE = Path(__file__).resolve().parents[1] / "configs" / "digits.yaml"


def run(precision: str, seed: int, root: Path, extra: list[str]) -> dict:
    cfg = load_config(RECIPE, [f"train.precision={precision}", f"train.seed={seed}", "eval.autoattack=none", *extra])
    record = train(cfg, root / f"{precision}-{seed}", progress=False)
    model = load_model(root / f"{precision}-{seed}")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    x, y = load_data(cfg.data.dataset, "test", image_size=cfg.data.image_size)
    res = pgd_accuracy(model.to(device), x, y, eps=cfg.attack.eps, steps=20, seed=seed)
    return {"precision": precision, "seed": seed, "clean_acc": res["clean_acc"], "pgd20_acc": res["robust_acc"],
            "val_pgd40_acc": record.metrics.pgd40_acc, "train_wall_s": record.accounting.wall_s, "n": res["n"]}


def summary(rows: list[dict]) -> None:
    by = {p: [r for r in rows if r["precision"] == p] for p in ("fp32", "bf16")}
    print("\n| precision | seeds | clean acc | PGD-20 acc (mean +- sd) | train wall s (mean) |\n|---|---|---|---|---|")
    for p, rs in by.items():
        acc = [r["pgd20_acc"] for r in rs]
        sd = statistics.stdev(acc) if len(acc) > 1 else float("nan")
        print(f"| {p} | {len(rs)} | {statistics.mean(r['clean_acc'] for r in rs):.1%} | "
              f"{statistics.mean(acc):.1%} +- {sd:.1%} | {statistics.mean(r['train_wall_s'] for r in rs):.0f} |")
    diffs = [b["pgd20_acc"] - f["pgd20_acc"] for f, b in zip(by["fp32"], by["bf16"])]
    p = statistics.mean(r["pgd20_acc"] for r in rows)
    se = math.sqrt(2 * p * (1 - p) / rows[0]["n"])
    print(f"\nbf16 - fp32 PGD-20, paired by seed: {', '.join(f'{d:+.1%}' for d in diffs)} (mean "
          f"{statistics.mean(diffs):+.1%}); binomial s.e. of one difference on {rows[0]['n']} points: {se:.1%}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", type=Path, default=None, help="write the rows as JSON")
    ap.add_argument("overrides", nargs="*", help="extra section.key=value overrides for both precisions")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = []
    print("| precision | seed | clean acc | PGD-20 acc | val PGD-40 | train wall s |\n|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            for precision in ("fp32", "bf16"):
                r = run(precision, seed, Path(tmp), args.overrides)
                rows.append(r)
                print(f"| {precision} | {seed} | {r['clean_acc']:.1%} | {r['pgd20_acc']:.1%} | "
                      f"{r['val_pgd40_acc']:.1%} | {r['train_wall_s']:.0f} |", flush=True)
    summary(rows)
    if args.out:
        args.out.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
