"""The N-D law: recovery of a known law, the compute-optimal frontier, intervals, identifiability, and the CLI."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from robustscale.analysis.ndlaw import NDLaw
from robustscale.analysis.plan import nearest_wrn, plan
from robustscale.cli import main
from robustscale.errors import UserError

pytestmark = pytest.mark.xdist_group("test_ndlaw")  # module fixtures built once (conftest.py)

# Bartoldson et al.'s (ICML 2024) CIFAR-10 fit as issue 19 quotes it (N and D in millions; their scaling_law_utils.py
# appears to fit raw counts, which changes A and B but not the exponents): any known law serves for recovery.
TRUE = {"E": 0.560, "A": 6.69, "B": 7.55, "alpha": 0.244, "beta": 0.228}
TRUE_A = TRUE["beta"] / (TRUE["alpha"] + TRUE["beta"])
K = 30.0  # FLOPs per parameter per sample, roughly a 4-step adversarial training


def true_loss(n, d):
    n, d = np.asarray(n, dtype=float) / 1e6, np.asarray(d, dtype=float) / 1e6
    return TRUE["E"] + TRUE["A"] * n ** -TRUE["alpha"] + TRUE["B"] * d ** -TRUE["beta"]


def nd_table(seed: int = 0, noise: float = 0.01, d_span=(0.1, 30.0), seeds: int = 1) -> pd.DataFrame:
    """A 5 x 5 grid of model sizes (0.5M-50M) and samples seen, the loss from the known law with 1% noise."""
    rng = np.random.default_rng(seed)
    sizes = np.logspace(np.log10(0.5e6), np.log10(50e6), 5)
    samples = np.logspace(np.log10(d_span[0] * 1e6), np.log10(d_span[1] * 1e6), 5)
    n, d = (grid.ravel() for grid in np.meshgrid(sizes, samples))
    n, d = np.repeat(n, seeds), np.repeat(d, seeds)
    loss = true_loss(n, d) * np.exp(rng.normal(0.0, noise, n.size))
    return pd.DataFrame({
        "run_id": [f"r{i}" for i in range(n.size)], "status": "done", "dataset": "cifar10", "params": n,
        "samples_seen": d, "seed": np.tile(np.arange(seeds), n.size // seeds), "epochs": np.round(d / 5e4),
        "adv_loss": loss, "autoattack_acc": 0.62 - 0.02 * loss, "train_flops": K * n * d,
    })


@pytest.mark.parametrize("seed", [0, 1])
def test_recovers_a_known_law_and_extrapolates_it(seed):
    law = NDLaw(bootstrap=0).fit(nd_table(seed))
    assert abs(law.alpha_ - TRUE["alpha"]) < 0.03 and abs(law.beta_ - TRUE["beta"]) < 0.03
    assert abs(law.a_ - TRUE_A) < 0.04 and law.a_ + law.b_ == pytest.approx(1.0)
    n, d = 3 * 50e6, 4 * 30e6  # 3x the largest model, 4x the most data
    assert law.predict(n, d) == pytest.approx(true_loss(n, d), rel=0.04)
    assert law.k_ == pytest.approx(K) and law.n_ == 25 and law.r2_ > 0.99


def test_a_and_b_are_reported_in_the_tables_raw_units():
    table = nd_table(0)
    law = NDLaw(bootstrap=0).fit(table)
    in_millions = table.assign(params=table["params"] / 1e6, samples_seen=table["samples_seen"] / 1e6)
    scaled = NDLaw(bootstrap=0).fit(in_millions)
    assert law.predict(table["params"], table["samples_seen"]) == pytest.approx(
        scaled.predict(table["params"] / 1e6, table["samples_seen"] / 1e6), rel=1e-3)
    assert law.A_ == pytest.approx(scaled.A_ * 1e6**scaled.alpha_, rel=1e-3)


def test_compute_optimal_size_minimises_the_law_on_its_budget():
    law = NDLaw(bootstrap=0).fit(nd_table(0))
    budget = 1e18
    sizes = np.logspace(6, 10, 4001)
    along = law.predict(sizes, budget / law.k_ / sizes)  # every split of the same compute
    assert sizes[np.argmin(along)] == pytest.approx(float(law.optimal_params(budget)), rel=0.01)
    assert float(law.optimal_loss(budget)) == pytest.approx(along.min(), rel=1e-6)
    needed = law.flops_for(float(law.optimal_loss(budget)))  # the inverse: the cheapest budget reaching that loss
    assert needed == pytest.approx(budget, rel=1e-6)
    assert math.isinf(law.flops_for(law.E_ * 0.99))  # below the floor: no budget reaches it


def test_plan_splits_the_budget_consistently():
    table = nd_table(0)
    small, large = plan(table, 1e17, bootstrap=0), plan(table, 1e18, bootstrap=0)
    for result in (small, large):
        assert result["params"] * result["samples"] * result["k"] == pytest.approx(result["flops"], rel=0.05)
    assert large["params"] / small["params"] == pytest.approx(10 ** small["a"], rel=1e-6)  # N* ~ C^a per decade
    assert large["samples"] / small["samples"] == pytest.approx(10 ** small["b"], rel=1e-6)
    assert large["loss"] < small["loss"]
    assert small["epochs"] == pytest.approx(small["samples"] / 50000)  # CIFAR-10's train split by default
    assert small["dataset_size"] == 50000 and plan(table, 1e17, bootstrap=0, dataset_size=1000)["epochs"] == \
        pytest.approx(small["samples"] / 1000)
    wrn = small["wrn"]
    assert wrn["name"] == f"wrn_{wrn['depth']}_{wrn['width']}" and (wrn["depth"] - 4) % 6 == 0
    assert 0.7 < wrn["params"] / small["params"] < 1.4


def test_plan_for_a_target_finds_the_cheapest_budget_and_maps_accuracy():
    table = nd_table(0)
    law_loss = plan(table, 1e18, bootstrap=0)["loss"]
    by_loss = plan(table, target_loss=law_loss, bootstrap=0)
    assert by_loss["target"]["flops"] == pytest.approx(1e18, rel=1e-4)
    assert by_loss["flops"] == by_loss["target"]["flops"]  # without --flops, the plan is the target's budget
    # the table relates accuracy to loss (0.62 - 0.02 L): the isotonic map inverts it inside the table's range
    acc_target = 0.62 - 0.02 * 8.0
    by_acc = plan(table, target_acc=acc_target, bootstrap=0)
    assert by_acc["target"]["loss"] == pytest.approx(8.0, abs=0.1)
    assert by_acc["accuracy"] == pytest.approx(acc_target, abs=0.01)
    assert by_acc["accuracy_metric"] == "autoattack_acc"
    unreachable = plan(table, 1e18, target_loss=0.1, bootstrap=0)["target"]
    assert unreachable["reachable"] is False and "floor" in unreachable["note"]


@pytest.mark.parametrize("params", [36_479_194, 266_796_506, 1.0e9])  # WRN-28-10, WRN-70-16, beyond the paper
def test_nearest_wrn_is_a_valid_shape_within_five_percent(params):
    wrn = nearest_wrn(params)
    assert (wrn["depth"] - 4) % 6 == 0 and wrn["width"] >= 1
    assert wrn["params"] == pytest.approx(params, rel=0.05) and wrn["ratio"] == pytest.approx(wrn["params"] / params)
    assert nearest_wrn(36_479_194)["name"] == "wrn_28_10"  # an exact match of the reference shape is kept


def test_bootstrap_intervals_contain_the_truth_in_most_repetitions():
    hits = {"alpha": 0, "beta": 0, "a": 0}
    for rep in range(3):
        law = NDLaw(bootstrap=20, seed=rep).fit(nd_table(100 + rep))
        truth = {"alpha": TRUE["alpha"], "beta": TRUE["beta"], "a": TRUE_A}
        for name in hits:
            low, high = law.ci_[name]
            hits[name] += low <= truth[name] <= high
        assert set(law.ci_) >= {"E", "A", "B", "alpha", "beta", "a", "b"}
        assert law.ci_["alpha"][1] - law.ci_["alpha"][0] < 0.15  # informative, not the whole axis
        assert {"alpha", "beta"} <= set(law.identifiability_["pinned"])
    assert all(count >= 2 for count in hits.values()), hits


def test_a_narrow_data_range_is_reported_not_hidden():
    law = NDLaw(bootstrap=0).fit(nd_table(0, d_span=(1.0, 1.5)))  # D spans 1.5x: the data term is a constant
    ident = law.identifiability_
    assert ident["method"].startswith("Gauss-Newton")
    assert {"B", "beta"} & set(ident["unidentified"])
    assert any("spans 1.5x" in note for note in ident["notes"])
    wide = NDLaw(bootstrap=0).fit(nd_table(0)).identifiability_
    assert {"alpha", "beta", "A", "B"} <= set(wide["pinned"])


def test_replicates_are_resampled_as_recipes():
    law = NDLaw(bootstrap=2).fit(nd_table(0, seeds=2))
    assert law.replicates_ and law.resampled_.startswith("recipes") and law.n_ == 50
    plain = NDLaw(bootstrap=2, resample_seeds=False).fit(nd_table(0, seeds=2))
    assert plain.resampled_ == "runs"


def test_robust_error_is_the_metric_without_a_loss_column():
    table = nd_table(0).drop(columns="adv_loss")
    table["autoattack_acc"] = 1.0 - true_loss(table["params"], table["samples_seen"]) / 30.0
    law = NDLaw(bootstrap=0).fit(table)
    assert law.runs_.metric == "1 - autoattack_acc" and law.runs_.kind == "robust_error"
    assert abs(law.alpha_ - TRUE["alpha"]) < 0.03  # error = L / 30: the same exponents
    result = plan(table, 1e18, bootstrap=0)
    assert result["accuracy"] == pytest.approx(1.0 - result["loss"])


@pytest.mark.parametrize("change, message", [
    (lambda t: t.drop(columns="samples_seen"), "no 'samples_seen' column"),
    (lambda t: t.head(4), "needs at least 6"),
    (lambda t: t.assign(params=1e6), "same params"),
])
def test_tables_that_cannot_fit_say_why_in_one_line(change, message, assert_one_line):
    with pytest.raises(UserError, match=message) as err:
        NDLaw(bootstrap=0).fit(change(nd_table(0)))
    assert_one_line(err.value)


# ------------------------------------------------------------------------------------------------------------ CLI


@pytest.fixture(scope="module")
def nd_csv(tmp_path_factory):
    path = tmp_path_factory.mktemp("nd") / "nd.csv"
    nd_table(0).to_csv(path, index=False)
    return path


def _json(capsys, *argv):
    code = main([*argv, "--json"])
    out = capsys.readouterr()
    assert code == 0, out.err
    return json.loads(out.out)


def test_fit_law_nd_prints_the_contract(capsys, nd_csv):
    result = _json(capsys, "fit", str(nd_csv), "--law", "nd", "--bootstrap", "10")
    law = result["nd_law"]
    assert {"E", "A", "B", "alpha", "beta", "a", "b", "k", "r2", "n", "ci"} <= set(law)
    assert result["metric"] == law["metric"] == "adv_loss"
    assert set(law["ci"]) >= {"E", "A", "B", "alpha", "beta"}
    assert all(lo <= hi for lo, hi in law["ci"].values())
    assert law["k"] == pytest.approx(K) and law["n"] == 25
    assert "unidentified" in law["identifiability"] and "notes" in law["identifiability"]
    chosen = _json(capsys, "fit", str(nd_csv), "--law", "nd", "--bootstrap", "0", "--metric", "autoattack_acc")
    assert chosen["metric"] == "1 - autoattack_acc" and chosen["nd_law"]["ci"] is None


def test_plan_cli_prints_the_contract(capsys, nd_csv):
    result = _json(capsys, "plan", str(nd_csv), "--flops", "1e18", "--bootstrap", "10")
    assert {"params", "samples", "loss", "accuracy", "epochs", "wrn", "k", "a", "b", "interval"} <= set(result)
    low, high = result["interval"]["params"]
    assert low <= result["params"] <= high
    target = _json(capsys, "plan", str(nd_csv), "--target", str(result["loss"]), "--bootstrap", "0")
    assert target["target"]["flops"] == pytest.approx(1e18, rel=1e-3)


@pytest.mark.parametrize("argv, message", [
    (["plan", "{csv}"], "needs a budget"),
    (["plan", "{csv}", "--flops", "-5"], "positive"),
    (["plan", "{csv}", "--flops", "1e18", "--target", "5", "--target-acc", "0.5"], "not both"),
    (["fit", "{csv}", "--law", "chinchilla"], "'chinchilla' is not one of 'flops', 'nd'"),
    (["plan", "{csv}", "--flops", "1e18", "--metric", "nope"], "no 'nope' column"),
])
def test_plan_and_fit_refuse_bad_input_in_one_line(capsys, nd_csv, argv, message):
    code = main([a.replace("{csv}", str(nd_csv)) for a in argv] + ["--bootstrap", "0"])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and message in err, err
