"""What issue 28's fixes change on the demo's digits grid: the PGD-40 step rule, PGD-AT's BatchNorm statistics and
the final evaluation's FLOPs, run by run.

    python benchmarks/fidelity_digits.py OUT            # runs `robustscale demo --out OUT/demo` first if needed
    python benchmarks/fidelity_digits.py OUT --json OUT/fidelity.json

For every run of the demo (its best checkpoint, on AutoAttack's 40 seeded test points and on the 100 validation
points early stopping uses):

* PGD-40 with three step rules: robustscale's default (2.5 eps / 40), the paper grid's value before issue 28
  (1.5 eps / 40), and the paper's code (1.5 eps / K_train: ``resolve_attack_cfg(args, eval=True)``), next to the
  run's AutoAttack. A stronger attack is a lower number; AutoAttack is the reference.
* The final AutoAttack again, counted two ways in one evaluation: the model's own calls only (the count before the
  fix: the attacks ran on the BatchNorm-folded copy, which the hook did not see) and every call (after).
* For each PGD-AT run, a twin trained with ``train.at_clean_forward`` flipped (the paper's clean forward, which feeds
  BatchNorm's running statistics the clean batch too): its PGD-40 (paper rule) and AutoAttack next to the run's.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import torch

from robustscale.accounting import step_flops_for_config
from robustscale.accounting.flops import count_model_calls
from robustscale.attacks import pgd_accuracy, subset_indices
from robustscale.config import config_from_dict, config_to_dict
from robustscale.data import load_data, load_train_data
from robustscale.evaluate import evaluate_model
from robustscale.store import read_record
from robustscale.store.results import find_run_dirs
from robustscale.training import train
from robustscale.training.model_files import load_model

RULES = {"2.5eps/40": lambda cfg: 2.5 * cfg.attack.eps / 40, "1.5eps/40": lambda cfg: 1.5 * cfg.attack.eps / 40,
         "1.5eps/K": lambda cfg: 1.5 * cfg.attack.eps / cfg.attack.steps}


def pgd40(model, x, y, cfg, rule: str) -> float:
    return pgd_accuracy(model, x, y, eps=cfg.attack.eps, steps=40, step_size=RULES[rule](cfg),
                        batch_size=500, seed=cfg.train.seed)["robust_acc"]


def autoattack_counted(model, x, y, cfg) -> dict:
    """AutoAttack on the run's points with the old hook (the model's own calls) and the new count, together."""
    old = {"plain": 0, "grad": 0}

    def hook(_module, args):
        old["grad" if torch.is_grad_enabled() else "plain"] += int(args[0].shape[0])

    handle = model.register_forward_pre_hook(hook)
    try:
        with count_model_calls(model) as calls:
            res = evaluate_model(model, x, y, attack="autoattack", eps=cfg.attack.eps, n=cfg.eval.autoattack_n,
                                 batch_size=cfg.eval.batch_size, seed=cfg.train.seed)
    finally:
        handle.remove()
    forward = step_flops_for_config(cfg).forward
    return {"autoattack": res["robust_acc"], "attacked": res["attacked"],
            "flops_before": (old["plain"] + 2 * old["grad"]) * forward,
            "flops_after": (calls.plain + 2 * calls.with_grad) * forward}


def twin(run_dir: Path, out: Path) -> dict:
    """The run retrained with train.at_clean_forward flipped, and its numbers."""
    raw = config_to_dict(load_model(run_dir).config)
    raw["train"]["at_clean_forward"] = not raw["train"]["at_clean_forward"]
    cfg = config_from_dict(raw)
    dest = out / f"{run_dir.name}-clean{int(cfg.train.at_clean_forward)}"
    record = read_record(dest) if (dest / "record.json").is_file() else None
    if record is None or record.status.value != "done":
        record = train(cfg, dest, resume=(dest / "checkpoint.safetensors").is_file(), progress=False)
    return {"at_clean_forward": cfg.train.at_clean_forward, "autoattack": record.metrics.autoattack_acc,
            "pgd40_val": record.metrics.pgd40_acc, "clean": record.metrics.clean_acc}


def evaluate_run(run_dir: Path, twins: Path) -> dict:
    model, record = load_model(run_dir), read_record(run_dir)
    cfg = model.config
    x, y = load_data("digits", "test")
    idx = subset_indices(len(y), cfg.eval.autoattack_n, cfg.train.seed)
    data = load_train_data(cfg.data)
    vx = torch.as_tensor(data.val_x).permute(0, 3, 1, 2).float().div(255.0)
    vy = torch.as_tensor(data.val_y)
    row = {"run_id": run_dir.name, "model": cfg.model.name, "loss": cfg.train.loss.value, "K": cfg.attack.steps,
           "ema": cfg.train.ema, "synthetic": cfg.data.synthetic.path is not None,
           "at_clean_forward": cfg.train.at_clean_forward, "record_autoattack": record.metrics.autoattack_acc,
           "record_final_eval_flops": record.accounting.final_eval_flops}
    for rule in RULES:
        row[f"pgd40_test {rule}"] = pgd40(model, x[idx], y[idx], cfg, rule)
        row[f"pgd40_val {rule}"] = pgd40(model, vx, vy, cfg, rule)
    row.update(autoattack_counted(model, x, y, cfg))
    if cfg.train.loss.value == "at":
        row["twin"] = twin(run_dir, twins)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--json", type=Path, help="write the rows here")
    args = parser.parse_args()
    torch.set_num_threads(1)
    demo = args.out / "demo"
    if not (demo / "report.html").is_file():
        subprocess.run([sys.executable, "-m", "robustscale", "demo", "--out", str(demo)], check=True)
    rows = [evaluate_run(d, args.out / "twins") for d in find_run_dirs(demo / "runs")]
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    cols = ["model", "loss", "K", "ema", "synthetic", "pgd40_test 2.5eps/40", "pgd40_test 1.5eps/40",
            "pgd40_test 1.5eps/K", "autoattack", "flops_before", "flops_after"]
    print("| " + " | ".join(cols) + " | twin AA (clean fwd flipped) |")
    for r in rows:
        cells = [f"{r[c]:.3g}" if isinstance(r[c], float) else str(r[c]) for c in cols]
        t = r.get("twin")
        print("| " + " | ".join(cells) + (f" | {t['autoattack']:.3f} |" if t else " | |"))


if __name__ == "__main__":
    main()
