"""One evaluation of a model in memory: an attack (AutoAttack, the paper's number, or PGD) and the sanity checks on
the same points, in one result; with a run folder, written to ``eval/<attack>-<eps>.json`` there, and AutoAttack
keeps a state file beside it while it runs, so a killed evaluation resumes where it stopped.

:func:`robustscale.evaluate.evaluate` loads a run folder or checkpoint and calls :func:`evaluate_model`; the training
loop calls it (and :func:`clean_accuracy`) on the best checkpoint at the end of a run.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any, Optional, Sequence

from torch import Tensor, nn

from robustscale.attacks.autoattack import run_autoattack, subset_indices
from robustscale.attacks.checks import failed_checks, sanity_checks
from robustscale.attacks.pgd import pgd_accuracy
from robustscale.attacks.sharding import Shard
from robustscale.enums import Attack, AutoAttackVersion, Norm, PGDLoss, choice
from robustscale.errors import ParameterError
from robustscale.store.atomic import write_json

__all__ = ["evaluate_model", "clean_accuracy", "result_path"]


def _validate(attack: Attack | str, eps: float, norm: Norm | str, loss: PGDLoss | str, steps: int, batch_size: int,
              pixels: int) -> tuple[Attack, Norm, PGDLoss]:
    """Turn library strings into members once, with one-line errors naming the parameter. ``pixels`` (values per
    image) bounds eps: beyond the diameter of the [0, 1] image cube a radius means nothing and only overflows the step
    size."""
    attack, norm, loss = choice(Attack, attack, "attack"), choice(Norm, norm, "norm"), choice(PGDLoss, loss, "loss")
    diameter = 1.0 if norm is Norm.linf else math.sqrt(pixels)
    if not 0 <= eps <= diameter:
        raise ParameterError(f"eps must be a number in pixel units from 0 to {diameter:g} (the whole [0, 1] range in "
                             f"{norm}), e.g. 8/255; got {eps:g}", "eps")
    if steps < 0:
        raise ParameterError(f"steps must be >= 0, got {steps}", "steps")
    if batch_size < 1:
        raise ParameterError(f"batch_size must be >= 1, got {batch_size}", "batch_size")
    return attack, norm, loss


def result_path(run_dir: str | Path, attack: Attack | str, eps: float, suffix: str = ".json") -> Path:
    """``<run_dir>/eval/<attack>-<eps>.json``, eps written with ``:.6g`` (0.0313725 for 8/255)."""
    return Path(run_dir) / "eval" / f"{attack}-{eps:.6g}{suffix}"


def clean_accuracy(model: nn.Module, x: Tensor, y: Tensor, *, batch_size: int = 500,
                   shard: Optional[Shard] = None) -> float:
    """The share of ``(x, y)`` classified correctly: PGD with no step (eval mode, fp32, one forward per point)."""
    return pgd_accuracy(model, x, y, eps=0.0, steps=0, batch_size=batch_size, shard=shard)["clean_acc"]


def _attack(model, x, y, *, attack, eps, norm, steps, loss, n, version, attacks, only, batch_size, seed,
            state_path, shard) -> dict[str, Any]:
    if attack is Attack.autoattack:
        return run_autoattack(model, x, y, eps=eps, norm=norm, version=version, attacks=attacks, only=only, n=n,
                              seed=seed, batch_size=batch_size, state_path=state_path, shard=shard)
    idx = subset_indices(len(y), n, seed)
    res = pgd_accuracy(model, x[idx], y[idx], eps=eps, steps=steps, norm=norm, loss=loss, batch_size=batch_size,
                       seed=seed, shard=shard)
    return {"attack": attack, **res, "seed": seed}


def _state_path(run_dir: Optional[str | Path], attack: Attack, eps: float, shard: Shard) -> Optional[Path]:
    """AutoAttack's resume state in a run folder: ``eval/<attack>-<eps>.state.json``, one per rank
    (``.state-<rank>-of-<ranks>.json``) when the evaluation is split over a group."""
    if run_dir is None or attack is not Attack.autoattack:
        return None
    suffix = f".state-{shard.rank}-of-{shard.world_size}.json" if shard.split else ".state.json"
    return result_path(run_dir, attack, eps, suffix)


def _remove_states(run_dir: str | Path, attack: Attack, eps: float) -> None:
    """Every resume state of this evaluation (any world size): its result is written."""
    stem = result_path(run_dir, attack, eps, "")
    for path in stem.parent.glob(f"{stem.name}.state*.json"):
        path.unlink(missing_ok=True)


def evaluate_model(model: nn.Module, x: Tensor, y: Tensor, *, attack: Attack | str = Attack.autoattack, eps: float,
                   norm: Norm | str = Norm.linf, steps: int = 20, loss: PGDLoss | str = PGDLoss.ce,
                   n: Optional[int] = None, version: AutoAttackVersion | str = AutoAttackVersion.standard,
                   attacks: Optional[Sequence[str]] = None, only: Optional[Sequence[str]] = None,
                   batch_size: int = 500, seed: int = 0, run_dir: Optional[str | Path] = None,
                   meta: Optional[dict[str, Any]] = None, shard: Optional[Shard] = None) -> dict[str, Any]:
    """Attack ``model`` on ``(x, y)`` (or a seeded subset of ``n`` points) and run the sanity checks on the same
    points.

    Args:
        attack: ``autoattack`` (``version`` or a custom ``attacks`` list; ``only``: these of the version's attacks,
            with its settings) or ``pgd`` (``steps`` steps of ``loss``, step size 2.5 * eps / steps, one random
            start).
        run_dir: when given, the result goes to ``eval/<attack>-<eps>.json`` there (atomically), and AutoAttack
            resumes from / saves to ``eval/<attack>-<eps>.state.json`` (one file per rank under a ``shard``), removed
            once the result is written.
        meta: extra fields for the result (which model, which dataset), written with it.
        shard: the evaluation split over the ranks of a process group (every rank calls this function with the same
            arguments; :mod:`robustscale.attacks.sharding`): the attack and the checks each rank's share of the
            batches, the result the same as in one process, written by rank 0. Default: all of it here.

    Returns:
        The attack's result (``clean_acc``, ``robust_acc``, ``attack``, ``eps``, ``norm``, ``n``, ``batch_size``,
        ``seconds``, AutoAttack's ``per_attack`` and ``warnings``) plus ``checks`` (one dict per check), ``errors``
        (the violated checks, one line each) and ``ok``; on every rank.
    """
    attack, norm, loss = _validate(attack, eps, norm, loss, steps, batch_size, x[0].numel() if len(x) else 1)
    shard = shard or Shard()
    state = _state_path(run_dir, attack, eps, shard)
    res = _attack(model, x, y, attack=attack, eps=eps, norm=norm, steps=steps, loss=loss, n=n, version=version,
                  attacks=attacks, only=only, batch_size=batch_size, seed=seed, state_path=state, shard=shard)
    t0, idx = time.perf_counter(), subset_indices(len(y), n, seed)
    res["checks"] = sanity_checks(model, x[idx], y[idx], eps=eps, clean_acc=res["clean_acc"],
                                  robust_acc=res["robust_acc"], attack=attack, norm=norm, loss=loss,
                                  batch_size=batch_size, seed=seed, shard=shard)
    res["checks_seconds"] = time.perf_counter() - t0
    res["errors"] = [f"{c['name']}: {c['detail']}" for c in failed_checks(res["checks"])]
    res["ok"], res["batch_size"] = not res["errors"], batch_size
    res.update(meta or {})
    if run_dir is not None and shard.rank == 0:
        write_json(result_path(run_dir, attack, eps), res)
        _remove_states(run_dir, attack, eps)
    return res
