"""Adaptive sweeps replayed on the paper's 319 runs: alpha recovered per strategy and share of the grid's compute.

    git -C /path/to/timm-adv-training show HEAD:results.csv > results.csv     # the paper's table (not shipped)
    python benchmarks/adaptive_replay.py results.csv                           # all strategies, 0.1 0.2 0.3, 8 seeds
    python benchmarks/adaptive_replay.py results.csv --strategies envelope random --fracs 0.2 --seeds 8 --jobs 2
    python benchmarks/adaptive_replay.py results.csv --write-table paper.csv   # then: robustscale replay paper.csv ...

The paper's ``results.csv`` (timm-adv-training) is converted to robustscale's columns first: ``train_flops`` there is
TFLOPs per epoch on one of 4 ranks, so a run's total is ``train_flops * 1e12 * 4 * epochs``; accuracies are percent
there and fractions here; ``_dm`` models use SiLU (the paper's DeepMind-style WideResNets), the others ReLU; EMA was
used exactly in the 400-epoch runs. A table already in robustscale's columns is used as it is. Each (strategy,
budget) cell is :func:`robustscale.analysis.replay.replay`, i.e. exactly ``robustscale replay TABLE --strategy NAME
--budget-frac F --seeds N``.
"""

from __future__ import annotations

import argparse
import json
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pandas as pd

from robustscale.analysis import read_table
from robustscale.analysis.adaptive import STRATEGIES
from robustscale.analysis.replay import replay

PAPER_COLUMNS = {"model_parameters", "aa_robust_acc", "at", "at_steps", "synthetic_data", "epochs", "train_flops"}


def from_paper(raw: pd.DataFrame) -> pd.DataFrame:
    """The paper's results.csv under robustscale's column names, with train_flops as run totals."""
    return pd.DataFrame({
        "run_id": [f"paper-{i:03d}" for i in range(len(raw))], "status": "done", "model": raw["model"],
        "params": raw["model_parameters"], "activation": ["silu" if str(m).endswith("_dm") else "relu"
                                                          for m in raw["model"]],
        "loss": ["at" if v == "pgd" else "trades" for v in raw["at"]], "attack_steps": raw["at_steps"],
        "epochs": raw["epochs"], "ema": raw["epochs"] == 400, "synthetic": raw["synthetic_data"],
        "clean_acc": raw["eval_acc"] / 100, "pgd40_acc": raw["pgd40_robust_acc"] / 100,
        "autoattack_acc": raw["aa_robust_acc"] / 100,
        "train_flops": raw["train_flops"] * 1e12 * 4 * raw["epochs"],  # TFLOPs/epoch on 1 of 4 ranks -> run total
        "cost_usd": raw["train_electricity_cost"], "co2_kg": raw["train_emissions"],
    })


def load(path: Path) -> pd.DataFrame:
    raw = pd.read_csv(path)
    table = from_paper(raw) if PAPER_COLUMNS <= set(raw.columns) else read_table(path)
    table.attrs["source"] = str(path)
    return table


def cell(path: Path, strategy: str, frac: float, seeds: int, batch_size: int) -> dict:
    start = time.perf_counter()
    result = replay(load(path), strategy, budget_frac=frac, seeds=seeds, batch_size=batch_size)
    result["wall_s"] = time.perf_counter() - start
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("table", type=Path, help="the paper's results.csv, or a table in robustscale's columns")
    ap.add_argument("--strategies", nargs="+", default=list(STRATEGIES), choices=list(STRATEGIES))
    ap.add_argument("--fracs", nargs="+", type=float, default=[0.1, 0.2, 0.3])
    ap.add_argument("--seeds", type=int, default=8)
    ap.add_argument("--batch-size", type=int, default=1)
    ap.add_argument("--jobs", type=int, default=1, help="cells replayed in parallel processes")
    ap.add_argument("--write-table", type=Path, help="write the converted table here and stop")
    ap.add_argument("--out", type=Path, help="write every cell's replay JSON here")
    args = ap.parse_args()
    if args.write_table:
        load(args.table).to_csv(args.write_table, index=False)
        return print(f"wrote {args.write_table}")
    cells = [(s, f) for f in args.fracs for s in args.strategies]
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        futures = [pool.submit(cell, args.table, s, f, args.seeds, args.batch_size) for s, f in cells]
        results = [future.result() for future in futures]
    print(f"full-table alpha {results[0]['full_alpha']:.5f}; {args.seeds} seeds; batch {args.batch_size}\n")
    print("| budget | strategy | median alpha error | seeds within 0.002 | median runs | median compute | wall |")
    print("|---|---|---|---|---|---|---|")
    for result in results:
        errors = [e["alpha_error"] for e in result["seeds"]]
        within = sum(e is not None and e <= 0.002 for e in errors)
        print(f"| {result['budget_frac']:g} | {result['strategy']} | {result['median_alpha_error']:.4f} | "
              f"{within}/{len(errors)} | {result['median_runs']:g} | {result['median_compute_frac']:.3f} | "
              f"{result['wall_s']:.0f} s |")
    if args.out:
        args.out.write_text(json.dumps(results, indent=1, default=str))


if __name__ == "__main__":
    main()
