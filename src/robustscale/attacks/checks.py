"""Sanity checks that run with every evaluation and travel in its result.

A robustness number is only worth reporting when the attack behaved: no perturbation (eps = 0) must leave every
correctly classified point correct, an attack can never raise accuracy above clean accuracy, and a larger ball can
only make PGD stronger. A failed check usually means a bug or gradient masking (Athalye et al.; Carlini et al.'s
checklist), so it is an error in the result and ``robustscale eval`` exits non-zero.
"""

from __future__ import annotations

from typing import Any, Optional

import torch
from torch import nn

from robustscale.attacks.pgd import pgd_accuracy
from robustscale.attacks.sharding import Shard
from robustscale.enums import Attack, Norm, PGDLoss, choice

__all__ = ["sanity_checks", "failed_checks", "check_eps_zero", "check_robust_le_clean", "check_monotone_in_eps",
           "check_not_weaker_than_pgd", "CHECK_STEPS", "CHECK_POINTS"]

CHECK_STEPS = 10  # PGD steps for the eps grid: enough to see a trend, a fraction of the evaluation's cost
CHECK_POINTS = 1000  # the grid runs on at most this many of the evaluated points
GRID = (0.0, 0.5, 1.0)  # fractions of eps; 0 doubles as the eps = 0 check


def _check(name: str, ok: bool, detail: str) -> dict[str, Any]:
    return {"name": name, "ok": bool(ok), "detail": detail}


def tolerance(n: int) -> float:
    """Slack for comparisons between two randomised attacks: two points of n, at least one percentage point."""
    return max(0.01, 2.0 / max(n, 1))


def check_eps_zero(clean_acc: float, robust_acc_at_zero: float) -> dict[str, Any]:
    """PGD with eps = 0 must report exactly the clean accuracy (projection and clipping leave x unchanged)."""
    ok = robust_acc_at_zero == clean_acc
    return _check("eps_zero_robust_equals_clean", ok,
                  f"robust at eps=0 {robust_acc_at_zero:.4f} vs clean {clean_acc:.4f}")


def check_robust_le_clean(clean_acc: float, robust_acc: float) -> dict[str, Any]:
    """Robust accuracy counts points correct clean *and* under attack, so it cannot exceed clean accuracy."""
    return _check("robust_le_clean", robust_acc <= clean_acc, f"robust {robust_acc:.4f} vs clean {clean_acc:.4f}")


def check_monotone_in_eps(accs: dict[float, float], tol: float) -> dict[str, Any]:
    """PGD accuracy must not increase with eps (beyond ``tol``: the random start makes each run a sample)."""
    pairs = sorted(accs.items())
    rises = [(a, b) for (_, a), (_, b) in zip(pairs, pairs[1:]) if b > a + tol]
    grid = ", ".join(f"eps={e:.4g}: {a:.4f}" for e, a in pairs)
    return _check("pgd_monotone_in_eps", not rises, f"{grid} (tolerance {tol:.4f})")


def check_not_weaker_than_pgd(robust_acc: float, pgd_acc: float, tol: float) -> dict[str, Any]:
    """AutoAttack contains stronger gradient attacks than PGD-10: reporting more accuracy than PGD means it ran
    wrong (not on logits, wrong eps or norm, a broken model wrapper)."""
    return _check("autoattack_le_pgd", robust_acc <= pgd_acc + tol,
                  f"autoattack {robust_acc:.4f} vs PGD-{CHECK_STEPS} {pgd_acc:.4f} (tolerance {tol:.4f})")


def _grid_accuracies(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, norm: Norm, loss: PGDLoss,
                     batch_size: int, seed: int, shard: Optional[Shard]) -> tuple[float, dict[float, float]]:
    """Clean accuracy and PGD accuracy at each eps of the grid, on the same points and seed."""
    accs, clean = {}, None
    for frac in GRID:
        res = pgd_accuracy(model, x, y, eps=frac * eps, steps=CHECK_STEPS, step_size=2.5 * eps / CHECK_STEPS,
                           norm=norm, loss=loss, batch_size=batch_size, seed=seed, shard=shard)
        accs[frac * eps], clean = res["robust_acc"], res["clean_acc"]
    return clean, accs


def sanity_checks(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, clean_acc: float,
                  robust_acc: float, attack: Attack | str, norm: Norm | str = Norm.linf,
                  loss: PGDLoss | str = PGDLoss.ce, batch_size: int = 500,
                  seed: int = 0, max_points: Optional[int] = CHECK_POINTS,
                  shard: Optional[Shard] = None) -> list[dict[str, Any]]:
    """Run every check for one evaluation of ``model`` on ``(x, y)`` (the evaluated points).

    The eps grid uses a fixed step size (that of the full eps), so a larger ball only adds reachable points. It runs
    on the first ``max_points`` evaluated points; ``clean_acc`` / ``robust_acc`` are the evaluation's own numbers.
    ``shard``: the grid split over the ranks of a group, as :func:`~robustscale.attacks.pgd.pgd_accuracy` splits it
    (every rank calls this function and gets the same checks).

    Returns:
        One ``{"name", "ok", "detail"}`` dict per check; :func:`failed_checks` picks the violations.
    """
    xs, ys = (x[:max_points], y[:max_points]) if max_points else (x, y)
    grid_clean, accs = _grid_accuracies(model, xs, ys, eps=eps, norm=norm, loss=loss, batch_size=batch_size,
                                        seed=seed, shard=shard)
    tol = tolerance(len(ys))
    checks = [check_eps_zero(grid_clean, accs[0.0]), check_robust_le_clean(clean_acc, robust_acc),
              check_monotone_in_eps(accs, tol)]
    if choice(Attack, attack, "attack") is Attack.autoattack and len(ys) == len(y):
        checks.append(check_not_weaker_than_pgd(robust_acc, accs[eps], tol))
    return checks


def failed_checks(checks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The violated checks (empty when the evaluation can be trusted)."""
    return [c for c in checks if not c["ok"]]
