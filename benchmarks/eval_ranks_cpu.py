"""Evaluation split over ranks on this CPU, and what it saves at the paper's scale (a projection).

Measured: AutoAttack (standard, n = 200) and PGD-40 (n = 200) on a digits PGD-AT run, each as ``robustscale eval RUN
... --batch-size 50 --json`` in a fresh process (what a user runs), on 1 process x 2 threads, on 2 processes x 1
thread (``--procs-per-node 2``) and on 1 process x 1 thread: wall time, the attack's own seconds (the slowest rank's),
whether the numbers are equal, and the load. The batch is 50 points so that both ranks get batches (the split's unit
is a batch: 200 points in the recipe's batch of 500 would leave rank 1 idle). Then one AutoAttack in this process on a
wrapper of the model that nothing folds, counting the model's calls per attack (forward = 1, forward with input
gradient = 2 forward-equivalents) for the projection.

Projected (labelled as such in the output): AutoAttack (standard, ``eval.autoattack_n`` = 10,000 points, batch 500) of
every run of ``configs/sweeps/paper.yaml`` on H100s, from the per-point cost of each attack measured here (in
forward passes per attacked point, and the share of points each attack attacks) times each grid model's forward
FLOPs (:func:`robustscale.accounting.flops.step_flops`), at TF32 peak x the budget's utilisation; GPU-hours and the
GPU-hours left idle in each 4-GPU job at 1 rank (rank 0 attacks, three GPUs wait) and at 4 ranks (idle only where an
attack's batches do not divide by 4).

    nice python benchmarks/eval_ranks_cpu.py                  # trains the digits recipe first (AutoAttack off)
    nice python benchmarks/eval_ranks_cpu.py --run RUN --json
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

from robustscale.accounting.flops import step_flops_for_config
from robustscale.accounting.hardware import DEFAULT_UTILIZATION, get_gpu
from robustscale.attacks import run_autoattack
from robustscale.data import load_data
from robustscale.sweep import plan_runs
from robustscale.config import config_from_dict
from robustscale.training.model_files import load_model

REPO = Path(__file__).resolve().parents[1]
N_POINTS = 200
BATCH = 50
LAYOUTS = ((1, 2), (2, 1), (1, 1))  # (processes, threads each)
ATTACKS = {"autoattack": ["--attack", "autoattack"], "pgd-40": ["--attack", "pgd", "--steps", "40"]}


def train_run(root: Path) -> Path:
    run_dir = root / "digits-at"
    cmd = [sys.executable, "-m", "robustscale", "train", str(REPO / "configs" / "digits.yaml"),
           "eval.autoattack=none", "--quiet", "--out", str(run_dir)]
    subprocess.run(cmd, check=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    return run_dir


def measure(run_dir: Path, root: Path, attack: str, procs: int, threads: int) -> dict:
    """One ``robustscale eval`` on a fresh copy of the run (no result, state or record update carried over)."""
    copy = root / f"{attack}-{procs}x{threads}"
    shutil.copytree(run_dir, copy)
    cmd = [sys.executable, "-m", "robustscale", "eval", str(copy), *ATTACKS[attack], "--n", str(N_POINTS),
           "--batch-size", str(BATCH), "--json"]
    cmd += ["--procs-per-node", str(procs)] if procs > 1 else []
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    load_before, t0 = os.getloadavg(), time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall_s = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(done.stderr[-2000:])
    res = json.loads(done.stdout)
    return {"attack": attack, "procs": procs, "threads": threads, "wall_s": round(wall_s, 1),
            "attack_s": round(res["seconds"], 1), "robust_acc": res["robust_acc"], "clean_acc": res["clean_acc"],
            "per_attack": res.get("per_attack"), "eval_flops": res["eval_flops"],
            "load_before": [round(x, 2) for x in load_before], "load_after": [round(x, 2) for x in os.getloadavg()]}


class _Unfolded(nn.Module):
    """The model behind a wrapper :func:`~robustscale.models.folded.fold_batchnorm` does not know: every attack call
    goes through it, so :func:`count_model_calls` sees them all."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(x)


class _AttackNames(logging.Handler):
    """Follows pyautoattack's 'running <attack>' debug line (forwarded by our wrapper's logger)."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.current = "clean"

    def emit(self, record: logging.LogRecord) -> None:
        found = re.search(r"running (\S+)", record.getMessage())
        if found:
            self.current = found.group(1)


def passes_per_attack(run_dir: Path) -> dict:
    """AutoAttack on the run's N_POINTS points in this process, counting forward-equivalents per attack."""
    torch.set_num_threads(1)
    model = _Unfolded(load_model(run_dir))
    cfg = model.model.config
    names = _AttackNames()
    ours = logging.getLogger("robustscale.attacks.autoattack")
    ours.setLevel(logging.DEBUG)
    ours.addHandler(names)
    logging.getLogger("auto-attack").setLevel(logging.DEBUG)
    passes: dict[str, float] = {}

    def hook(_module, args):
        n = int(args[0].shape[0])
        passes[names.current] = passes.get(names.current, 0) + n * (2 if torch.is_grad_enabled() else 1)

    handle = model.register_forward_pre_hook(hook)
    try:
        res = run_autoattack(model, *load_data("digits", "test"), eps=cfg.attack.eps, n=N_POINTS,
                             seed=cfg.train.seed, batch_size=cfg.eval.batch_size)
    finally:
        handle.remove()
        ours.removeHandler(names)
    before = {"clean": 1.0, "apgd-ce": res["clean_acc"]}  # the share of points each step attacks: robust before it
    previous = res["clean_acc"]
    for attack, acc in res["per_attack"].items():
        before[attack], previous = previous, acc
    return {"robust_acc": res["robust_acc"], "clean_acc": res["clean_acc"], "attacked_share": before,
            "passes": passes, "passes_per_attacked_point": {a: passes.get(a, 0) / max(1e-9, before[a] * N_POINTS)
                                                            for a in before}}


def project(counts: dict, gpu: str = "h100", ranks: int = 4, n: int = 10_000, batch: int = 500) -> dict:
    """The projection over the paper grid (module docstring): GPU-hours of work, and per layout (1 rank attacking in
    a job of ``ranks`` GPUs, or all ``ranks`` attacking) the wall hours, the GPU-hours allocated and those idle."""
    spec, util = get_gpu(gpu), DEFAULT_UTILIZATION
    flops_per_s = spec.peak("fp32") * 1e12 * util
    work = wall_1 = wall_p = 0.0
    by_model: dict[str, float] = {}
    runs = plan_runs(REPO / "configs" / "sweeps" / "paper.yaml")["runs"]
    for run in runs:
        forward = step_flops_for_config(config_from_dict(run["config"])).forward
        for step, share in counts["attacked_share"].items():
            points = n * share
            hours = points * counts["passes_per_attacked_point"].get(step, 0.0) * forward / flops_per_s / 3600
            batches = math.ceil(points / batch)
            work += hours
            by_model[run["config"]["model"]["name"]] = by_model.get(run["config"]["model"]["name"], 0.0) + hours
            wall_1 += hours
            wall_p += hours * math.ceil(batches / ranks) / max(batches, 1)  # every batch equally long
    layouts = {f"{p}_rank{'s' if p > 1 else ''}": {"wall_hours": round(w, 1),
                                                   "allocated_gpu_hours": round(ranks * w, 1),
                                                   "idle_gpu_hours": round(ranks * w - work, 1)}
               for p, w in ((1, wall_1), (ranks, wall_p))}
    return {"label": "PROJECTION, not a measurement", "runs": len(runs), "gpus_per_job": ranks, "gpu": spec.name,
            "tflops_used": round(flops_per_s / 1e12, 1), "points": n, "batch": batch,
            "work_gpu_hours": round(work, 1), "work_gpu_hours_by_model": {k: round(v, 1) for k, v in by_model.items()},
            **layouts,
            "assumptions": (f"per-attacked-point forward-equivalents and attacked shares of the digits run measured "
                            f"here, x each grid model's forward FLOPs at 32x32, x {n} points, at {spec.name} TF32 peak "
                            f"x utilisation {util}; every batch of an attack taken as equally long; the shares are "
                            "the digits run's (its robust share after each attack), not each grid model's")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, help="A digits run folder (default: train configs/digits.yaml first).")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="eval-ranks-") as tmp:
        root = Path(tmp)
        run_dir = args.run or train_run(root)
        measured = [measure(run_dir, root, attack, procs, threads) for attack in ATTACKS
                    for procs, threads in LAYOUTS]
        counts = passes_per_attack(run_dir)
    out = {"cores": len(os.sched_getaffinity(0)), "measured": measured, "counts": counts,
           "projection": project(counts)}
    if args.json:
        print(json.dumps(out, indent=2))
        return
    for m in measured:
        print(f"{m['attack']:10s} {m['procs']} x {m['threads']} thread(s): {m['wall_s']} s wall ({m['attack_s']} s "
              f"attacking), robust {m['robust_acc']}, clean {m['clean_acc']}; load {m['load_before']} -> "
              f"{m['load_after']}")
    print(json.dumps({"counts": counts, "projection": out["projection"]}, indent=2))


if __name__ == "__main__":
    main()
