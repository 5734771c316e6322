"""A digits sweep (1 run, or ``--runs N`` seeds) on 1 process and on 2 gloo processes (``ddp: {procs_per_node: P}``)
on this CPU: wall time, CPU time, per-epoch training time, and the load the machine was under.

    nice python benchmarks/ddp_cpu_sweep.py                 # procs 1 then 2, 5 epochs, into a temp folder
    nice python benchmarks/ddp_cpu_sweep.py --epochs 3 --procs 1 2 --json
    python benchmarks/ddp_cpu_sweep.py --procs 2 --runs 4 --epochs 1   # what starting the ranks costs a sweep

CPU is counted twice: ``cpu_s``, the whole machine's busy CPU seconds over the sweep (``/proc/stat``; meaningful on an
idle machine), and ``tree_cpu_s``, the sweep's process tree as its parent reaps it, which misses the ranks: they fork
from multiprocessing's forkserver (``robustscale/training/launch.py``), which outlives the sweep by a moment and is
reaped by init.

Each measurement is ``robustscale sweep SPEC --out FOLDER --json`` in a fresh process (what a user runs), on the
digits recipe with AutoAttack off (benchmarks/eval_ranks_cpu.py measures it over ranks). The sweep's wall time
includes starting the processes (each rank imports torch); ``epoch_s`` in ``metrics.jsonl`` is training
alone. Both runs use one torch thread per process (``OMP_NUM_THREADS=1``), as the local executor gives 2 processes
on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from suite_cpu import machine_cpu  # benchmarks/, this script's folder

REPO = Path(__file__).resolve().parents[1]


def spec_text(procs: int, epochs: int, runs: int = 1) -> str:
    return json.dumps({"base": str(REPO / "configs" / "digits.yaml"),
                       "axes": {"train.loss": ["at"], "train.seed": list(range(runs))},
                       "overrides": {"train.epochs": epochs, "eval.autoattack": "none"},
                       "ddp": {"nodes": 1, "procs_per_node": procs}})


def measure(procs: int, epochs: int, root: Path, runs: int = 1) -> dict:
    spec, out = root / f"spec{procs}.yaml", root / f"out{procs}"
    spec.write_text(spec_text(procs, epochs, runs))  # JSON is YAML
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    load_before = os.getloadavg()
    cpu_before, busy_before = resource.getrusage(resource.RUSAGE_CHILDREN), machine_cpu()[0]
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "robustscale", "sweep", str(spec), "--out", str(out), "--json"],
                          check=False, env=env, capture_output=True, text=True)
    wall_s = time.perf_counter() - t0
    time.sleep(0.5)  # the forkserver ends a moment after the sweep
    cpu_after, busy_after = resource.getrusage(resource.RUSAGE_CHILDREN), machine_cpu()[0]
    if done.returncode != 0:
        raise SystemExit(done.stderr[-2000:])
    run_dir = min(p for p in out.iterdir() if p.is_dir() and not p.name.startswith("."))
    record = json.loads((run_dir / "record.json").read_text())
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {"procs": procs, "runs": runs, "wall_s": round(wall_s, 1), "cpu_s": round(busy_after - busy_before, 1),
            "tree_cpu_s": round(cpu_after.ru_utime + cpu_after.ru_stime - cpu_before.ru_utime - cpu_before.ru_stime,
                                1),
            "train_wall_s": round(record["accounting"]["wall_s"], 1),
            "epoch_s": [round(r["epoch_s"], 2) for r in rows], "img_per_s": [round(r["img_per_s"]) for r in rows],
            "world_size": record["hardware"]["world_size"], "train_flops": record["accounting"]["train_flops"],
            "pgd40_acc": record["metrics"]["pgd40_acc"], "clean_acc": record["metrics"]["clean_acc"],
            "load_avg_before": [round(x, 2) for x in load_before],
            "load_avg_after": [round(x, 2) for x in os.getloadavg()]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--procs", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--runs", type=int, default=1,
                        help="runs in the sweep (seeds 0..N-1); one run's epochs are reported")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ddp-cpu-") as tmp:
        results = [measure(p, args.epochs, Path(tmp), args.runs) for p in args.procs]
    if args.json:
        print(json.dumps({"cores": len(os.sched_getaffinity(0)), "results": results}, indent=2))
        return
    for r in results:
        print(f"{r['procs']} process(es), {r['runs']} run(s): sweep {r['wall_s']} s wall, {r['cpu_s']} CPU-s "
              f"(machine), {r['tree_cpu_s']} (its tree); one run's training {r['train_wall_s']} s "
              f"(epochs {r['epoch_s']} s); load {r['load_avg_before']} -> {r['load_avg_after']}")


if __name__ == "__main__":
    main()
