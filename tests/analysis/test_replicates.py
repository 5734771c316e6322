"""Seed replicates: recipes, per-recipe spread with t-intervals (``results --by-recipe``), seed-aware bootstraps."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from robustscale.analysis import ScalingLaw
from robustscale.analysis.replicates import by_recipe, recipe_codes, resample_recipes, resample_within_recipes
from robustscale.cli import main
from robustscale.config import config_to_dict, load_config
from robustscale.store.record import Accounting, Metrics, RunRecord, Status, run_id, write_record

AA = {("at", 0): 0.50, ("at", 1): 0.53, ("at", 2): 0.56, ("trades", 0): 0.60, ("trades", 1): 0.61, ("trades", 2): 0.65}


def _run(runs, digits_yaml, loss, seed):
    config = config_to_dict(load_config(digits_yaml, [f"train.loss={loss}", f"train.seed={seed}"]))
    record = RunRecord.new(config, Status.done)
    record.params = 77850
    record.metrics = Metrics(clean_acc=0.9, pgd40_acc=AA[loss, seed] + 0.05, autoattack_acc=AA[loss, seed])
    record.accounting = Accounting(train_flops=int(1e12 * (1 + seed)), samples_seen=14370)
    (runs / run_id(config)).mkdir(parents=True)
    write_record(runs / run_id(config), record)


@pytest.fixture
def runs(tmp_path, digits_yaml):
    """Two recipes (PGD-AT, TRADES) x three seeds, as a sweep with ``seeds: [0, 1, 2]`` writes them."""
    for loss, seed in AA:
        _run(tmp_path, digits_yaml, loss, seed)
    return tmp_path


def test_results_by_recipe_gives_mean_std_n_and_a_t_interval(runs, capsys):
    assert main(["results", str(runs), "--by-recipe", "--format", "json"]) == 0
    rows = {row["loss"]: row for row in json.loads(capsys.readouterr().out)}
    assert set(rows) == {"at", "trades"}
    for loss, row in rows.items():
        values = np.array([AA[loss, s] for s in range(3)])
        half = stats.t.ppf(0.975, 2) * values.std(ddof=1) / np.sqrt(3)  # 4.30 standard errors for n = 3
        assert row["n"] == 3 and row["autoattack_acc_n"] == 3 and row["seeds"] == "0,1,2"
        assert row["autoattack_acc_mean"] == pytest.approx(values.mean())
        assert row["autoattack_acc_std"] == pytest.approx(values.std(ddof=1))
        assert [row["autoattack_acc_ci_lo"], row["autoattack_acc_ci_hi"]] == pytest.approx(
            [values.mean() - half, values.mean() + half])
        assert row["train_flops_mean"] == pytest.approx(2e12)
    assert rows["at"]["recipe_id"] != rows["trades"]["recipe_id"]


def test_results_by_recipe_table_shows_the_spread(runs, capsys):
    assert main(["results", str(runs), "--by-recipe"]) == 0
    out = capsys.readouterr().out
    assert "0.5300 ± 0.0300 [" in out and "2 recipes" in out


def test_recipe_id_ignores_only_the_seed(runs):
    from robustscale.store.results import results_table

    table = results_table(runs)
    assert table.groupby("recipe_id")["seed"].apply(sorted).tolist() == [[0, 1, 2], [0, 1, 2]]
    assert table["run_id"].nunique() == 6


def test_without_recipe_ids_the_knob_columns_define_recipes():
    table = pd.DataFrame({"model": ["a", "a", "b", "b"], "loss": ["at"] * 4, "seed": [0, 1, 0, 1],
                          "autoattack_acc": [0.5, 0.6, 0.7, 0.8]})
    assert recipe_codes(table).tolist() == [0, 0, 1, 1]
    assert recipe_codes(table.drop(columns="seed")).tolist() == [0, 1, 2, 3]  # no seed column: no known replicates
    summary = by_recipe(table)
    assert summary["n"].tolist() == [2, 2] and summary["autoattack_acc_mean"].tolist() == pytest.approx([0.55, 0.75])


def test_resampling_keeps_recipes_together():
    codes = np.array([0, 0, 0, 1, 1, 2])
    rng = np.random.default_rng(0)
    for _ in range(20):
        within = resample_within_recipes(codes, rng)
        assert sorted(codes[within].tolist()) == codes.tolist()  # every recipe keeps its number of rows
        grouped = resample_recipes(codes, rng)
        drawn = codes[grouped]
        counts = np.bincount(drawn, minlength=3)
        assert all(counts[r] % np.bincount(codes)[r] == 0 for r in range(3))  # whole recipes, seeds redrawn inside


def test_accuracy_law_bootstrap_includes_seed_noise():
    """Recipes whose seeds scatter by 5%: resampling seeds widens the interval; the point estimate stays."""
    rng = np.random.default_rng(0)
    flops = np.repeat(np.logspace(14, 16, 19), 3)
    acc = 0.02 * flops**0.06 * np.exp(rng.normal(0.0, 0.05, flops.size))
    groups = np.repeat(np.arange(19), 3)
    plain = ScalingLaw(bootstrap=300).fit(flops, acc)
    seeded = ScalingLaw(bootstrap=300).fit(flops, acc, groups=groups)
    assert seeded.alpha_ == plain.alpha_ and seeded.seed_resampled_ and not plain.seed_resampled_
    width = lambda law: law.ci_["alpha"][1] - law.ci_["alpha"][0]  # noqa: E731
    assert width(seeded) > width(plain)
