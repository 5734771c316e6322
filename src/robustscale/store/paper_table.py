"""The paper's own results table (``results.csv`` of dedeswim/timm-adv-training, 319 runs) in robustscale's columns.

The paper's ``create_csv.py`` wrote one row per run from its ``summary.csv`` (one row per epoch), its ``args.yaml``
and its AutoAttack result. Read faithfully, its columns mean:

* ``train_flops``, ``train_emissions``, ``train_electricity_cost``: *averages per epoch* over the run
  (``SUMMARY_FIELDS_TO_AVERAGE``), measured on rank 0 of 4 GPUs. ``train_flops`` is TFLOPs of the paper's convention
  (3 x DeepSpeed-profiled forward FLOPs, ``src/engine.py``) on that rank's images, so a run's total in that
  convention is ``train_flops x 1e12 x 4 ranks x epochs``: robustscale's ``train_flops_paper``. ``train_emissions`` is CodeCarbon's kg CO2 of the training epoch;
  ``train_electricity_cost`` is ``0.12 $/kWh x 300 W x 4 GPUs x epoch hours x PUE 1.58``, an estimate, not a meter.
* ``epochs``: ``epochs + warmup_epochs`` of ``args.yaml``, 110 or 400 (the epochs trained: 100 or 390 plus 10
  cool-down); the 400-epoch runs are exactly the EMA (and CutMix) arm of ``scripts/job.sh``.
* ``model``: ``wide_resnetD_W`` (ReLU) or ``wide_resnetD_W_dm`` (DeepMind's WRN with Swish = SiLU).
* ``aa_robust_acc``, ``eval_acc``: AutoAttack's robust and clean accuracy on the 10,000 test points, in percent;
  ``pgd40_robust_acc``: PGD-40 on 4,096 test points at the *last* epoch, in percent.

:func:`read_paper_table` returns robustscale's canonical columns (accuracies as fractions, FLOPs as run totals,
``activation`` from the model name) and keeps every original figure beside them under a ``paper_`` name. The result
is what ``robustscale results`` gives and what ``fit``, ``predict`` and the adaptive-sweep readers take.

One FLOP column per meaning: ``train_flops`` is robustscale's exact count (FlopCounterMode, as every robustscale run
records it), computed from each run's recipe, since the paper's table holds only its convention; the convention
stays in ``train_flops_paper``. Exact over convention is 2/3 for PGD-AT ((2K + 4) / 3(K + 2), every K) and 0.69 to
0.75 for TRADES ((2K + 7) / 3(K + 3), K = 10 to 1), so a law fitted on one column is not a law in the other's unit. The exact count follows the paper's code step by
step: PGD-AT runs K attack steps, a clean and an adversarial forward in train mode, and one backward ((2K + 4) F
minus the stem's input gradient; ``src/attacks.py``, ``AdvTrainingLoss``), TRADES its target forward, K steps and
two forwards with one backward ((2K + 7) F minus two stems; ``TRADESLoss``), each epoch ``floor(50,000 / B)``
global batches of B images (timm's training loader drops the last partial batch; ``src/utils.py``,
``CombinedLoaders``, with synthetic data), B as ``scripts/job.sh`` sets it per model at its last commit. Some runs
were trained with twice that batch before job.sh's commit 25a0fcb; the epoch is then at most 0.7% longer, within
the convention's own 1% agreement (docs/flops.md). Its
``co2_kg`` is CodeCarbon's measurement and its ``energy_kwh`` / ``cost_usd`` the 300 W-per-GPU estimate (flagged in
``energy_estimated``): the two do not describe the same energy, so compare the cost laws, not their ratio.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pandas as pd

from robustscale.errors import UserError

__all__ = ["read_paper_table", "paper_to_canonical", "PAPER_COLUMNS", "PAPER_RANKS", "PAPER_IMAGES_PER_RANK",
           "paper_model_name", "paper_global_batch", "paper_exact_flops_per_sample", "PAPER_FORWARD_FLOPS"]

PAPER_RANKS = 4  # torch.distributed.run --nproc_per_node=4 (scripts/job.sh)
PAPER_IMAGES_PER_RANK = 50_000 // PAPER_RANKS  # one epoch's share of one rank, whose FLOPs results.csv holds
PAPER_TRADES_BETA = 5.0  # trades_beta (configs/sweep-cifar10.yaml)
PAPER_SYNTHETIC_FRACTION = 0.7  # --combined-dataset-ratio 0.7 (scripts/job.sh); per GPU int(0.7 b) rounded to even
PAPER_SEED = 42  # seed (configs/sweep-cifar10.yaml)
PAPER_PRICE_PER_KWH = 0.12  # src/engine.py: electricity_dollar_cost = 0.12 * kWh
# Forward FLOPs of one 32x32 image through the paper's WideResNets (10 classes; FlopCounterMode's count, 2 FLOPs per
# multiply-add), and of their first convolution, whose input gradient a full backward skips. Both implementations
# (ReLU and DeepMind's SiLU) have these shapes. The store reads tables without torch, so the counts are literals here;
# tests/store/test_paper_table.py checks them against robustscale.accounting.step_flops.
PAPER_FORWARD_FLOPS = {"wrn_28_10": 10_486_657_536, "wrn_34_10": 13_317_812_736, "wrn_34_20": 53_163_713_536,
                       "wrn_70_16": 77_528_420_352}
PAPER_STEM_FLOPS = 884_736
PAPER_TRAIN_IMAGES = 50_000  # CIFAR-10's training split


def paper_global_batch(model: str, activation: str) -> int:
    """The global batch ``scripts/job.sh`` trains a model with at its last commit: 128 per GPU x 4 GPUs, 32 per GPU
    for wide_resnet34_20 and wide_resnet28_10_dm, 16 for wide_resnet70_16(_dm) and wide_resnet34_{10,20}_dm."""
    silu = activation == "silu"
    if model == "wrn_70_16" or (silu and model in ("wrn_34_10", "wrn_34_20")):
        return 16 * PAPER_RANKS
    if (model == "wrn_34_20" and not silu) or (model == "wrn_28_10" and silu):
        return 32 * PAPER_RANKS
    return 128 * PAPER_RANKS


def paper_exact_flops_per_sample(model: str, loss: str, steps: int) -> int:
    """FLOPs per training sample of the paper's step, exactly as robustscale counts a step (module docstring)."""
    forward, stem = PAPER_FORWARD_FLOPS[model], PAPER_STEM_FLOPS
    if loss == "trades":
        return (2 * steps + 7) * forward - 2 * stem
    return (2 * steps + 4) * forward - stem


PAPER_COLUMNS = ("train_loss", "train_emissions", "train_flops", "train_electricity_cost", "eval_loss", "train_acc",
                 "train_robust_acc", "pgd40_robust_acc", "epochs", "model", "model_parameters", "synthetic_data",
                 "at", "at_steps", "aa_robust_acc", "eval_acc")
_MODEL = re.compile(r"^wide_resnet(\d+)_(\d+)(_dm)?$")
_LOSS = {"pgd": "at", "trades": "trades"}


def paper_model_name(name: str) -> tuple[str, str]:
    """``"wide_resnet34_20_dm"`` -> ``("wrn_34_20", "silu")``: robustscale's model and the activation it ran."""
    m = _MODEL.match(str(name).strip())
    if m is None:
        raise UserError(f"model '{name}' is not one of the paper's WideResNets (wide_resnetD_W or wide_resnetD_W_dm)")
    return f"wrn_{m.group(1)}_{m.group(2)}", "silu" if m.group(3) else "relu"


def _bool(series: pd.Series) -> pd.Series:
    return series.astype(str).str.strip().str.lower().map({"true": True, "false": False}).astype("boolean")


def paper_to_canonical(raw: pd.DataFrame, source: str = "results.csv") -> pd.DataFrame:
    """The paper's table (as read from its CSV) in robustscale's columns; see the module docstring for the units."""
    missing = [c for c in PAPER_COLUMNS if c not in raw.columns]
    if missing:
        raise UserError(f"{source}: not the paper's results.csv (no '{missing[0]}' column); pass the file from "
                        "dedeswim/timm-adv-training")
    names = [paper_model_name(m) for m in raw["model"]]
    loss = raw["at"].astype(str).str.strip().map(_LOSS)
    if loss.isna().any():
        raise UserError(f"{source}: column 'at' holds {raw.loc[loss.isna(), 'at'].iloc[0]!r}; expected pgd or trades")
    epochs = pd.to_numeric(raw["epochs"], errors="coerce").astype("Int64")
    synthetic = _bool(raw["synthetic_data"])
    total = epochs.astype(float) * PAPER_RANKS * 1e12
    steps = pd.to_numeric(raw["at_steps"]).astype("Int64")
    batches = [paper_global_batch(n, a) for n, a in names]
    samples = [int(e) * (PAPER_TRAIN_IMAGES // b) * b if not pd.isna(e) else None for e, b in zip(epochs, batches)]
    exact = [float(n_ * paper_exact_flops_per_sample(m, lo, int(k))) if n_ is not None else float("nan")
             for n_, (m, _), lo, k in zip(samples, names, loss, steps)]
    out = pd.DataFrame({
        "run_id": [f"robust-hw_{m}_{a}_{s}_{'ema' if e == 400 else 'no_ema'}{'_synthetic' if syn else ''}"
                   for m, a, s, e, syn in zip(raw["model"], raw["at"], raw["at_steps"], epochs, synthetic)],
        "status": "done", "dataset": "cifar10",
        "model": [n for n, _ in names], "params": pd.to_numeric(raw["model_parameters"]).astype("Int64"),
        "activation": [a for _, a in names], "loss": loss,
        "beta": [PAPER_TRADES_BETA if v == "trades" else None for v in loss],
        "attack_steps": steps, "epochs": epochs,
        "ema": (epochs == 400).astype("boolean"), "synthetic": synthetic,
        "synthetic_fraction": [PAPER_SYNTHETIC_FRACTION if s else 0.0 for s in synthetic], "seed": PAPER_SEED,
        "clean_acc": pd.to_numeric(raw["eval_acc"]) / 100.0,
        "pgd40_acc": pd.to_numeric(raw["pgd40_robust_acc"]) / 100.0,
        "autoattack_acc": pd.to_numeric(raw["aa_robust_acc"]) / 100.0,
        "train_flops": exact,  # robustscale's exact count, from the recipe (module docstring)
        "train_flops_paper": pd.to_numeric(raw["train_flops"]) * total,  # the paper's convention, as logged
        "energy_kwh": pd.to_numeric(raw["train_electricity_cost"]) * epochs.astype(float) / PAPER_PRICE_PER_KWH,
        "energy_estimated": True,
        "cost_usd": pd.to_numeric(raw["train_electricity_cost"]) * epochs.astype(float),
        "co2_kg": pd.to_numeric(raw["train_emissions"]) * epochs.astype(float),
    })
    # GPU-hours were not logged; the cost estimate was 0.3 kW x (4 GPUs x wall hours) x PUE 1.58: invert it
    out.insert(out.columns.get_loc("energy_kwh"), "gpu_hours", out["energy_kwh"] / (0.300 * 1.58))
    out["samples_seen"] = pd.array(samples, dtype="Int64")  # the N-D law's D, as train_flops counts it
    kept = {  # the paper's own figures, per epoch where it averaged them, in its units (percent)
        "paper_model": raw["model"],
        "paper_train_tflops_per_epoch_rank": pd.to_numeric(raw["train_flops"]),
        "paper_co2_kg_per_epoch": pd.to_numeric(raw["train_emissions"]),
        "paper_cost_usd_per_epoch": pd.to_numeric(raw["train_electricity_cost"]),
        **{f"paper_{c}": raw[c] for c in ("train_loss", "eval_loss", "train_acc", "train_robust_acc")},
    }
    out = pd.concat([out, pd.DataFrame(kept, index=out.index)], axis=1)
    out.attrs["source"] = source
    return out


def read_paper_table(path: str | os.PathLike) -> pd.DataFrame:
    """Read the paper's ``results.csv`` into robustscale's canonical columns (one row per run, 319 for the paper).

    Raises:
        UserError: the file is missing, unreadable, or not shaped like the paper's table.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such file; pass the paper's results.csv (dedeswim/timm-adv-training)")
    try:
        raw = pd.read_csv(path)
    except (ValueError, OSError, pd.errors.ParserError) as err:
        raise UserError(f"{path}: cannot be read as CSV ({str(err).splitlines()[0]})") from None
    return paper_to_canonical(raw, str(path))
