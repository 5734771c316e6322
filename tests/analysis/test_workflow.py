"""From a results table to laws, predictions, extrapolations and the report, through the library and the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from robustscale.analysis import extrapolate, fit_all, predict_summary, read_table
from robustscale.analysis.predictor import params_for_model
from robustscale.cli import main

pytestmark = pytest.mark.xdist_group("test_workflow")  # module fixtures built once (conftest.py)

WRN_PARAMS = {"wrn_28_10": 36_479_194, "wrn_34_10": 46_160_474, "wrn_34_20": 184_532_314, "wrn_70_16": 266_796_890}
LAW_KEYS = {"accuracy_law", "saturating_law", "power_law_holdout_error", "cost_law", "energy_law", "co2_law"}


def synthetic_table(n: int = 300, seed: int = 0) -> pd.DataFrame:
    """A sweep like the paper's: WRN sizes, recipes that move accuracy, FLOPs over two orders of magnitude."""
    rng = np.random.default_rng(seed)
    model = rng.choice(list(WRN_PARAMS), n)
    params = np.array([WRN_PARAMS[m] for m in model], dtype=float)
    steps, ema, synthetic = rng.choice([1, 2, 5, 7, 10], n), rng.random(n) < 0.5, rng.random(n) < 0.5
    epochs = np.where(ema, 400, 100)
    flops = params * 1.5e4 * epochs * (steps + 1) * rng.uniform(0.8, 1.25, n)
    acc = 0.02 * flops**0.06 * np.where(synthetic, 1.08, 0.95) * np.exp(rng.normal(0.0, 0.02, n))
    energy = 2e-15 * flops**0.95 * np.exp(rng.normal(0.0, 0.1, n))
    return pd.DataFrame({
        "run_id": [f"run{i:03d}" for i in range(n)], "status": "done", "dataset": "cifar10", "model": model,
        "params": params, "activation": rng.choice(["relu", "gelu"], n), "loss": rng.choice(["at", "trades"], n),
        "attack_steps": steps, "epochs": epochs, "ema": ema, "synthetic": synthetic, "train_flops": flops,
        "autoattack_acc": acc, "pgd40_acc": acc * 1.03, "energy_kwh": energy, "cost_usd": energy * 0.12 * 1.58,
        "co2_kg": energy * 0.5663,
    })


@pytest.fixture(scope="module")
def table_csv(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("tables") / "runs.csv"
    synthetic_table().to_csv(path, index=False)
    return path


def run_json(capsys, *argv: str) -> dict:
    code = main([*argv, "--json"])
    out = capsys.readouterr()
    assert code == 0, out.err
    return json.loads(out.out)


def run_error(capsys, *argv: str) -> str:
    code = main(list(argv))
    err = capsys.readouterr().err
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and err.startswith("error: "), err
    return err


# ------------------------------------------------------------------------------------------------------------ fit


def test_fit_cli_prints_the_contract_object(capsys, table_csv):
    result = run_json(capsys, "fit", str(table_csv), "--bootstrap", "200")
    assert LAW_KEYS <= set(result)
    law = result["accuracy_law"]
    assert law["n"] == len(law["points"]) <= 19
    assert law["ci"]["alpha"][0] <= law["alpha"] <= law["ci"]["alpha"][1]
    assert law["ci"]["C"][0] <= law["C"] <= law["ci"]["C"][1]
    assert 0.02 < law["alpha"] < 0.1  # the envelope of a law with alpha 0.06
    assert {"A", "B", "gamma", "holdout_error"} <= set(result["saturating_law"])
    # the energy law is fitted on the envelope's runs (<= 19 of the 300): the exponent is looser than on all of them
    assert result["energy_law"]["n"] == law["n"] and result["energy_law"]["alpha"] == pytest.approx(0.95, abs=0.08)
    assert result["units"]["accuracy"] == "fraction" and result["units"]["flops"].startswith("train_flops:")
    assert result["metric"] == "autoattack_acc"


def test_envelope_points_are_the_best_runs_of_their_bins(table_csv):
    table = read_table(table_csv)
    points = fit_all(table, bootstrap=0)["accuracy_law"]["points"]
    log_flops = np.log10(table["train_flops"])
    edges = np.linspace(log_flops.min(), log_flops.max(), 20)
    for point in points:
        which = np.clip(np.searchsorted(edges, np.log10(point["train_flops"]), side="right") - 1, 0, 18)
        in_bin = table[(log_flops >= edges[which]) & (log_flops <= edges[which + 1])]
        assert point["accuracy"] == pytest.approx(in_bin["autoattack_acc"].max())


def test_a_law_whose_column_is_absent_is_null(tmp_path):
    path = tmp_path / "no_co2.parquet"
    synthetic_table(60).drop(columns=["co2_kg", "cost_usd"]).to_parquet(path)
    result = fit_all(read_table(path), bootstrap=0)
    assert result["co2_law"] is None and result["cost_law"] is None and result["energy_law"] is not None


def test_another_frameworks_table_through_map(capsys, tmp_path, table_csv):
    other = pd.read_csv(table_csv).rename(columns={"autoattack_acc": "robust_acc", "train_flops": "flops"})
    other["robust_acc"] *= 100  # percent, as many codebases log it
    path = tmp_path / "other.json"
    other.to_json(path, orient="records")
    mapped = run_json(capsys, "fit", str(path), "--map", "autoattack_acc=robust_acc", "--map", "train_flops=flops",
                      "--bootstrap", "0")
    canonical = fit_all(read_table(table_csv), bootstrap=0)
    assert mapped["units"]["accuracy"] == "percent"
    assert mapped["accuracy_law"]["alpha"] == pytest.approx(canonical["accuracy_law"]["alpha"])
    assert mapped["accuracy_law"]["C"] == pytest.approx(100 * canonical["accuracy_law"]["C"])


def test_min_acc_and_status_drop_runs_before_fitting(capsys, tmp_path):
    table = synthetic_table(100)
    table.loc[:4, "autoattack_acc"] = 0.001  # collapsed runs
    table.loc[5:9, "status"] = "failed"
    table.loc[10:11, "autoattack_acc"] = 0.0  # log space cannot hold them
    path = tmp_path / "runs.csv"
    table.to_csv(path, index=False)
    result = run_json(capsys, "fit", str(path), "--min-acc", "0.05", "--bootstrap", "0")
    assert result["n_runs"] == 88
    assert result["dropped"] == {"not_done": 5, "non_positive_accuracy": 2, "below_min_acc": 5}


def test_pgd40_metric_when_autoattack_was_not_run(capsys, tmp_path):
    path = tmp_path / "runs.csv"
    synthetic_table(80).assign(autoattack_acc=np.nan).to_csv(path, index=False)
    assert "--metric pgd40_acc" in run_error(capsys, "fit", str(path))
    assert run_json(capsys, "fit", str(path), "--metric", "pgd40_acc", "--bootstrap", "0")["metric"] == "pgd40_acc"


@pytest.mark.parametrize(("change", "message"), [
    (lambda t: t.drop(columns=["train_flops"]), "no 'train_flops' column"),
    (lambda t: t.drop(columns=["autoattack_acc"]), "no 'autoattack_acc' column"),
    (lambda t: t.assign(train_flops=np.where(t.index == 3, 0.0, t["train_flops"])), "non-positive train_flops"),
    (lambda t: t.head(2), "only 2 usable runs"),
    (lambda t: t.assign(train_flops="lots"), "non-number"),
])
def test_bad_tables_give_one_line_and_exit_2(capsys, tmp_path, change, message):
    path = tmp_path / "bad.csv"
    change(synthetic_table(20)).to_csv(path, index=False)
    assert message in run_error(capsys, "fit", str(path))


def test_bad_paths_and_options_give_one_line_and_exit_2(capsys, tmp_path, table_csv):
    assert "no such file" in run_error(capsys, "fit", str(tmp_path / "missing.csv"))
    (tmp_path / "runs.xlsx").write_text("")
    assert "unknown table format" in run_error(capsys, "fit", str(tmp_path / "runs.xlsx"))
    assert "CANONICAL=COLUMN" in run_error(capsys, "fit", str(table_csv), "--map", "autoattack_acc")
    assert "lacks" in run_error(capsys, "fit", str(table_csv), "--map", "autoattack_acc=nope")


# ---------------------------------------------------------------------------------------------------- extrapolate


def test_extrapolation_names_its_assumptions_and_the_ceiling(capsys, table_csv):
    # 100% robust accuracy: the power law gets there eventually, the saturating law (plateau <= 1) never does.
    result = run_json(capsys, "extrapolate", str(table_csv), "--target", "1.0", "--gpu", "a100", "--bootstrap", "50")
    power, saturating = result["power_law"], result["saturating_law"]
    assert power["reachable"] and power["train_flops"] > pd.read_csv(table_csv)["train_flops"].max()
    gpu_years = power["train_flops"] / (312.0e12 * result["assumptions"]["utilization"]) / (3600 * 24 * 365)
    assert power["gpu_years"]["value"] == pytest.approx(gpu_years)
    assert power["tdp_energy_kwh"]["value"] == pytest.approx(power["gpu_hours"]["value"] * 0.4 * 1.58)
    assert power["energy_kwh"]["value"] > 0 and result["assumptions"]["gpu"] == "a100"
    assert result["assumptions"]["precision"] == "bf16"
    assert not saturating["reachable"] and "above the saturating law's ceiling" in saturating["note"]
    assert saturating["train_flops"] is None and saturating["gpu_years"]["value"] is None  # inf prints as null


def test_extrapolation_takes_the_users_cost_model(capsys, table_csv, tmp_path):
    """The TDP estimate used a hard-coded PUE of 1.58 whatever the user's accounting said."""
    args = ["extrapolate", str(table_csv), "--target", "0.5", "--gpu", "a100", "--bootstrap", "0"]
    own = run_json(capsys, *args, "--pue", "1.1")
    power = own["power_law"]
    assert own["assumptions"]["pue"] == 1.1 and "PUE 1.1" in own["assumptions"]["tdp_energy_kwh"]
    assert power["tdp_energy_kwh"]["value"] == pytest.approx(power["gpu_hours"]["value"] * 0.4 * 1.1)
    config = tmp_path / "dc.yaml"
    config.write_text("accounting: {pue: 1.25}\n")
    assert run_json(capsys, *args, "--config", str(config))["assumptions"]["pue"] == 1.25
    assert run_json(capsys, *args)["assumptions"]["pue"] == 1.58  # the paper's, by default


def test_extrapolation_rejects_a_target_in_the_wrong_unit_and_an_unknown_gpu(capsys, table_csv):
    assert "--target 0.6" in run_error(capsys, "extrapolate", str(table_csv), "--target", "60")
    assert "unknown GPU" in run_error(capsys, "extrapolate", str(table_csv), "--target", "0.5", "--gpu", "abacus")


def test_extrapolation_below_the_best_run_says_it_is_already_reached(table_csv):
    result = extrapolate(read_table(table_csv), 0.15, bootstrap=0)
    assert "already reached" in result["power_law"]["note"]
    assert result["power_law"]["train_flops"] < pd.read_csv(table_csv)["train_flops"].max()


# -------------------------------------------------------------------------------------------------------- predict


def test_predictor_finds_the_feature_that_drives_the_target():
    table = synthetic_table(200, seed=5)
    rng = np.random.default_rng(5)
    table["autoattack_acc"] = 0.3 + 0.03 * table["attack_steps"] + rng.normal(0.0, 0.01, len(table))
    result = predict_summary(table)
    for kind in ("impurity", "permutation"):
        assert max(result["importance"][kind], key=result["importance"][kind].get) == "attack_steps"
    assert result["r2"] > 0.8 and result["cv_r2"] > 0.8


def test_predict_cli_scores_and_predicts_an_untrained_recipe(capsys, table_csv):
    recipe = ["--params", "184532314", "--activation", "GELU", "--loss", "trades", "--steps", "10", "--ema",
              "--synthetic", "--epochs", "400"]
    result = run_json(capsys, "predict", str(table_csv), *recipe)
    assert {"r2", "mae", "cv_r2", "prediction", "interval"} <= set(result)
    assert set(result["importance"]) == {"impurity", "permutation"}
    assert result["r2"] > 0.5
    low, high = result["interval"]
    assert low < result["prediction"] < high
    plain = run_json(capsys, "predict", str(table_csv), *recipe[:-4], "--no-ema", "--no-synthetic", "--epochs", "100")
    assert plain["prediction"] < result["prediction"]  # synthetic data and EMA help in this table


def test_predict_rejects_unseen_categories_and_incomplete_recipes(capsys, table_csv):
    base = ["predict", str(table_csv), "--params", "36479194", "--loss", "at", "--ema", "--synthetic", "--epochs", "1"]
    assert "never appears" in run_error(capsys, *base, "--activation", "swish", "--steps", "1")
    assert "pass --steps" in run_error(capsys, *base, "--activation", "relu")


def test_model_name_falls_back_to_the_table_when_the_model_cannot_be_counted(monkeypatch):
    table = synthetic_table(40)

    def cannot(*args, **kwargs):
        raise RuntimeError("no such model here")

    monkeypatch.setattr("robustscale.models.count_params", cannot)  # the predictor looks it up when it counts
    assert params_for_model("wrn_70_16", table) == WRN_PARAMS["wrn_70_16"]
    with pytest.raises(Exception, match="pass params"):
        params_for_model("resnet_nope", table)


# --------------------------------------------------------------------------------------------------------- report


@pytest.fixture(scope="module")
def report(tmp_path_factory, table_csv) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("report") / "report.html"
    assert main(["report", str(table_csv), "-o", str(out), "--bootstrap", "100"]) == 0
    return out, json.loads(out.with_suffix(".json").read_text())


def test_report_holds_every_figure_embedded_and_on_disk(report):
    out, content = report
    page = out.read_text()
    for name in ("fig1a", "fig1b", "fig1c", "fig2", "fig3a", "fig3b", "fig3c"):
        assert f"<figure id='{name}'" in page and f"<img alt='{name}' src='data:image/png;base64," in page
        assert Path(content["figures"][name]["png"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert Path(content["figures"][name]["svg"]).read_text().lstrip().startswith("<?xml")
    assert "<script" not in page and "<link" not in page and "http" not in page.split("<body>")[0]  # offline


def test_report_opens_on_the_answers_before_any_table(report):
    """The first screen answers the paper's three questions; alpha and its interval are in it, the tables after."""
    out, content = report
    page = out.read_text()
    start, end = page.index('<section id="summary">'), page.index("</section>")
    summary = page[start:end]
    assert start < page.index("<table") and start < page.index("<figure id='fig1a'")
    law = content["fit"]["accuracy_law"]
    alpha_ci = " to ".join(f"{v:.3g}" for v in law["ci"]["alpha"])
    assert f"α = {law['alpha']:.3g} (95% CI {alpha_ci}" in summary
    assert "<img alt='fig3a'" in summary and summary.count("class='answer'") == 3
    assert page.index("<figure id='fig1a'") < page.index("<figure id='fig1b'") < page.index("<figure id='fig3c'")
    assert "<title>Scaling laws of adversarial robustness: runs.csv</title>" in page


def test_report_shows_fits_with_intervals_predictor_and_extrapolations(report):
    out, content = report
    page = out.read_text()
    assert content["fit"]["accuracy_law"]["ci"]["alpha"][0] < content["fit"]["accuracy_law"]["alpha"]
    assert f"{content['fit']['accuracy_law']['alpha']:.4g}" in page
    assert content["predictor"]["r2"] > 0.5 and "permutation importance" in page
    assert content["extrapolations"] and all(e["target"] > content["fit"]["accuracy_law"]["points"][0]["accuracy"]
                                             for e in content["extrapolations"])
    assert "Held-out extrapolation check" in page and "Methodology and units" in page
    assert len(content["runs"]) == 300 and "run299" in page


def test_report_from_a_runs_directory_and_a_small_sweep(monkeypatch, tmp_path, capsys):
    """A digits-sized sweep (8 runs, no CO2, no synthetic data) still yields the full report, with placeholders."""
    small = synthetic_table(8, seed=3).drop(columns=["co2_kg"]).assign(dataset="digits", synthetic=False)
    monkeypatch.setattr("robustscale.analysis._table.results_table",
                        lambda folder: small.assign(run_id=[f"{Path(folder).name}-{i}" for i in range(8)]))
    (tmp_path / "runs").mkdir()
    result = run_json(capsys, "report", str(tmp_path / "runs"), "-o", str(tmp_path / "r.html"), "--bootstrap", "20")
    assert set(result["figures"]) == {"fig1a", "fig1b", "fig1c", "fig2", "fig3a", "fig3b", "fig3c"}
    assert result["fit"]["co2_law"] is None and result["runs"][0]["run_id"] == "runs-0"
    assert result["predictor"]["n"] == 8 and result["units"]["accuracy"] == "fraction"
    assert all(Path(paths["png"]).exists() for paths in result["figures"].values())
