"""A live adaptive sweep against the full grid of the same spec: wall time, compute, and the alpha each one fits.

    nice python benchmarks/adaptive_live.py --out /tmp/adaptive-bench                  # digits-adaptive.yaml, 0.3
    nice python benchmarks/adaptive_live.py --spec SPEC --budget-frac 0.2 --workers 2 --out DIR

Both sweeps are the command line a user would type, in a subprocess, one after the other on the same machine:
``robustscale sweep SPEC --adaptive --budget-flops F --json`` with F = ``--budget-frac`` of the grid's planned train
FLOPs (the dry run's ``planned_train_flops``), then ``robustscale sweep SPEC --json``. Alpha is fitted exactly as
``robustscale fit`` does (envelope law, 19 bins, 1000-draw bootstrap, seed 0) on each folder's results table, on the
adaptive sweep's metric. The load average before and after is printed: on a shared machine it moves the walls.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from robustscale.analysis.adaptive_law import law_interval
from robustscale.store.results import results_table
from robustscale.sweep.run import plan_runs

REPO = Path(__file__).resolve().parents[1]


def timed_sweep(spec: Path, out: Path, *extra: str) -> tuple[float, dict]:
    """Run ``robustscale sweep`` in a subprocess; its wall seconds and its ``--json`` summary."""
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "robustscale", "sweep", str(spec), "--out", str(out), "--json",
                           *extra], capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    if proc.returncode not in (0, 1):
        raise SystemExit(f"sweep failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}")
    return wall, json.loads(proc.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", type=Path, default=REPO / "configs/sweeps/digits-adaptive.yaml")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--budget-frac", type=float, default=0.3)
    parser.add_argument("--strategy", default="envelope")
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()

    grid_flops = sum(r["planned_train_flops"] for r in plan_runs(args.spec)["runs"])
    load_before = os.getloadavg()
    budget = args.budget_frac * grid_flops
    adaptive_wall, adaptive = timed_sweep(args.spec, args.out / "adaptive", "--adaptive", "--strategy",
                                          args.strategy, "--budget-flops", f"{budget:.6g}",
                                          "--workers", str(args.workers))
    full_wall, full = timed_sweep(args.spec, args.out / "full", "--workers", str(args.workers))
    metric = adaptive["metric"]
    full_table = results_table(args.out / "full")
    full_law = law_interval(full_table, metric=metric)
    rows = [
        ("full grid", full_wall, len(full["done"]) + len(full["failed"]),
         float(full_table["train_flops"].sum()), full_law),
        (f"adaptive ({args.strategy}, {args.budget_frac:g})", adaptive_wall, len(adaptive["chosen"]),
         adaptive["spent_flops"], {"alpha": adaptive["alpha"], "alpha_ci": adaptive["alpha_ci"]}),
    ]
    print(f"load average before {load_before[0]:.1f}, after {os.getloadavg()[0]:.1f}; metric {metric}; "
          f"{len(adaptive['rounds'])} rounds, stop: {adaptive['stop_reason']}")
    print("| sweep | wall | runs | train FLOPs | alpha [95% interval] |\n|---|---|---|---|---|")
    for name, wall, runs, flops, law in rows:
        ci = law["alpha_ci"]
        alpha = "no law" if law["alpha"] is None else f"{law['alpha']:.4f}"
        interval = "" if ci is None else f" [{ci[0]:.4f}, {ci[1]:.4f}]"
        print(f"| {name} | {wall:.0f} s | {runs} | {flops:.3g} ({flops / full_table['train_flops'].sum():.0%}) "
              f"| {alpha}{interval} |")


if __name__ == "__main__":
    main()
