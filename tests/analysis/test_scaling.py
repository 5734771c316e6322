"""The laws themselves: recovery of known parameters, the envelope, the saturating law, the held-out check."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.base import clone

from robustscale.analysis import SaturatingLaw, ScalingLaw, envelope_indices, holdout_error
from robustscale.errors import UserError

TRUE_C, TRUE_ALPHA = 0.02, 0.06


def power_law_data(n: int = 300, noise: float = 0.03, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    flops = 10.0 ** rng.uniform(14, 16, n)  # two orders of magnitude, as in the paper
    return flops, TRUE_C * flops**TRUE_ALPHA * np.exp(rng.normal(0.0, noise, n))


def saturating_data(n: int = 200, seed: int = 2) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    flops = 10.0 ** rng.uniform(14, 17, n)
    return flops, 0.6 - 0.5 * (flops / 1e14) ** -0.5 + rng.normal(0.0, 0.003, n)


def test_power_law_recovers_c_and_alpha_inside_its_interval():
    flops, acc = power_law_data()
    law = ScalingLaw(bootstrap=200, envelope=False).fit(flops, acc)
    assert law.ci_["alpha"][0] <= TRUE_ALPHA <= law.ci_["alpha"][1]
    assert law.ci_["C"][0] <= TRUE_C <= law.ci_["C"][1]
    assert abs(law.alpha_ - TRUE_ALPHA) < 0.01
    assert law.ci_["alpha"][1] - law.ci_["alpha"][0] < 0.02  # the interval is informative, not the whole line
    assert law.n_ == 300 and law.r2_ > 0.5


def test_bootstrap_is_seeded():
    flops, acc = power_law_data()
    first = ScalingLaw(bootstrap=100, seed=3, envelope=False).fit(flops, acc).ci_
    assert ScalingLaw(bootstrap=100, seed=3, envelope=False).fit(flops, acc).ci_ == first
    assert ScalingLaw(bootstrap=100, seed=4, envelope=False).fit(flops, acc).ci_ != first


def test_envelope_keeps_the_best_run_of_each_non_empty_bin():
    # log10 FLOPs 0..3 in 3 bins: [0,1) holds runs 0,1; [1,2) runs 2,3,4; [2,3] runs 5,6 (the top edge is inclusive).
    flops = np.array([1.0, 5.0, 10.0, 20.0, 50.0, 200.0, 1000.0])
    acc = np.array([0.30, 0.35, 0.40, 0.38, 0.45, 0.50, 0.48])
    assert envelope_indices(flops, acc, bins=3).tolist() == [1, 4, 5]


def test_envelope_skips_empty_bins_and_the_law_fits_only_envelope_points():
    flops = np.array([1.0, 2.0, 3.0, 1e3, 1.1e3, 1e6, 2e6])
    acc = np.array([0.2, 0.25, 0.22, 0.4, 0.3, 0.5, 0.55])
    law = ScalingLaw(bins=6, bootstrap=0).fit(flops, acc)
    assert law.points_.tolist() == [[2.0, 0.25], [1e3, 0.4], [2e6, 0.55]]
    assert law.n_ == 3 and law.ci_ is None


def test_a_law_needs_three_points_spread_over_flops():
    with pytest.raises(UserError, match="non-empty FLOP bins"):
        ScalingLaw(bins=19).fit([1e15, 1e15, 1e15, 1e15], [0.3, 0.4, 0.5, 0.6])


def test_power_law_flops_for_inverts_predict_and_handles_no_growth():
    flops, acc = power_law_data()
    law = ScalingLaw(bootstrap=50, envelope=False).fit(flops, acc)
    needed = law.flops_for(0.2)
    assert law.predict(needed) == pytest.approx(0.2)
    low, high = law.flops_for_interval(0.2)
    assert low < needed < high
    flat = ScalingLaw(bootstrap=0, envelope=False).fit([1e14, 1e15, 1e16], [0.5, 0.5, 0.5])
    assert math.isinf(flat.flops_for(0.6))


def test_saturating_law_recovers_its_ceiling_and_says_a_higher_target_is_unreachable():
    flops, acc = saturating_data()
    law = SaturatingLaw(envelope=False, bootstrap=30, ceiling=1.0).fit(flops, acc)
    assert law.A_ == pytest.approx(0.6, abs=0.01)
    assert law.gamma_ == pytest.approx(0.5, abs=0.1)
    assert math.isinf(law.flops_for(0.65))
    assert law.predict(law.flops_for(0.55)) == pytest.approx(0.55, abs=1e-6)
    assert law.ci_["A"][0] <= 0.6 <= law.ci_["A"][1]


def test_saturating_plateau_respects_the_accuracy_ceiling():
    flops, acc = power_law_data()  # keeps growing: an unbounded fit would put A far above 1
    assert SaturatingLaw(envelope=False, bootstrap=0, ceiling=1.0).fit(flops, acc).A_ <= 1.0


def test_holdout_check_prefers_the_law_that_generated_the_data():
    flops, acc = saturating_data()
    power = holdout_error(ScalingLaw(bootstrap=0), flops, acc)
    saturating = holdout_error(SaturatingLaw(bootstrap=0, ceiling=1.0), flops, acc)
    assert saturating["rmse"] < power["rmse"]
    assert power["n_train"] + power["n_test"] == envelope_indices(flops, acc, 19).size
    assert power["n_test"] >= 1


def test_estimators_follow_the_scikit_learn_contract():
    law = ScalingLaw(bins=7, bootstrap=10)
    assert law.get_params()["bins"] == 7 and not hasattr(law, "alpha_")
    flops, acc = power_law_data(n=50)
    assert law.fit(flops, acc) is law and hasattr(law, "alpha_")
    fresh = clone(law)
    assert fresh.get_params() == law.get_params() and not hasattr(fresh, "alpha_")
