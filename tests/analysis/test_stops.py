"""The report's early stops: collapsed runs listed, the training compute their stops saved estimated."""

import json

import pandas as pd
import pytest

from robustscale.analysis.stops import early_stops, sentence
from robustscale.cli import main
from tests.analysis.test_workflow import synthetic_table


def _with_stops(n=8):
    """A small sweep in which run 0 collapsed and was stopped at epoch 25 of 100, run 1 collapsed and only warned,
    run 2 stopped on patience at epoch 50 of 100."""
    table = synthetic_table(n, seed=3).drop(columns=["co2_kg"]).assign(dataset="digits", synthetic=False, epochs=100)
    table["epochs_run"] = 100
    table["stop_reason"], table["stop_epoch"], table["collapse_epoch"] = None, pd.NA, pd.NA
    table.loc[0, ["epochs_run", "stop_reason", "stop_epoch", "collapse_epoch"]] = \
        [25, "catastrophic_overfitting", 25, 25]
    table.loc[1, "collapse_epoch"] = 40
    table.loc[2, ["epochs_run", "stop_reason", "stop_epoch"]] = [50, "no_improvement", 50]
    return table


def test_saved_compute_is_estimated_from_the_planned_epochs():
    table = _with_stops()
    stops = early_stops(table)
    assert (stops["n_collapsed"], stops["n_stopped"]) == (2, 2)
    assert stops["reasons"] == {"catastrophic_overfitting": 1, "no_improvement": 1}
    flops = table["train_flops"]
    saved = flops[0] * 75 / 25 + flops[2] * 50 / 50  # the warned run trained all its epochs: it saved nothing
    assert stops["saved_train_flops"] == pytest.approx(saved)
    assert stops["saved_fraction"] == pytest.approx(saved / (saved + flops[0] + flops[2]))
    energy = table["energy_kwh"]
    assert stops["saved_energy_kwh"] == pytest.approx(energy[0] * 3 + energy[2])
    assert [r["run_id"] for r in stops["runs"]] == ["run000", "run001", "run002"]
    text = sentence(stops)
    assert text.startswith("2 run(s) collapsed") and "1 collapsed run(s) were not stopped" in text
    assert f"{saved:.3g} training FLOPs" in text


def test_no_section_without_stops_or_without_the_columns():
    assert early_stops(synthetic_table(8)) is None  # another framework's table: no stop columns
    table = _with_stops()
    table["stop_reason"], table["collapse_epoch"] = None, pd.NA
    assert early_stops(table) is None
    failed = _with_stops().assign(status="failed")
    assert early_stops(failed) is None  # only done runs count


def test_report_lists_the_collapsed_runs_and_the_compute_saved(tmp_path, capsys):
    path = tmp_path / "runs.csv"
    _with_stops().to_csv(path, index=False)
    out = tmp_path / "r.html"
    assert main(["report", str(path), "-o", str(out), "--bootstrap", "20", "--json"]) == 0
    content = json.loads(capsys.readouterr().out)
    assert content["early_stops"]["n_stopped"] == 2
    page = out.read_text()
    section = page[page.index("<h2 id='early-stops'>"):page.index("<h2 id='nd-law'>")]
    assert "The stops saved an estimated" in section and "run000" in section and "catastrophic_overfitting" in section
    assert "href='#early-stops'" in page
    _with_stops().assign(stop_reason=None, collapse_epoch=pd.NA).to_csv(path, index=False)
    assert main(["report", str(path), "-o", str(out), "--bootstrap", "20"]) == 0
    assert "early-stops" not in out.read_text()
