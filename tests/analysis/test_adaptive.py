"""Adaptive sweeps: the strategies' contract and the replay harness on a grid whose law is known."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pandas as pd
import pytest

from robustscale.analysis.adaptive import STRATEGIES, cover_axes, make_strategy, search_features
from robustscale.analysis.replay import law_alpha, replay
from robustscale.cli import main
from robustscale.errors import UserError

pytestmark = pytest.mark.xdist_group("test_adaptive")  # module fixtures built once (conftest.py)

ALPHA = 0.05
CONTRACT_KEYS = {"median_alpha_error", "median_runs", "median_compute_frac", "full_alpha", "seeds"}
SEED_KEYS = {"seed", "alpha", "alpha_error", "runs", "compute_frac"}


def known_grid(seed: int = 0) -> pd.DataFrame:
    """A full factorial grid whose envelope is exactly ``acc = 0.02 * FLOPs**ALPHA``.

    Synthetic data does not change a run's FLOPs, and every synthetic-data run lies on the law; every other run is
    worse (or collapses to 0 with one attack step), so each FLOP bin's best run is on the law and the full table's
    alpha is ALPHA. A strategy that spends on the dominated runs learns nothing about it.
    """
    rng = np.random.default_rng(seed)
    rows = []
    for params, steps, ema, synthetic in itertools.product([1e6, 2e6, 4e6, 8e6], [1, 3, 7], [False, True],
                                                           [False, True]):
        epochs = 300 if ema else 100
        flops = 6.0 * params * 5e4 * epochs * (steps + 1)
        on_law = 0.02 * flops**ALPHA
        accuracy = on_law if synthetic else on_law * rng.uniform(0.75, 0.95) * (0.0 if steps == 1 else 1.0)
        rows.append({"params": params, "attack_steps": steps, "ema": ema, "epochs": epochs, "synthetic": synthetic,
                     "train_flops": flops, "autoattack_acc": accuracy})
    table = pd.DataFrame(rows)
    table.insert(0, "run_id", [f"run{i:02d}" for i in range(len(table))])
    table.insert(1, "status", "done")
    return table


@pytest.fixture(scope="module")
def grid() -> pd.DataFrame:
    return known_grid()


@pytest.fixture(scope="module")
def grid_csv(tmp_path_factory, grid) -> str:
    path = tmp_path_factory.mktemp("adaptive") / "grid.csv"
    grid.to_csv(path, index=False)
    return str(path)


@pytest.fixture(scope="module")
def envelope_replay(grid) -> dict:
    return replay(grid, "envelope", budget_frac=0.25, seeds=2, batch_size=4)


def test_the_known_grid_has_the_known_alpha(grid):
    assert law_alpha(grid) == pytest.approx(ALPHA, abs=1e-9)


def test_envelope_recovers_alpha_better_than_random_at_the_same_budget(grid, envelope_replay):
    random = replay(grid, "random", budget_frac=0.25, seeds=2, batch_size=4)
    assert envelope_replay["full_alpha"] == pytest.approx(ALPHA, abs=1e-9)
    assert envelope_replay["median_alpha_error"] < 0.1 * ALPHA
    assert envelope_replay["median_alpha_error"] < random["median_alpha_error"]


def test_replay_never_spends_more_than_the_budget(grid, envelope_replay):
    for name in ("random", "cheapest-first", "crude"):
        result = replay(grid, name, budget_frac=0.25, seeds=2, batch_size=3)
        assert all(episode["compute_frac"] <= 0.25 for episode in result["seeds"])
    assert all(0 < episode["compute_frac"] <= 0.25 for episode in envelope_replay["seeds"])
    total = grid["train_flops"].sum()
    for episode in envelope_replay["seeds"]:
        spent = grid.set_index("run_id").loc[episode["chosen"], "train_flops"].sum()
        assert spent / total == pytest.approx(episode["compute_frac"])
        assert len(set(episode["chosen"])) == episode["runs"]


def test_replay_is_deterministic_given_the_seed(grid, envelope_replay):
    again = replay(grid, "envelope", budget_frac=0.25, seeds=1, first_seed=1, batch_size=4)
    assert again["seeds"][0] == envelope_replay["seeds"][1]
    a, b = (replay(grid, "random", budget_frac=0.25, seeds=1, first_seed=s)["seeds"][0]["chosen"] for s in (0, 1))
    assert a != b  # the seed matters


def test_select_is_stateless_and_answers_with_candidate_labels(grid):
    finished, candidates = grid.iloc[[5, 20, 33]], grid.drop(index=[5, 20, 33])
    hidden = candidates[["params", "attack_steps", "ema", "epochs", "synthetic", "train_flops"]]
    for name in STRATEGIES:
        strategy = make_strategy(name, seed=3)
        first = strategy.select(finished, hidden, k=4)
        assert first == strategy.select(finished, hidden, k=4)
        assert 0 < len(first) <= 4 and set(first) <= set(hidden.index) and len(set(first)) == len(first)
    assert make_strategy("cheapest-first").select(finished, hidden, k=1) == [hidden["train_flops"].idxmin()]


def test_model_strategies_start_with_cheap_runs_covering_every_axis_value(grid):
    features = ["params", "attack_steps", "ema", "epochs", "synthetic"]
    start = cover_axes(grid.iloc[:0], grid, search_features(grid))
    covered = grid.loc[start]
    for feature in features:
        assert set(covered[feature]) == set(grid[feature])
    assert grid.loc[start, "train_flops"].sum() < 0.1 * grid["train_flops"].sum()
    assert make_strategy("envelope").select(grid.iloc[:0], grid, k=len(start)) == start


def test_replay_cli_prints_the_contract(capsys, grid_csv):
    code = main(["replay", grid_csv, "--strategy", "cheapest-first", "--budget-frac", "0.3", "--seeds", "2", "--json"])
    out = capsys.readouterr()
    assert code == 0, out.err
    result = json.loads(out.out)
    assert CONTRACT_KEYS <= set(result)
    assert result["full_alpha"] == pytest.approx(ALPHA, abs=1e-9)
    assert len(result["seeds"]) == 2 and all(SEED_KEYS <= set(seed) for seed in result["seeds"])
    assert result["median_compute_frac"] <= 0.3


@pytest.mark.parametrize("argv, message", [
    (["--strategy", "greedy"], "--strategy greedy"),
    (["--budget-frac", "0"], "--budget-frac"),
    (["--budget-frac", "1.5"], "--budget-frac"),
    (["--seeds", "0"], "--seeds"),
    (["--map", "train_flops=nope"], "nope"),
])
def test_bad_replay_options_give_one_line_and_exit_2(capsys, grid_csv, argv, message):
    code = main(["replay", grid_csv, *argv])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and message in err, err


def test_a_table_without_flops_or_recipe_is_refused_in_one_line(grid, tmp_path, capsys):
    no_flops = tmp_path / "no_flops.csv"
    grid.drop(columns="train_flops").to_csv(no_flops, index=False)
    assert main(["replay", str(no_flops)]) == 2
    assert "train_flops" in capsys.readouterr().err
    with pytest.raises(UserError, match="recipe"):
        replay(grid[["run_id", "train_flops", "autoattack_acc"]], "random", budget_frac=0.5, seeds=1)
