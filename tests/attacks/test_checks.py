"""The sanity checks flag exactly the violations they name."""

import pytest
import torch

from robustscale.attacks import failed_checks, sanity_checks
from robustscale.attacks.checks import (check_eps_zero, check_monotone_in_eps, check_not_weaker_than_pgd,
                                        check_robust_le_clean, tolerance)


def test_eps_zero_needs_exact_equality():
    assert check_eps_zero(0.9, 0.9)["ok"]
    assert not check_eps_zero(0.9, 0.89)["ok"]


def test_robust_above_clean_fails():
    assert check_robust_le_clean(0.9, 0.5)["ok"]
    assert not check_robust_le_clean(0.5, 0.6)["ok"]


def test_monotone_allows_noise_but_not_a_rise():
    tol = tolerance(200)
    assert check_monotone_in_eps({0.0: 0.9, 0.1: 0.5, 0.2: 0.505}, tol)["ok"]
    bad = check_monotone_in_eps({0.0: 0.9, 0.1: 0.5, 0.2: 0.7}, tol)
    assert not bad["ok"] and "eps=0.2" in bad["detail"]


def test_autoattack_weaker_than_pgd_fails():
    assert check_not_weaker_than_pgd(0.40, 0.45, 0.01)["ok"]
    assert not check_not_weaker_than_pgd(0.60, 0.45, 0.01)["ok"]


def test_failed_checks_picks_the_violations():
    checks = [check_robust_le_clean(0.9, 0.5), check_eps_zero(0.9, 0.8)]
    assert [c["name"] for c in failed_checks(checks)] == ["eps_zero_robust_equals_clean"]


class _Noisy(torch.nn.Module):
    """A randomised 'defence': fresh noise on every forward, so eps = 0 does not reproduce clean accuracy."""

    def forward(self, x):
        return x.flatten(1)[:, :10] + 3.0 * torch.randn(len(x), 10)


def test_randomised_model_fails_the_eps_zero_check():
    torch.manual_seed(0)
    x, y = torch.rand(200, 3, 8, 8), torch.randint(0, 10, (200,))
    checks = sanity_checks(_Noisy(), x, y, eps=0.1, clean_acc=0.1, robust_acc=0.1, attack="pgd")
    assert "eps_zero_robust_equals_clean" in [c["name"] for c in failed_checks(checks)]


@pytest.mark.parametrize("attack, names", [("pgd", 3), ("autoattack", 4)])
def test_every_check_is_reported(attack, names):
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(192, 10)).eval()
    x, y = torch.rand(50, 3, 8, 8), torch.randint(0, 10, (50,))
    checks = sanity_checks(model, x, y, eps=0.1, clean_acc=0.2, robust_acc=0.0, attack=attack)
    assert len(checks) == names and all(set(c) == {"name", "ok", "detail"} for c in checks)
