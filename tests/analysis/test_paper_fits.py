"""Section IV on a table shaped like the paper's: cost laws on the accuracy envelope's runs (Fig. 3b/c), and the
predictor's features (the paper's six; a column that groups the runs like another is dropped and said)."""

import json

import numpy as np
import pandas as pd
import pytest

from robustscale.analysis import predict_summary, read_table
from robustscale.analysis.predictor import same_partition, select_features
from robustscale.cli import main
from robustscale.errors import UserError

PARAMS = {"wrn_28_10": 36_479_194, "wrn_34_10": 46_160_474, "wrn_34_20": 184_531_674, "wrn_70_16": 266_796_506}


def paper_shaped_table(seed: int = 0) -> pd.DataFrame:
    """The paper's grid (4 models x 2 activations x 2 losses x 5 steps x 2 arms x synthetic): epochs is EMA."""
    rng = np.random.default_rng(seed)
    rows = []
    for model, params in PARAMS.items():
        for act in ("relu", "silu"):
            for loss in ("at", "trades"):
                for steps in (1, 2, 5, 7, 10):
                    for ema in (False, True):
                        for synthetic in (False, True):
                            epochs = 400 if ema else 110
                            flops = params * 3 * (steps + 2) * 5e4 * epochs * rng.uniform(0.9, 1.1)
                            acc = 0.012 * flops ** 0.05 * (1.06 if synthetic else 1.0) * np.exp(rng.normal(0, 0.03))
                            energy = 3e-16 * flops * np.exp(rng.normal(0, 0.2))
                            rows.append({"model": model, "params": params, "activation": act, "loss": loss,
                                         "attack_steps": steps, "ema": ema, "epochs": epochs, "synthetic": synthetic,
                                         "train_flops": flops, "autoattack_acc": acc, "energy_kwh": energy,
                                         "cost_usd": energy * 0.12, "co2_kg": energy * 0.5663, "status": "done"})
    table = pd.DataFrame(rows)
    table.insert(0, "run_id", [f"run{i:03d}" for i in range(len(table))])
    return table


@pytest.fixture
def table_csv(tmp_path):
    path = tmp_path / "paper_shaped.csv"
    paper_shaped_table().to_csv(path, index=False)
    return path


def test_cost_laws_are_fitted_on_the_envelopes_runs(capsys, table_csv):
    assert main(["fit", str(table_csv), "--bootstrap", "0", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    n = result["accuracy_law"]["n"]
    assert result["cost_runs"] == "envelope"
    assert result["cost_law"]["n"] == result["energy_law"]["n"] == result["co2_law"]["n"] == n
    # the same runs: a law fitted by hand on the envelope's points gives the same exponent
    table = read_table(table_csv).set_index("run_id")
    ids = [p["run_id"] for p in result["accuracy_law"]["points"]]
    alpha = np.polyfit(np.log10(table.loc[ids, "train_flops"]), np.log10(table.loc[ids, "cost_usd"]), 1)[0]
    assert result["cost_law"]["alpha"] == pytest.approx(alpha)


def test_cost_laws_on_every_run_on_request(capsys, table_csv):
    assert main(["fit", str(table_csv), "--bootstrap", "0", "--cost-runs", "all", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["cost_runs"] == "all" and result["energy_law"]["n"] == 320
    assert main(["fit", str(table_csv), "--cost-runs", "cheapest"]) == 2


def test_predictor_defaults_to_the_papers_six_features(table_csv):
    result = predict_summary(read_table(table_csv))
    assert result["features"] == ["params", "synthetic", "activation", "loss", "attack_steps", "ema"]
    assert "epochs" not in result["features"] and result["dropped_features"] == {}


def test_a_column_that_groups_runs_like_another_is_dropped_and_said(capsys, table_csv):
    features = "params,synthetic,activation,loss,attack_steps,ema,epochs"
    result = predict_summary(read_table(table_csv), features=features.split(","))
    assert "epochs" not in result["features"]
    assert result["dropped_features"] == {"epochs": "partitions the runs exactly like ema"}
    assert main(["predict", str(table_csv), "--features", features]) == 0
    assert "left out epochs: partitions the runs exactly like ema" in capsys.readouterr().out
    chosen = predict_summary(read_table(table_csv), features=["epochs", "attack_steps"])  # epochs first: kept
    assert chosen["features"] == ["epochs", "attack_steps"]


def test_feature_selection_rules():
    t = pd.DataFrame({"a": [1, 1, 2, 2], "b": ["x", "x", "y", "y"], "c": [1, 2, 1, 2], "d": [0, 0, 0, 1]})
    assert same_partition(t["a"], t["b"]) and not same_partition(t["a"], t["c"])
    assert not same_partition(t["a"], t["d"])  # d refines a: not the same grouping
    assert select_features(t, ["a", "b", "c"]) == (["a", "c"], {"b": "partitions the runs exactly like a"})
    with pytest.raises(UserError, match="features names 'zz'"):
        select_features(t, ["a", "zz"])
