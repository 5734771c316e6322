"""The report's first screen: the paper's three questions answered in sentences, with numbers, intervals, confounds
and the extrapolation warning."""

from __future__ import annotations

import pandas as pd
import pytest

from robustscale.analysis.summary import answers, confounds, duration

from tests.analysis.test_workflow import synthetic_table


def demo_like(n_models: int = 3) -> pd.DataFrame:
    """The demo's design: {AT, TRADES} x {1, 3} steps x {5 epochs, 10 with EMA}, synthetic data only on TRADES-3-EMA."""
    rows = []
    for m in range(n_models):
        for loss in ("at", "trades"):
            for steps in (1, 3):
                for ema in (False, True):
                    for synthetic in ((False, True) if (loss, steps, ema) == ("trades", 3, True) else (False,)):
                        rows.append({"model": f"wrn_10_{m + 1}", "loss": loss, "attack_steps": steps, "ema": ema,
                                     "epochs": 10 if ema else 5, "synthetic": synthetic})
    return pd.DataFrame(rows)


def test_synthetic_data_nested_in_one_arm_is_flagged_with_the_arm():
    found = confounds(demo_like())
    assert any(text.startswith("synthetic data was used only on runs with") and "TRADES loss" in text
               and "3 attack steps" in text and "EMA" in text and "not separated" in text for text in found), found
    assert any("EMA and epochs change together in every run" in text for text in found), found


def test_a_crossed_design_has_no_confound():
    table = synthetic_table(200)  # synthetic data, EMA, loss and steps drawn independently; epochs follow EMA
    found = confounds(table)
    assert not any("synthetic data was used only" in text for text in found), found
    assert [text for text in found if "change together" in text] == [
        "EMA and epochs change together in every run, so their effects cannot be told apart"]


@pytest.mark.parametrize(("seconds", "text"), [(0.0005, "0.5 ms"), (90, "90 s"), (3600, "60 min"), (86400, "24 h"),
                                               (10 * 86400, "10 days"), (3 * 365 * 86400, "3 years")])
def test_durations_read_as_a_person_says_them(seconds, text):
    assert duration(seconds) == text


def fake_content(*, better: str | None, saturating_reaches: bool, flops: float) -> dict:
    law = {"C": 1e-3, "alpha": 0.1, "r2": 0.9, "n": 12, "ci": {"C": [1e-4, 1e-2], "alpha": [0.05, 0.15]}}
    at = {"train_flops": flops, "interval": [flops / 3, flops * 3], "reachable": True, "note": "",
          "energy_kwh": {"value": 2.5e5}, "cost_usd": {"value": 26986.0}, "co2_kg": {"value": 6543.0},
          "tdp_energy_kwh": {"value": 1.0}, "gpu_years": {"value": 1.0}}
    saturating = dict(at, reachable=saturating_reaches, ceiling=0.61,
                      train_flops=flops if saturating_reaches else float("inf"))
    holdout = {"better": better, "power_law": {"rmse": 0.02}, "saturating_law": {"rmse": 0.01}}
    return {"metric": "autoattack_acc", "units": {"accuracy": "fraction"},
            "fit": {"accuracy_law": law, "saturating_law": {"A": 0.61, "B": 1.0, "gamma": 0.2}, "holdout": holdout,
                    "cost_law": dict(law, alpha=0.93), "co2_law": None},
            "predictor": {"r2": 0.8, "n_test": 9, "n": 27, "cv_r2": 0.7, "cv_r2_std": 0.1, "cv_folds": 5,
                          "importance": {"impurity": {"epochs": 0.5, "params": 0.3, "loss": 0.2}},
                          "dropped_features": {}},
            "extrapolations": [{"target": 0.65, "observed_best": 0.6, "power_law": at, "saturating_law": saturating,
                                "assumptions": {"gpu": "h100", "peak_tflops": 989.0, "utilization": 0.35}}]}


def test_each_answer_carries_its_number_and_interval():
    frame = demo_like().assign(train_flops=1e11, wall_s=100.0)
    result = answers(fake_content(better="power_law", saturating_reaches=True, flops=5.83e22), frame,
                     hardware="AMD EPYC CPU, 2 cores")
    assert list(result) == ["drivers", "compute", "target"]
    drivers, compute, target = (result[k]["text"] for k in result)
    assert "R² = 0.80 on 9 held-out runs" in drivers and "epochs (0.50), model size (0.30) and loss (0.20)" in drivers
    assert "synthetic data was used only on runs with" in drivers  # the confound, in the answer itself
    assert "α = 0.1 (95% CI 0.05 to 0.15" in compute and "power law extrapolates better" in compute
    assert "Electricity cost grows as FLOPs^0.93" in compute
    assert "5.83×10²² training FLOPs (95% CI 1.94×10²² to 1.75×10²³)" in target
    assert "2.5×10⁵ kWh, $26,986 and 6,500 kg CO2" in target and "AMD EPYC CPU, 2 cores" in target
    assert "on one H100 at 35% utilisation" in target
    assert "Warning: this extrapolates beyond the data, to 5.8×10¹¹× the largest run's FLOPs" in target
    assert all("\n" not in a["line"] for a in result.values())


def test_a_target_the_better_law_never_reaches_is_priced_by_the_other_one_and_said_so():
    frame = demo_like().assign(train_flops=1e23)
    target = answers(fake_content(better="saturating_law", saturating_reaches=False, flops=5e22), frame)["target"]
    assert target["text"].startswith("65.0% AutoAttack accuracy (best run 60.0%) is out of reach under the saturating "
                                     "law (the better extrapolator here): it levels off at 61.0%.")
    assert "The power law puts 65.0% at 5×10²² training FLOPs" in target["text"]
    assert "Warning" not in target["text"] and not target["beyond_data"]  # inside the data: no warning


def test_small_amounts_read_in_small_units_and_an_open_interval_says_so():
    content = fake_content(better="power_law", saturating_reaches=True, flops=2e12)
    at = content["extrapolations"][0]["power_law"]
    at.update(energy_kwh={"value": 5.7e-4}, co2_kg={"value": 3.2e-4}, cost_usd={"value": 6.8e-5},
              interval=[1.47e12, float("inf")])
    text = answers(content, demo_like().assign(train_flops=1e12))["target"]["text"]
    assert "0.57 Wh, $0.000068 and 0.32 g CO2" in text
    assert "(95% CI 1.47×10¹² or more: some bootstrap fits never reach it)" in text


def test_without_a_bootstrap_the_answers_say_there_is_no_interval():
    content = fake_content(better="power_law", saturating_reaches=True, flops=2e12)
    content["fit"]["accuracy_law"]["ci"] = None
    content["extrapolations"][0]["power_law"]["interval"] = [2e12, 2e12]
    result = answers(content, demo_like().assign(train_flops=1e12))
    assert "α = 0.1 (no interval: no bootstrap; R² 0.90)" in result["compute"]["text"]
    assert "2×10¹² training FLOPs (no interval: every bootstrap draw gave the same value" in result["target"]["text"]
