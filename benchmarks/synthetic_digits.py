"""Does synthetic data help on the digits? Real only vs the GMM vs the diffusion generator, on one fixed recipe.

    OMP_NUM_THREADS=1 nice python benchmarks/synthetic_digits.py --seeds 0 1 2 --jobs 2 [--out runs/bench-synthetic]

Each arm trains the demo's EMA recipe (WRN-10-2, TRADES with a 3-step attack, 10 epochs, EMA; configs/digits.yaml
with the demo's overrides) once per seed, then AutoAttack (standard) evaluates every run's best checkpoint on the
*same* seeded test points (``--aa-seed``). The synthetic sets are drawn once (generator seed 0) and cached in the
output folder with their generation time and memorisation figures. Every run trains in its own process with one
torch thread; the script resumes (finished runs and evaluations are kept). Prints a table and the JSON summary
(also written to ``<out>/summary.json``): per arm the mean, sample standard deviation and the 95% t-interval, and
per arm the paired differences to real-only and to the GMM (same seeds, same points).

    python benchmarks/synthetic_digits.py --out runs/bench-synthetic --summarise-only

aggregates what is there (every run folder with an ``aa.json``, whatever its seed) without training or drawing
anything, into ``<out>/summary-collected.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
RECIPE = [  # the demo's synthetic arm (configs/sweeps/demo.yaml): TRADES-3 with EMA, 10 epochs
    "model.name=wrn_10_2", "train.loss=trades", "attack.steps=3", "attack.step_size=null", "train.epochs=10",
    "train.ema=true", "data.val_size=100", "eval.pgd_every=2", "eval.autoattack=none",
]


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("runs/bench-synthetic"))
    ap.add_argument("--arms", nargs="+", default=["real", "gmm", "ddpm"],
                    help="real, or a generator (gmm, ddpm) optionally with a tag: ddpm:NAME uses <out>/NAME.npz")
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--synthetic-dir", type=Path, default=None,
                    help="where the synthetic sets are drawn and cached (default: --out), to share them between runs")
    ap.add_argument("--n-synthetic", type=int, default=20000)
    ap.add_argument("--fraction", type=float, default=0.7, help="synthetic share of every batch (Gowal et al.)")
    ap.add_argument("--aa-n", type=int, default=200, help="AutoAttack test points (the same for every run)")
    ap.add_argument("--aa-seed", type=int, default=0)
    ap.add_argument("--attacks", default=None,
                    help="a cheaper AutoAttack subset for exploration, e.g. apgd-ce,apgd-t (default: standard)")
    ap.add_argument("--jobs", type=int, default=1, help="runs at a time (one torch thread each)")
    ap.add_argument("--set", nargs="*", default=[], dest="overrides", help="extra config overrides key=value")
    ap.add_argument("--summarise-only", action="store_true",
                    help="train and evaluate nothing: aggregate the run folders under --out that have aa.json (every "
                         "seed found, whatever --seeds says) and the cached generator figures")
    ap.add_argument("--one", nargs=2, metavar=("ARM", "SEED"), help=argparse.SUPPRESS)  # internal: one run
    return ap.parse_args(argv)


# ---------------------------------------------------------------------------------------------- the synthetic sets


def synthetic_path(args, arm: str) -> Path | None:
    """``real`` -> None; ``gmm`` -> <out>/gmm.npz; ``ddpm:tag`` -> <out>/tag.npz (drawn elsewhere)."""
    if arm == "real":
        return None
    method, _, tag = arm.partition(":")
    return (args.synthetic_dir / f"{tag or method}.npz").resolve()


def draw(args, arm: str) -> dict:
    """Draw (or reuse) the synthetic set of ``arm``; returns its generation time and memorisation figures."""
    from robustscale.data import load_arrays
    from robustscale.data.generate import synthesize
    from robustscale.data.memorisation import memorisation_report

    path, meta = synthetic_path(args, arm), synthetic_path(args, arm).with_suffix(".json")
    if meta.is_file():
        return json.loads(meta.read_text())
    if not path.is_file():
        t0, cpu0 = time.perf_counter(), time.process_time()
        synthesize("digits", args.n_synthetic, path, method=arm.partition(":")[0], seed=0,
                   log=lambda s, loss, sec: print(f"  {arm} step {s} loss {loss:.4f} {sec:.0f} s", flush=True))
        seconds, cpu_s = time.perf_counter() - t0, time.process_time() - cpu0
    else:
        seconds = cpu_s = None  # drawn elsewhere (a tagged variant): its time is reported where it was drawn
    samples = np.load(path)["image"]
    train, _ = load_arrays("digits", "train")
    test, _ = load_arrays("digits", "test")
    info = {"arm": arm, "path": str(path), "n": len(samples), "seconds": seconds, "cpu_s": cpu_s,
            "load_avg": os.getloadavg()[0], "memorisation": memorisation_report(samples, train, test)}
    meta.write_text(json.dumps(info, indent=2))
    return info


# ---------------------------------------------------------------------------------------------- one run


def run_dir(args, arm: str, seed: int) -> Path:
    return args.out / arm.replace(":", "-") / f"seed{seed}"


def one_run(args, arm: str, seed: int) -> None:
    """Train one arm/seed (resuming) and evaluate it with AutoAttack on the shared test points (in this process)."""
    import torch

    from robustscale.config import load_config
    from robustscale.evaluate import evaluate
    from robustscale.training import train

    torch.set_num_threads(1)
    folder = run_dir(args, arm, seed)
    syn = synthetic_path(args, arm)
    overrides = RECIPE + [f"train.seed={seed}", f"data.synthetic.path={syn if syn else 'null'}",
                          f"data.synthetic.fraction={args.fraction}"] + list(args.overrides)
    cfg = load_config(REPO / "configs" / "digits.yaml", overrides)
    record = json.loads((folder / "record.json").read_text()) if (folder / "record.json").is_file() else {}
    if record.get("status") != "done":
        train(cfg, folder, resume=(folder / "record.json").is_file(), progress=False)
    result = folder / "aa.json"
    if not result.is_file():
        attacks = args.attacks.split(",") if args.attacks else None
        res = evaluate(folder, attack="autoattack", n=args.aa_n, seed=args.aa_seed, attacks=attacks, device="cpu")
        keep = ("clean_acc", "robust_acc", "n", "seconds", "ok", "per_attack")
        result.write_text(json.dumps({"attacks": args.attacks or "standard", **{k: res.get(k) for k in keep}}))


def _nice(target: int = 10) -> None:
    """Niceness 10 for the run (absolute, not added to the caller's: the cores are shared with other people's
    niced jobs, and 19 would starve the run)."""
    os.nice(max(0, target - os.nice(0)))


def launch(args, arm: str, seed: int) -> dict:
    """Run :func:`one_run` in a fresh, niced, one-thread process; return its results."""
    folder = run_dir(args, arm, seed)
    if not (folder / "aa.json").is_file():
        cmd = [sys.executable, __file__, "--one", arm, str(seed), "--out", str(args.out), "--aa-n", str(args.aa_n),
               "--aa-seed", str(args.aa_seed), "--fraction", str(args.fraction),
               "--synthetic-dir", str(args.synthetic_dir), *(["--attacks", args.attacks] if args.attacks else []),
               "--set", *args.overrides]
        env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, env=env, preexec_fn=_nice)
        print(f"{arm} seed {seed}: {time.perf_counter() - t0:.0f} s", flush=True)
    return read_run(args, arm, seed)


def read_run(args, arm: str, seed: int) -> dict:
    """One finished run's row: its record and its AutoAttack result on the shared points."""
    folder = run_dir(args, arm, seed)
    record = json.loads((folder / "record.json").read_text())
    aa = json.loads((folder / "aa.json").read_text())
    per_attack = aa.get("per_attack") or {}
    # the first runs' files name no attack set: they ran the default, standard
    return {"arm": arm, "seed": seed, "attacks": aa.get("attacks", "standard"), "autoattack_acc": aa["robust_acc"],
            "after_apgd_t": per_attack.get("apgd-t"), "clean_acc": aa["clean_acc"],
            "pgd40_val_acc": record["metrics"].get("pgd40_acc"), "best_epoch": record["metrics"].get("best_epoch"),
            "train_s": record.get("wall_s"), "aa_s": aa["seconds"]}


# ---------------------------------------------------------------------------------------------- statistics


def t_interval(values) -> dict:
    """Mean, sample standard deviation and the 95% Student-t interval of the mean."""
    from scipy import stats

    v = np.asarray(values, dtype=float)
    mean = float(v.mean())
    if len(v) < 2:
        return {"n": len(v), "mean": mean, "sd": None, "ci95": [None, None]}
    sd = float(v.std(ddof=1))
    half = float(stats.t.ppf(0.975, len(v) - 1) * sd / np.sqrt(len(v)))
    return {"n": len(v), "mean": mean, "sd": sd, "ci95": [mean - half, mean + half]}


def summarise(rows: list[dict], arms: list[str], baselines: tuple[str, ...] = ("real", "gmm")) -> dict:
    """Per arm: AutoAttack and clean accuracy intervals, and ``minus_<baseline>``: the paired difference (same seeds,
    same test points) to each baseline arm present, over the seeds both have."""
    out = {}
    by_arm = {arm: {r["seed"]: r["autoattack_acc"] for r in rows if r["arm"] == arm} for arm in arms}
    for arm in arms:
        mine = [r for r in rows if r["arm"] == arm]
        if not mine:
            continue
        out[arm] = {"autoattack_acc": t_interval([r["autoattack_acc"] for r in mine]),
                    "clean_acc": t_interval([r["clean_acc"] for r in mine]),
                    "seeds": [r["seed"] for r in mine]}
        for base in baselines:
            other = by_arm.get(base, {})
            paired = [r["autoattack_acc"] - other[r["seed"]] for r in mine if r["seed"] in other]
            if arm != base and paired:
                out[arm][f"minus_{base}"] = {**t_interval(paired), "seeds": [r["seed"] for r in mine
                                                                             if r["seed"] in other]}
    return out


def _fmt(s: dict) -> str:
    lo, hi = s["ci95"]
    return f"{s['mean']:.3f} [{lo:.3f}, {hi:.3f}]" if lo is not None else f"{s['mean']:.3f}"


def print_table(summary: dict) -> None:
    print(f"{'arm':12s} {'n':>2s}  {'AutoAttack acc, mean [95% CI]':30s} {'clean acc':24s} "
          f"{'minus real (paired)':26s} {'minus gmm (paired)':26s}")
    for arm, s in summary.items():
        diffs = [f"{_fmt(s[k])} n={s[k]['n']}" if k in s else "" for k in ("minus_real", "minus_gmm")]
        print(f"{arm:12s} {s['autoattack_acc']['n']:2d}  {_fmt(s['autoattack_acc']):30s} {_fmt(s['clean_acc']):24s} "
              f"{diffs[0]:26s} {diffs[1]:26s}")


def print_generators(generators: dict) -> None:
    """Generation time and the memorisation figures (pixel-space L2, 0..255 per pixel, 64 pixels)."""
    print(f"{'generator':12s} {'n':>6s} {'wall s':>7s} {'cpu s':>6s}  {'sample->train min/p1/med':26s} "
          f"{'train->train min/p1/med':24s} {'<train min':>10s} {'closer to a test img':>20s} {'test share':>10s}")
    for arm, g in generators.items():
        m = g["memorisation"]
        st, tt = m["sample_to_train"], m["train_to_train"]
        wall = f"{g['seconds']:.0f}" if g.get("seconds") else "-"
        cpu = f"{g['cpu_s']:.0f}" if g.get("cpu_s") else "-"
        print(f"{arm:12s} {m['n_samples']:6d} {wall:>7s} {cpu:>6s}  "
              f"{st['min']:5.0f} / {st['p1']:4.0f} / {st['median']:4.0f}{'':9s} "
              f"{tt['min']:5.0f} / {tt['p1']:4.0f} / {tt['median']:4.0f}{'':7s} {m['samples_below_train_min']:10d} "
              f"{m['samples_closer_to_a_test_image']:9d} ({m['test_images_with_a_closer_sample']} tests) "
              f"{m['test_neighbour_share']:10.3f}")


def collected(args) -> tuple[dict, list[dict]]:
    """``--summarise-only``: the cached generator figures and every finished run (aa.json present) of ``--arms``."""
    generators = {}
    for arm in args.arms:
        meta = synthetic_path(args, arm).with_suffix(".json") if arm != "real" else None
        if meta is not None and meta.is_file():
            generators[arm] = json.loads(meta.read_text())
    rows = []
    for arm in args.arms:
        folder = args.out / arm.replace(":", "-")
        seeds = sorted(int(p.parent.name[4:]) for p in folder.glob("seed*/aa.json") if p.parent.name[4:].isdigit())
        rows += [read_run(args, arm, seed) for seed in seeds]
    return generators, rows


def main(argv=None) -> None:
    args = parse_args(argv)
    args.out = args.out.resolve()
    args.synthetic_dir = (args.synthetic_dir or args.out).resolve()
    if args.one:
        return one_run(args, args.one[0], int(args.one[1]))
    if args.summarise_only:
        generators, rows = collected(args)
    else:
        args.out.mkdir(parents=True, exist_ok=True)
        args.synthetic_dir.mkdir(parents=True, exist_ok=True)
        generators = {arm: draw(args, arm) for arm in args.arms if arm != "real"}
        jobs = [(arm, seed) for seed in args.seeds for arm in args.arms]
        with ThreadPoolExecutor(args.jobs) as pool:
            rows = list(pool.map(lambda job: launch(args, *job), jobs))
    summary = {"recipe": RECIPE + list(args.overrides), "fraction": args.fraction, "aa_n": args.aa_n,
               "aa_seed": args.aa_seed, "n_synthetic": args.n_synthetic, "arms": summarise(rows, args.arms),
               "runs": rows, "generators": generators}
    summary_path = args.out / ("summary-collected.json" if args.summarise_only else "summary.json")
    summary_path.write_text(json.dumps(summary, indent=2))
    print_table(summary["arms"])
    print_generators(generators)
    print(json.dumps(summary["arms"], indent=2))


if __name__ == "__main__":
    main()
