"""Standard AutoAttack against its APGD-CE + APGD-T on every run of a demo, on the same test points.

    python benchmarks/demo_autoattack.py runs/demo/runs [--workers 2] [--json FILE]

For every finished run in the folder: its best checkpoint (EMA weights when the run kept them), the test points of
its final evaluation (``eval.autoattack_n`` of them, seeded by ``train.seed``, as the run drew them), then
``run_autoattack`` twice: standard (APGD-CE, APGD-T, FAB-T, Square) and ``only=["apgd-ce", "apgd-t"]`` (the same two
attacks with standard's settings and seeds, FAB-T and Square left out). CPU seconds are ``time.process_time`` of one
thread, so a shared machine's load changes them little. A row per run, then the largest gap in test points and in
accuracy points: the demo runs the subset only because no run differs by more than 1 point (BENCHMARKS.md, "The
demo"). The subset's accuracy must also equal standard's after its second attack (``per_attack["apgd-t"]``): the same
attacks on the same points with the same seeds; a row says so when it does not.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import torch

SUBSET = ["apgd-ce", "apgd-t"]


def _init() -> None:
    torch.set_num_threads(1)


def compare(run_dir: str) -> dict[str, Any]:
    """Both evaluations of one run's best checkpoint, as its final evaluation runs them."""
    from robustscale.attacks.autoattack import run_autoattack
    from robustscale.data import load_data
    from robustscale.store.record import read_record
    from robustscale.training.model_files import load_model
    from robustscale.training.run_config import config_from_dict

    record = read_record(Path(run_dir))
    cfg = config_from_dict(record.config)
    x, y = load_data(cfg.data.dataset, "test", root=cfg.data.root, image_size=cfg.data.image_size)
    model = load_model(run_dir)
    kw = dict(eps=cfg.attack.eps, norm=cfg.attack.norm, n=cfg.eval.autoattack_n, seed=cfg.train.seed,
              batch_size=cfg.eval.batch_size)
    out: dict[str, Any] = {"run_id": record.run_id, "model": cfg.model.name, "n": cfg.eval.autoattack_n}
    for name, only in (("standard", None), ("subset", SUBSET)):
        start = time.process_time()
        res = run_autoattack(model, x, y, version="standard", only=only, **kw)
        out[name] = {"robust_acc": res["robust_acc"], "per_attack": res["per_attack"],
                     "cpu_s": time.process_time() - start, "attacks": res["attacks"]}
    return out


def summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    gaps = [round((r["subset"]["robust_acc"] - r["standard"]["robust_acc"]) * r["n"]) for r in rows]
    worst = max(range(len(rows)), key=lambda i: (gaps[i], gaps[i] / rows[i]["n"])) if rows else None
    return {"runs": len(rows), "max_gap_points": max(gaps, default=0),
            "max_gap_pp": 100 * max((g / r["n"] for g, r in zip(gaps, rows)), default=0.0),
            "runs_differing": sum(g > 0 for g in gaps), "worst": rows[worst]["run_id"] if worst is not None else None,
            "standard_cpu_s": sum(r["standard"]["cpu_s"] for r in rows),
            "subset_cpu_s": sum(r["subset"]["cpu_s"] for r in rows),
            "subset_equals_standard_after_apgd_t": all(
                r["subset"]["robust_acc"] == r["standard"]["per_attack"]["apgd-t"] for r in rows)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", type=Path, help="a demo's runs folder (runs/demo/runs)")
    parser.add_argument("--workers", type=int, default=2, help="processes, one thread each")
    parser.add_argument("--json", type=Path, help="write every row and the summary here")
    args = parser.parse_args()
    runs = sorted(str(p) for p in args.runs.iterdir() if (p / "best.safetensors").exists())
    with ProcessPoolExecutor(args.workers, mp_context=mp.get_context("spawn"), initializer=_init) as pool:
        rows = list(pool.map(compare, runs))
    print("run                                    n | standard  subset  gap(points) | CPU-s standard  subset")
    for r in rows:
        gap = round((r["subset"]["robust_acc"] - r["standard"]["robust_acc"]) * r["n"])
        same = "" if r["subset"]["robust_acc"] == r["standard"]["per_attack"]["apgd-t"] else "  (differs from "\
            "standard after APGD-T)"
        print(f"{r['run_id']:38} {r['n']:3} | {r['standard']['robust_acc']:8.3f} {r['subset']['robust_acc']:7.3f} "
              f"{gap:6d}      | {r['standard']['cpu_s']:8.1f} {r['subset']['cpu_s']:7.1f}{same}")
    head = summary(rows)
    print(json.dumps(head, indent=2))
    if args.json:
        args.json.write_text(json.dumps({"summary": head, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
