"""How long AutoAttack takes on a digits run: robustscale's wrapper next to a plain pyautoattack call.

Same model, same seeded 200 test points, same eps, seed and batch size; both numbers are points per second of
wall time. The wrapper adds its clean pass and one pyautoattack call per attack (each with pyautoattack's own
checks); ``robustscale eval`` adds the sanity checks on top, timed separately.

    python benchmarks/autoattack_digits.py --run RUN    # RUN from `robustscale train configs/digits.yaml`
    python benchmarks/autoattack_digits.py              # trains a stand-in PGD-AT model first (about a minute)

Without ``--run`` the model is trained here with the recipe of configs/digits.yaml (PGD-AT, its eps, steps, step
size, epochs, batch size, SGD + cosine), with a minimal loop, so the benchmark runs before the training engine does.
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from robustscale.attacks import frozen_bn, pgd, run_autoattack, subset_indices
from robustscale.config import load_config
from robustscale.data import load_data
from robustscale.training.model_files import create_from_config, load_model, save_model


def train_stand_in(config: str, out: Path) -> Path:
    """PGD-AT with the config's recipe; returns a run folder holding best.safetensors."""
    cfg = load_config(config)
    a = cfg.attack
    torch.manual_seed(cfg.train.seed)
    model, (x, y) = create_from_config(cfg), load_data(cfg.data.dataset, "train")
    opt = torch.optim.SGD(model.parameters(), lr=cfg.train.lr, momentum=cfg.train.momentum,
                          nesterov=cfg.train.nesterov, weight_decay=cfg.train.weight_decay)
    steps = cfg.train.epochs * math.ceil(len(x) / cfg.data.batch_size)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    g = torch.Generator().manual_seed(cfg.train.seed)
    model.train()
    for _ in range(cfg.train.epochs):
        for idx in torch.randperm(len(x), generator=g).split(cfg.data.batch_size):
            with frozen_bn(model):
                x_adv = pgd(model, x[idx], y[idx], eps=a.eps, step_size=a.step_size, steps=a.steps, generator=g)
            opt.zero_grad()
            F.cross_entropy(model(x_adv), y[idx]).backward()
            opt.step()
            sched.step()
    save_model(out / "best.safetensors", model.eval(), cfg)
    return out


def plain_pyautoattack(model, x, y, *, eps: float, seed: int, batch_size: int) -> dict:
    """The README way: AutoAttack(...).run_standard_evaluation(...), nothing else."""
    from pyautoattack import AutoAttack

    t0 = time.perf_counter()
    adversary = AutoAttack(model, eps=eps, norm="Linf", version="standard", seed=seed)
    _, y_adv = adversary.run_standard_evaluation(x, y, batch_size=batch_size)
    seconds = time.perf_counter() - t0
    return {"robust_acc": (y_adv == y).sum().item() / len(y), "seconds": seconds, "points_per_s": len(y) / seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, help="digits run folder (default: train a stand-in)")
    parser.add_argument("--config", default="configs/digits.yaml")
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    run = args.run or train_stand_in(args.config, Path(tempfile.mkdtemp(prefix="digits-run-")))
    model = load_model(run)
    eps = model.config.attack.eps
    x, y = load_data(model.config.data.dataset, "test", image_size=model.config.data.image_size)
    idx = subset_indices(len(y), args.n, args.seed)
    plain = plain_pyautoattack(model, x[idx], y[idx], eps=eps, seed=args.seed, batch_size=args.batch_size)
    ours = run_autoattack(model, x, y, eps=eps, n=args.n, seed=args.seed, batch_size=args.batch_size)
    from robustscale.evaluate import evaluate

    t0 = time.perf_counter()
    full = evaluate(run, attack="autoattack", n=args.n, seed=args.seed, batch_size=args.batch_size, device="cpu")
    report = {"run": str(run), "eps": eps, "n": len(idx), "threads": torch.get_num_threads(),
              "plain": plain, "wrapper": {k: ours[k] for k in ("robust_acc", "seconds", "points_per_s", "per_attack")},
              "eval": {"seconds": time.perf_counter() - t0, "attack_seconds": full["seconds"],
                       "checks_seconds": full["checks_seconds"], "ok": full["ok"]}}
    print(f"{'':24s}{'robust acc':>12s}{'seconds':>10s}{'points/s':>10s}")
    for name, r in (("plain pyautoattack", plain), ("run_autoattack", ours)):
        print(f"{name:24s}{r['robust_acc']:>12.4f}{r['seconds']:>10.2f}{r['points_per_s']:>10.1f}")
    print(f"{'robustscale eval (+checks)':24s}{full['robust_acc']:>12.4f}{report['eval']['seconds']:>10.2f}"
          f"{len(idx) / report['eval']['seconds']:>10.1f}")
    print(json.dumps(report))


if __name__ == "__main__":
    main()
