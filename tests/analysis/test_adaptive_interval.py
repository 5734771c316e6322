"""Alpha's interval from the revealed runs, whether they pin the law, and stopping on it (issue 31)."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pandas as pd
import pytest

from robustscale.analysis.adaptive import make_strategy
from robustscale.analysis.adaptive_law import MIN_PINNED_BINS, law_interval
from robustscale.analysis.replay import replay
from robustscale.cli import main

pytestmark = pytest.mark.xdist_group("test_adaptive_interval")  # module fixtures built once (conftest.py)

ALPHA = 0.05


def power_law_runs(rng: np.random.Generator, n: int = 15, noise: float = 0.01, **columns) -> pd.DataFrame:
    """``n`` runs, one per FLOP bin, on ``acc = 0.02 * FLOPs**ALPHA`` with lognormal noise (sd ``noise`` in log10)."""
    flops = np.logspace(10, 14, n)
    accuracy = 0.02 * flops**ALPHA * 10.0 ** rng.normal(0.0, noise, n)
    table = pd.DataFrame({"run_id": [f"r{i}" for i in range(n)], "status": "done", "train_flops": flops,
                          "autoattack_acc": accuracy, **columns})
    table.attrs["source"] = "runs.csv"
    return table


def test_the_interval_covers_a_known_alpha_about_95_percent_of_the_time():
    rng = np.random.default_rng(0)
    laws = [law_interval(power_law_runs(rng), bootstrap=300, seed=i) for i in range(200)]
    covered = [law["alpha_ci"][0] <= ALPHA <= law["alpha_ci"][1] for law in laws]
    assert 0.88 <= np.mean(covered) <= 1.0  # a pairs bootstrap of 15 points: about 0.92
    widths = np.array([law["ci_width"] for law in laws])
    assert np.all(widths > 0) and np.median(widths) < 0.5 * ALPHA  # it covers by being right, not by being huge
    assert all(law["pinned"] and law["not_pinned"] == [] for law in laws)


def test_one_family_too_few_bins_and_a_wide_interval_do_not_pin_the_law():
    rng = np.random.default_rng(1)
    grid = pd.DataFrame({"activation": ["relu", "silu"] * 8, "loss": "at"})
    one = law_interval(power_law_runs(rng, activation="relu", loss="at"), grid=grid)
    assert not one["pinned"] and [r.split(":")[0] for r in one["not_pinned"]] == ["one_family"]
    assert "relu" in one["not_pinned"][0] and "2 recipe families" in one["not_pinned"][0]
    both = law_interval(power_law_runs(rng, activation=["relu", "silu"] * 7 + ["relu"], loss="at"), grid=grid)
    assert both["pinned"]

    few = law_interval(power_law_runs(rng, n=MIN_PINNED_BINS - 1))
    assert few["alpha"] is not None and [r.split(":")[0] for r in few["not_pinned"]] == ["too_few_bins"]

    noisy = law_interval(power_law_runs(rng, noise=0.3))
    assert noisy["ci_width"] > ALPHA and "wide" in [r.split(":")[0] for r in noisy["not_pinned"]]

    none = law_interval(power_law_runs(rng, n=2))
    assert none["alpha"] is None and not none["pinned"] and none["not_pinned"][0].startswith("no_law")


def test_replicate_seeds_widen_the_interval_by_their_noise():
    rng = np.random.default_rng(2)
    base = power_law_runs(rng, noise=0.0)
    seeds = pd.concat([base.assign(seed=s, autoattack_acc=base["autoattack_acc"] * 10.0 ** rng.normal(0, 0.05, 15))
                       for s in range(3)], ignore_index=True)
    seeds["recipe_id"] = np.tile(base["run_id"], 3)
    seeds.attrs["source"] = "seeds.csv"
    with_seeds, without = (law_interval(seeds, resample_seeds=flag) for flag in (True, False))
    assert with_seeds["alpha"] == without["alpha"]  # the point estimate is fit's
    assert with_seeds["ci_width"] > without["ci_width"]


def family_grid(seed: int = 0) -> pd.DataFrame:
    """A factorial grid in which the SiLU runs lie on ``acc = 0.02 * FLOPs**ALPHA`` (with small noise), ReLU below."""
    rng = np.random.default_rng(seed)
    rows = []
    for params, steps, epochs, activation in itertools.product([1e6, 2e6, 4e6, 8e6], [1, 3, 7], [100, 300],
                                                               ["relu", "silu"]):
        flops = 6.0 * params * 5e4 * epochs * (steps + 1)
        accuracy = 0.02 * flops**ALPHA * 10.0 ** rng.normal(0, 0.002) * (1.0 if activation == "silu" else 0.8)
        rows.append({"params": params, "attack_steps": steps, "epochs": epochs, "ema": epochs == 300,
                     "activation": activation, "train_flops": flops, "autoattack_acc": accuracy})
    table = pd.DataFrame(rows)
    table.insert(0, "run_id", [f"run{i:02d}" for i in range(len(table))])
    table.insert(1, "status", "done")
    return table


@pytest.fixture(scope="module")
def grid_csv(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("interval") / "grid.csv"
    family_grid().to_csv(path, index=False)
    return str(path)


def test_replay_json_carries_the_intervals_and_their_coverage(capsys, grid_csv):
    argv = ["replay", grid_csv, "--strategy", "envelope", "--budget-frac", "0.2", "--seeds", "3", "--batch-size", "4",
            "--bootstrap", "200", "--json"]
    assert main(argv) == 0
    result = json.loads(capsys.readouterr().out)
    full = result["full_alpha_ci"]
    assert full[0] <= result["full_alpha"] <= full[1] and full[1] - full[0] < 0.2 * ALPHA
    seeds = result["seeds"]
    assert len(seeds) == 3
    for seed in seeds:
        lo, hi = seed["alpha_ci"]
        assert lo <= seed["alpha"] <= hi and seed["covered"] == (lo <= result["full_alpha"] <= hi)
        assert seed["stop_reason"] == "budget" and isinstance(seed["not_pinned"], list)
    assert result["coverage"] == pytest.approx(np.mean([s["covered"] for s in seeds]))
    for key in ("median_alpha_error", "median_runs", "median_compute_frac", "full_alpha", "strategy", "excluded"):
        assert key in result  # the keys before issue 31 stay
    assert main(argv[:-1]) == 0
    text = capsys.readouterr().out
    assert "holds the full-table alpha in" in text and f"[{full[0]:.4g}, {full[1]:.4g}]" in text


def test_target_ci_stops_once_the_law_stayed_pinned_and_narrow_for_settle_runs(grid_csv):
    table = pd.read_csv(grid_csv)
    options = {"budget_frac": 0.5, "seeds": 1, "batch_size": 2, "bootstrap": 200}
    budget = replay(table, "envelope", **options)["seeds"][0]
    target = replay(table, "envelope", **options, target_ci=0.5 * ALPHA)["seeds"][0]
    assert target["stop_reason"] == "target_ci" and target["pinned"] and target["ci_width"] < 0.5 * ALPHA
    assert target["runs"] < budget["runs"] and target["chosen"] == budget["chosen"][:target["runs"]]
    # the law after each round, as the replay refitted it: the stop came at the first round closing 8 runs
    # (SETTLE_RUNS) over which every round's law was pinned and narrower than the target
    narrow = [law["pinned"] and law["ci_width"] < 0.5 * ALPHA for law in
              (law_interval(table.set_index("run_id").loc[target["chosen"][:runs]].reset_index(), bootstrap=200,
                            seed=0, grid=table) for runs in range(2, target["runs"] + 1, 2))]
    assert all(narrow[-5:]) and not all(narrow[-6:])  # rounds at runs n-8, ..., n: five rounds of two runs
    first = replay(table, "envelope", **options, target_ci=0.5 * ALPHA, settle_runs=0)["seeds"][0]
    assert first["runs"] == 2 * (narrow.index(True) + 1) < target["runs"]  # without the wait: the first narrow round
    never = replay(table, "envelope", **{**options, "budget_frac": 0.3}, target_ci=1e-9)
    assert never["seeds"][0]["stop_reason"] == "budget"


@pytest.mark.parametrize("value", [0.0, -1.0, float("nan"), float("inf")])
def test_a_bad_target_ci_is_one_line(capsys, grid_csv, value):
    assert main(["replay", grid_csv, "--target-ci", str(value)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "--target-ci" in err


def replicate_grid() -> pd.DataFrame:
    """Twelve recipes (six sizes, ReLU or SiLU at the same FLOPs) x three seeds, with seed noise large against the
    recipes' differences: the better of each size's two recipes holds that FLOP bin's envelope point."""
    rng = np.random.default_rng(3)
    rows = []
    for i, (params, activation) in enumerate(itertools.product([1e6, 2e6, 4e6, 8e6, 16e6, 32e6], ["relu", "silu"])):
        flops = 6.0 * params * 5e4 * 100
        for seed in range(3):
            rows.append({"run_id": f"r{i}s{seed}", "status": "done", "recipe_id": f"r{i}", "seed": seed,
                         "params": params, "activation": activation, "train_flops": flops,
                         "pgd40_acc": 0.02 * flops**ALPHA * 10.0 ** rng.normal(0, 0.08)})
    return pd.DataFrame(rows).set_index("run_id", drop=False)


def test_envelope_anchors_the_grid_ends_first_while_the_interval_is_wide():
    rng = np.random.default_rng(4)
    rows = [{"params": params, "epochs": epochs, "activation": activation, "train_flops": 3e5 * params * epochs,
             "pgd40_acc": 0.02 * (3e5 * params * epochs) ** ALPHA * 10.0 ** rng.normal(0, 0.08)}
            for params, epochs, activation in itertools.product([1e6, 2e6, 4e6, 8e6], [100, 300], ["relu", "silu"])]
    grid = pd.DataFrame(rows)
    seen = (grid["epochs"] == 100) | (grid["params"] == 1e6)  # every axis value, not the top of the FLOP range
    finished, candidates = grid[seen], grid[~seen][["params", "epochs", "activation", "train_flops"]]
    assert "wide" in [r.split(":")[0] for r in law_interval(finished, metric="pgd40_acc")["not_pinned"]]
    strategy = make_strategy("envelope", metric="pgd40_acc")
    first = strategy.select(finished, candidates, k=1)[0]
    assert grid.at[first, "train_flops"] == grid["train_flops"].max()  # the top bin, which no revealed run reaches
    plain = make_strategy("envelope", metric="pgd40_acc", anchor=False)
    assert grid.at[plain.select(finished, candidates, k=1)[0], "train_flops"] < grid["train_flops"].max()
    on_law = finished.assign(pgd40_acc=0.02 * finished["train_flops"] ** ALPHA)  # alpha pinned: no anchoring
    assert strategy.select(on_law, candidates, k=3) == plain.select(on_law, candidates, k=3)


def test_replicate_trains_more_seeds_of_the_envelope_recipes_while_the_interval_is_wide():
    grid = replicate_grid()
    finished = grid[grid["seed"] == 0]
    candidates = grid[grid["seed"] > 0][["params", "activation", "train_flops"]]
    law = law_interval(finished, metric="pgd40_acc")
    assert "wide" in [r.split(":")[0] for r in law["not_pinned"]]
    best = finished.loc[finished.groupby("params")["pgd40_acc"].idxmax(), "recipe_id"]
    replicate = make_strategy("envelope", metric="pgd40_acc", replicate=True)
    picks = replicate.select(finished, candidates, k=4)
    recipes = list(grid.loc[picks, "recipe_id"])
    assert len(set(recipes)) == 4 and set(recipes) <= set(best)  # four envelope recipes, one more seed each
    sizes = grid.loc[picks, "params"].tolist()
    assert {sizes[0], sizes[1]} == {1e6, 32e6}  # the ends of the FLOP range move alpha most

    on_law = finished.assign(pgd40_acc=0.02 * finished["train_flops"] ** ALPHA)  # alpha known: nothing to replicate
    assert replicate.select(on_law, candidates, k=4) == \
        make_strategy("envelope", metric="pgd40_acc").select(on_law, candidates, k=4)
