"""Evaluate a trained model: AutoAttack (the paper's number) or PGD, with the sanity checks in the same result.

:func:`evaluate` takes a run folder or a checkpoint, as ``robustscale eval`` does; :func:`evaluate_model` takes a
model and data already in memory (the training engine calls it on the best checkpoint at the end of a run). With a
run folder the result is written to ``eval/<attack>-<eps>.json`` there, and AutoAttack keeps a state file beside it
while it runs, so a killed evaluation resumes where it stopped.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any, Optional, Sequence

import torch
from torch import Tensor, nn

from robustscale.attacks import failed_checks, pgd_accuracy, run_autoattack, sanity_checks, subset_indices
from robustscale.errors import UserError

__all__ = ["evaluate", "evaluate_model", "result_path"]

ATTACK_NAMES = ("autoattack", "pgd")


def _validate(attack: str, eps: float, norm: str, loss: str, steps: int, batch_size: int,
              pixels: int) -> tuple[str, str, str]:
    """Turn CLI/library strings into checked values once, with one-line errors naming the option. ``pixels``
    (values per image) bounds eps: beyond the diameter of the [0, 1] image cube a radius means nothing and only
    overflows the step size."""
    attack, norm, loss = (getattr(v, "value", v) for v in (attack, norm, loss))
    if loss not in ("ce", "margin"):
        raise UserError(f"--loss must be ce or margin, got '{loss}'")
    if attack not in ATTACK_NAMES:
        raise UserError(f"--attack must be autoattack or pgd, got '{attack}'")
    if norm not in ("linf", "l2"):
        raise UserError(f"--norm must be linf or l2, got '{norm}'")
    diameter = 1.0 if norm == "linf" else math.sqrt(pixels)
    if not 0 <= eps <= diameter:
        raise UserError(f"--eps must be a number in pixel units from 0 to {diameter:g} (the whole [0, 1] range in "
                        f"{norm}), e.g. 8/255; got {eps:g}")
    if steps < 0 or batch_size < 1:
        raise UserError(f"--steps must be >= 0 and --batch-size >= 1 (got {steps}, {batch_size})")
    return attack, norm, loss


def result_path(run_dir: str | Path, attack: str, eps: float, suffix: str = ".json") -> Path:
    """``<run_dir>/eval/<attack>-<eps>.json``, eps written with ``:.6g`` (0.0313725 for 8/255)."""
    return Path(run_dir) / "eval" / f"{attack}-{eps:.6g}{suffix}"


def _attack(model, x, y, *, attack, eps, norm, steps, loss, n, version, attacks, batch_size, seed,
            state_path) -> dict[str, Any]:
    if attack == "autoattack":
        return run_autoattack(model, x, y, eps=eps, norm=norm, version=version, attacks=attacks, n=n, seed=seed,
                              batch_size=batch_size, state_path=state_path)
    idx = subset_indices(len(y), n, seed)
    res = pgd_accuracy(model, x[idx], y[idx], eps=eps, steps=steps, norm=norm, loss=loss, batch_size=batch_size,
                       seed=seed)
    return {"attack": "pgd", **res, "seed": seed}


def evaluate_model(model: nn.Module, x: Tensor, y: Tensor, *, attack: str = "autoattack", eps: float,
                   norm: str = "linf", steps: int = 20, loss: str = "ce", n: Optional[int] = None,
                   version: str = "standard", attacks: Optional[Sequence[str]] = None, batch_size: int = 500,
                   seed: int = 0, run_dir: Optional[str | Path] = None,
                   meta: Optional[dict[str, Any]] = None) -> dict[str, Any]:
    """Attack ``model`` on ``(x, y)`` (or a seeded subset of ``n`` points) and run the sanity checks on the same
    points.

    Args:
        attack: ``autoattack`` (``version`` or a custom ``attacks`` list) or ``pgd`` (``steps`` steps of ``loss``,
            step size 2.5 * eps / steps, one random start).
        run_dir: when given, the result goes to ``eval/<attack>-<eps>.json`` there (atomically), and AutoAttack
            resumes from / saves to ``eval/<attack>-<eps>.state.json``, removed once the result is written.
        meta: extra fields for the result (which model, which dataset), written with it.

    Returns:
        The attack's result (``clean_acc``, ``robust_acc``, ``attack``, ``eps``, ``norm``, ``n``, ``seconds``,
        AutoAttack's ``per_attack`` and ``warnings``) plus ``checks`` (one dict per check), ``errors`` (the violated
        checks, one line each) and ``ok``.
    """
    attack, norm, loss = _validate(attack, eps, norm, loss, steps, batch_size, x[0].numel() if len(x) else 1)
    state = result_path(run_dir, attack, eps, ".state.json") if run_dir is not None and attack == "autoattack" else None
    res = _attack(model, x, y, attack=attack, eps=eps, norm=norm, steps=steps, loss=loss, n=n, version=version,
                  attacks=attacks, batch_size=batch_size, seed=seed, state_path=state)
    t0, idx = time.perf_counter(), subset_indices(len(y), n, seed)
    res["checks"] = sanity_checks(model, x[idx], y[idx], eps=eps, clean_acc=res["clean_acc"],
                                  robust_acc=res["robust_acc"], attack=attack, norm=norm, loss=loss,
                                  batch_size=batch_size, seed=seed)
    res["checks_seconds"] = time.perf_counter() - t0
    res["errors"] = [f"{c['name']}: {c['detail']}" for c in failed_checks(res["checks"])]
    res["ok"] = not res["errors"]
    res.update(meta or {})
    if run_dir is not None:
        from robustscale.store.atomic import write_json

        write_json(result_path(run_dir, attack, eps), res)
        if state is not None:
            state.unlink(missing_ok=True)
    return res


def evaluate(path: str | Path, *, attack: str = "autoattack", eps: Optional[float] = None, norm: Optional[str] = None,
             steps: int = 20, loss: Optional[str] = None, n: Optional[int] = None, version: str = "standard",
             attacks: Optional[Sequence[str]] = None, batch_size: int = 500, seed: int = 0,
             device: Optional[str] = None, data_root: Optional[str | Path] = None) -> dict[str, Any]:
    """Evaluate the model at ``path`` (a run folder: its best weights; or a ``.safetensors`` checkpoint) on its
    dataset's test split. eps, norm and the PGD loss default to the ones the model was trained and validated with.

    The dataset is read from ``data_root`` (default: ``data`` in the working folder), never from the ``data.root``
    written in the model file: a downloaded run must not choose which files are read (the CIFAR batches are
    pickles). A run folder's ``eval`` output must not be a symbolic link.
    """
    from robustscale.data import load_data
    from robustscale.errors import DataError
    from robustscale.models import load_model
    from robustscale.store.safe_paths import check_run_folder

    path = Path(path)
    if not path.exists():
        raise UserError(f"'{path}' does not exist: pass a run folder or a .safetensors checkpoint")
    if path.is_dir():
        check_run_folder(path, ("eval",))
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    model = load_model(path, device=device)
    cfg = model.config
    try:
        x, y = load_data(cfg.data.dataset, "test", root=data_root, image_size=cfg.data.image_size)
    except DataError as err:
        if cfg.data.root is None or data_root is not None:
            raise
        raise DataError(f"{err} (the model file names data.root '{cfg.data.root}': pass --data-root to use it)") \
            from None
    meta = {"path": str(path), "dataset": cfg.data.dataset.value, "model": cfg.model.name}
    return evaluate_model(model, x, y, attack=attack, eps=cfg.attack.eps if eps is None else eps,
                          norm=norm or cfg.attack.norm.value, steps=steps, loss=loss or cfg.eval.pgd_loss.value, n=n,
                          version=version, attacks=attacks, batch_size=batch_size, seed=seed,
                          run_dir=path if path.is_dir() else None, meta=meta)
