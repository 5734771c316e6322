"""The report's early stops: which runs collapsed (catastrophic overfitting) or stopped on patience, and how much
training compute the stops saved.

A stopped run trained ``epochs_run`` of its ``epochs`` planned epochs; every epoch of a run costs the same training
FLOPs and, near enough, the same energy (the same steps on the same data), so the compute the stop saved is
estimated as ``train_flops * (epochs - epochs_run) / epochs_run``, and the energy alike. Its accuracy is that of its
best checkpoint, from before the collapse, which training on would have kept too unless it recovered beyond it.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from robustscale.analysis._table import jsonable

__all__ = ["early_stops", "sentence"]

_NEEDED = ("run_id", "stop_reason", "stop_epoch", "collapse_epoch", "epochs", "epochs_run", "train_flops")
_SHOWN = ("run_id", "model", "loss", "attack_steps", "epochs", "epochs_run", "stop_reason", "stop_epoch",
          "collapse_epoch", "best_epoch", "autoattack_acc", "train_flops", "saved_train_flops", "energy_kwh",
          "saved_energy_kwh")


def early_stops(table: pd.DataFrame) -> dict[str, Any] | None:
    """The runs that collapsed or stopped early, and the compute saved; None when the table has no such column (an
    other framework's table) or no such run."""
    if any(c not in table for c in _NEEDED):
        return None
    done = table[table["status"].astype(str) == "done"] if "status" in table else table
    hit = done[done["stop_reason"].notna() | done["collapse_epoch"].notna()].copy()
    if hit.empty:
        return None
    ran = pd.to_numeric(hit["epochs_run"], errors="coerce")
    skipped = (pd.to_numeric(hit["epochs"], errors="coerce") - ran).where(hit["stop_reason"].notna(), 0.0)
    hit["saved_train_flops"] = pd.to_numeric(hit["train_flops"], errors="coerce") * skipped / ran
    if "energy_kwh" in hit:
        hit["saved_energy_kwh"] = pd.to_numeric(hit["energy_kwh"], errors="coerce") * skipped / ran
    stopped = hit[hit["stop_reason"].notna()]
    spent = float(pd.to_numeric(stopped["train_flops"], errors="coerce").sum())
    saved = float(hit["saved_train_flops"].sum())
    columns = [c for c in _SHOWN if c in hit]
    return jsonable({
        "n_collapsed": int(hit["collapse_epoch"].notna().sum()),
        "n_stopped": len(stopped),
        "reasons": stopped["stop_reason"].value_counts().to_dict(),
        "saved_train_flops": saved,
        "saved_fraction": saved / (saved + spent) if saved + spent > 0 else None,
        "saved_energy_kwh": float(hit["saved_energy_kwh"].sum()) if "saved_energy_kwh" in hit else None,
        "runs": hit[columns].astype(object).where(hit[columns].notna(), None).to_dict("records"),
    })


def sentence(stops: dict[str, Any]) -> str:
    """The section's lead: how many runs collapsed, how many were stopped, and what that saved."""
    n_warned = stops["n_collapsed"] - stops["reasons"].get("catastrophic_overfitting", 0)
    text = (f"{stops['n_collapsed']} run(s) collapsed during training (catastrophic overfitting: multi-step robust "
            f"accuracy fell while the training attack's held); {stops['n_stopped']} run(s) stopped early")
    if n_warned > 0:
        text += f"; {n_warned} collapsed run(s) were not stopped (train.on_collapse: warn, or in their last epoch)"
    if stops["n_stopped"]:
        fraction = stops["saved_fraction"]
        share = f" ({fraction:.0%} of what the stopped runs would have spent over their planned epochs)" \
            if fraction is not None else ""
        energy = (f" and about {stops['saved_energy_kwh']:.3g} kWh" if stops.get("saved_energy_kwh") else "")
        text += f". The stops saved an estimated {stops['saved_train_flops']:.3g} training FLOPs{share}{energy}"
    return text + "."
