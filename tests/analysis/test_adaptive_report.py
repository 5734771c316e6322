"""The adaptive sweep's law per round and its report figure, on a table whose law is known exactly."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from robustscale.analysis.adaptive_figures import adaptive_report, figure_adaptive
from robustscale.analysis.adaptive_law import law_interval, rounds_of_table
from robustscale.analysis.report import build_report

ALPHA = 0.05
ROUNDS = [1, 1, 2, 2, 2, 3, 3, 3, 3, 3]


def adaptive_table() -> pd.DataFrame:
    """Ten runs exactly on ``acc = 0.02 * FLOPs**ALPHA``, chosen over three rounds, and one far better run that no
    round chose (trained by a plain sweep into the same folder): it must not enter the rounds' laws."""
    flops = np.logspace(10, 14, len(ROUNDS))
    table = pd.DataFrame({"run_id": [f"r{i}" for i in range(len(ROUNDS))], "status": "done", "train_flops": flops,
                          "autoattack_acc": 0.02 * flops**ALPHA, "adaptive_round": ROUNDS,
                          "adaptive_strategy": "envelope"})
    stray = {"run_id": "stray", "status": "done", "train_flops": 1e13, "autoattack_acc": 0.9,
             "adaptive_round": None, "adaptive_strategy": None}
    table = pd.concat([table, pd.DataFrame([stray])], ignore_index=True)
    table["adaptive_round"] = table["adaptive_round"].astype("Int64")
    table.attrs["source"] = "adaptive.csv"
    return table


def test_each_round_fits_the_runs_chosen_up_to_it():
    rounds = rounds_of_table(adaptive_table(), bootstrap=50)
    assert [r["round"] for r in rounds] == [1, 2, 3] and [r["runs"] for r in rounds] == [2, 5, 10]
    assert [r["new_runs"] for r in rounds] == [2, 3, 5]
    flops = np.logspace(10, 14, len(ROUNDS))
    assert [r["compute_flops"] for r in rounds] == pytest.approx([flops[:2].sum(), flops[:5].sum(), flops.sum()])
    assert rounds[0]["alpha"] is None and rounds[0]["alpha_ci"] is None  # two points: no law yet
    for r in rounds[1:]:  # the stray run would lift the envelope if it counted
        assert r["alpha"] == pytest.approx(ALPHA) and r["alpha_ci"] == pytest.approx([ALPHA, ALPHA], abs=1e-9)
        assert r["ci_width"] == pytest.approx(0.0, abs=1e-9)
    assert law_interval(adaptive_table(), bootstrap=50)["alpha"] > ALPHA + 0.01  # ... as it does for the whole table


def test_the_figure_plots_alpha_per_round_against_compute():
    rounds = rounds_of_table(adaptive_table(), bootstrap=50)
    ax = figure_adaptive(rounds).axes[0]
    line = next(l for l in ax.lines if l.get_label() == "alpha after the round")
    assert list(line.get_xdata()) == [r["compute_flops"] for r in rounds[1:]]
    assert list(line.get_ydata()) == pytest.approx([ALPHA, ALPHA])
    assert ax.get_xscale() == "log" and "1 earlier round without a law" in ax.get_title()
    empty = figure_adaptive(rounds[:1]).axes[0]
    assert not empty.axison and "none with a law yet" in empty.texts[0].get_text()


def test_the_report_adds_the_figure_only_for_an_adaptive_table(tmp_path):
    adaptive = build_report(adaptive_table(), tmp_path / "a.html", bootstrap=20)
    assert [r["round"] for r in adaptive["adaptive"]["rounds"]] == [1, 2, 3]
    figure = adaptive["figures"]["adaptive"]
    assert "alpha" in figure["caption"] and (tmp_path / "a_figures" / "adaptive.png").stat().st_size > 0
    assert "id='adaptive'" in (tmp_path / "a.html").read_text()
    assert json.loads((tmp_path / "a.json").read_text())["adaptive"]["rounds"][1]["alpha"] == pytest.approx(ALPHA)
    plain = adaptive_table().drop(columns=["adaptive_round", "adaptive_strategy"])
    assert adaptive_report(plain) == (None, {})  # what build_report adds for a table from a plain sweep: nothing


def test_one_huge_early_interval_does_not_flatten_the_rest():
    rounds = [{"round": 1, "compute_flops": 1e9, "alpha": 0.3, "alpha_ci": [-17.0, 6.0]}]
    rounds += [{"round": r, "compute_flops": r * 1e9, "alpha": 0.3, "alpha_ci": [0.1, 0.5]} for r in (2, 3, 4)]
    ax = figure_adaptive(rounds).axes[0]
    low, high = ax.get_ylim()
    assert -1.0 < low < 0.1 and 0.5 < high < 1.0
    assert any("cut at the axes" in t.get_text() for t in ax.texts)
    assert not any("cut" in t.get_text() for t in figure_adaptive(rounds[1:]).axes[0].texts)
