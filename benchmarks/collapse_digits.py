"""Catastrophic overfitting on digits: which runs the collapse detector stops, when, the compute it saves, and the
final AutoAttack accuracy with ``stop`` against ``ignore``.

    OMP_NUM_THREADS=1 nice python benchmarks/collapse_digits.py [--out runs/bench-collapse] [--seeds 0 1 2]

Every recipe of :data:`RECIPES` (configs/collapse.yaml and variants: single-step recipes, some of which collapse,
and multi-step ones that must raise no alarm) trains once per seed with ``train.on_collapse=warn``: the whole run,
exactly what ``ignore`` trains (the detector only logs and records), with every alarm it would raise. A run that
alarmed trains again with ``stop`` (the default), which ends at the alarm; the trajectories are the same up to it
(same seed, same steps). Both end as a finished run does: AutoAttack (standard, ``--aa-n`` test points) on the best
checkpoint. Each run trains in its own process with one torch thread; finished runs are kept (rerun to resume).
Prints one line per run and writes ``<out>/summary.json``.

    python benchmarks/collapse_digits.py --replay RUN_DIR [RUN_DIR ...]

trains nothing: it replays the ``metrics.jsonl`` of finished runs (any recipe, any PGD steps) through the detector
with its default thresholds and prints, per run, its largest fall from the best so far (relative, and in standard
errors of the validation subset) and the alarms the defaults raise: how the defaults were chosen.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
from pathlib import Path

from robustscale.config import load_config
from robustscale.training.collapse import StopRules, Watch

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs" / "collapse.yaml"
# name -> overrides of configs/collapse.yaml (FGSM from x, eps 0.21, WRN-10-2, constant lr, no weight decay)
RECIPES = {
    "fgsm": [],  # the shipped collapse recipe
    "fgsm-rs": ["attack.random_start=true", "attack.step_size_factor=2.5"],  # FGSM-RS, step 2.5 eps: at the corner
    "fgsm-eps0.15": ["attack.eps=0.15"],  # the digits recipe's eps
    "pgd2": ["attack.steps=2", "attack.random_start=true", "attack.step_size_factor=2.5"],  # multi-step: no alarm
    "pgd3": ["attack.steps=3", "attack.random_start=true", "attack.step_size_factor=2.5"],
}


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("runs/bench-collapse"))
    ap.add_argument("--recipes", nargs="+", default=list(RECIPES), choices=list(RECIPES))
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--aa-n", type=int, default=100, help="AutoAttack test points (the same seeded ones every run)")
    ap.add_argument("--set", nargs="*", default=[], dest="overrides", help="extra config overrides key=value")
    ap.add_argument("--replay", nargs="+", type=Path, help="finished run folders: replay their logs, train nothing")
    return ap.parse_args(argv)


def replay(run_dir: Path) -> dict:
    """A finished run's log through the detector at the default thresholds (its own epochs, validation size and
    training attack), with the loop's checkpoint selection approximated by a better PGD accuracy."""
    cfg = load_config(run_dir / "config.yaml", ["train.on_collapse=warn", "train.collapse_drop=0.5",
                                                "train.collapse_sigmas=4", "train.collapse_train_drop=0.1"])
    rules, watch, n = StopRules.from_config(cfg), Watch(), cfg.data.val_size
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    rows = [r for r in rows if "val_pgd_acc" in r]
    best, fall = None, (0.0, 0.0)
    for r in rows:
        now = r["val_pgd_acc"]
        if best:
            sigma = math.sqrt((best * (1 - best) + now * (1 - now)) / n)
            fall = max(fall, ((best - now) / best, (best - now) / sigma if sigma else 0.0))
        watch.observe(rules, r["epoch"], r, improved=best is None or now > best)
        best = now if best is None else max(best, now)
    return {"run": run_dir.name, "attack_steps": cfg.attack.steps, "eps": cfg.attack.eps,
            "random_start": cfg.attack.random_start, "model": cfg.model.name, "peak": best,
            "largest_fall": round(fall[0], 2), "its_sigmas": round(fall[1], 1),
            "alarms": [(a.epoch, a.best_val_pgd_acc, a.val_pgd_acc) for a in watch.alarms]}


def train(run_dir: Path, overrides: list[str]) -> dict:
    """One run in its own process (kept when finished: rerunning the benchmark resumes it); its record."""
    record = run_dir / "record.json"
    if record.is_file() and json.loads(record.read_text()).get("status") == "done":
        return json.loads(record.read_text())
    resume = ["--resume"] if (run_dir / "config.yaml").is_file() else []
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, "-m", "robustscale", "train", str(CONFIG), *overrides, "--out", str(run_dir),
                    "--quiet", "--json", *resume], check=True, env=env, stdout=subprocess.DEVNULL)
    return json.loads(record.read_text())


def row(name: str, seed: int, full: dict, stopped: dict | None) -> dict:
    """What one recipe and seed measured: the full run's alarms, and the stopped run against it."""
    alarms = [a["epoch"] for a in full["alarms"] if a["reason"] == "catastrophic_overfitting"]
    out = {"recipe": name, "seed": seed, "attack_steps": full["config"]["attack"]["steps"],
           "epochs": full["config"]["train"]["epochs"], "alarm_epochs": alarms,
           "best_epoch_ignore": full["metrics"]["best_epoch"], "pgd_acc_ignore": full["metrics"]["pgd40_acc"],
           "autoattack_ignore": full["metrics"]["autoattack_acc"], "train_flops_ignore": full["accounting"]["train_flops"]}
    if stopped is not None:
        stop = stopped["stopped_early"] or {}
        flops = stopped["accounting"]["train_flops"]
        out.update(stop_epoch=stop.get("epoch"), best_epoch_stop=stopped["metrics"]["best_epoch"],
                   pgd_acc_stop=stopped["metrics"]["pgd40_acc"], autoattack_stop=stopped["metrics"]["autoattack_acc"],
                   train_flops_stop=flops, saved_fraction=1 - flops / out["train_flops_ignore"],
                   at_stop=stop)
    return out


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.replay:
        for run_dir in args.replay:
            print(json.dumps(replay(run_dir)))
        return
    common = [f"eval.autoattack_n={args.aa_n}", *args.overrides]
    rows = []
    for name in args.recipes:
        for seed in args.seeds:
            base = [*RECIPES[name], f"train.seed={seed}", *common]
            full = train(args.out / f"{name}-s{seed}-ignore", [*base, "train.on_collapse=warn"])
            stopped = None
            if full["alarms"]:
                stopped = train(args.out / f"{name}-s{seed}-stop", [*base, "train.on_collapse=stop"])
            rows.append(row(name, seed, full, stopped))
            print(json.dumps(rows[-1]), flush=True)
    summary = args.out / "summary.json"  # merged with an earlier call's rows (another grid, the same folder)
    old = json.loads(summary.read_text())["runs"] if summary.is_file() else []
    keep = [r for r in old if (r["recipe"], r["seed"]) not in {(n["recipe"], n["seed"]) for n in rows}]
    summary.write_text(json.dumps({"aa_n": args.aa_n, "runs": keep + rows}, indent=2))


if __name__ == "__main__":
    main()
