"""The report's N-D and replicates sections: present exactly when the table can support them, with numbers that
come from the law (issue 19)."""

import base64
import io

import numpy as np
import pytest

from robustscale.analysis.nd_report import (figure_nd, nd_content, nd_html, replicates_content,
                                            replicates_html)

from .test_ndlaw import TRUE_A, nd_table


def test_the_nd_section_needs_three_sizes_and_three_data_amounts():
    table = nd_table(seed=0)
    assert nd_content(table[table["params"].isin(sorted(table["params"].unique())[:2])]) is None
    assert nd_content(table[table["samples_seen"].isin(sorted(table["samples_seen"].unique())[:2])]) is None
    assert nd_html(None, None) == ""


def test_the_nd_section_reports_the_law_and_a_consistent_frontier():
    content = nd_content(nd_table(seed=0))
    law, frontier = content["law"], content["frontier"]
    assert abs(content["summary"]["a"] - TRUE_A) < 0.05
    assert [b["factor"] for b in frontier] == [1, 10, 100, 1000]
    for b in frontier:  # C = k N* D* at every budget, and N* grows by 10^a per decade
        assert b["params"] * b["samples"] * law.k_ == pytest.approx(b["flops"], rel=0.05)
    assert frontier[1]["params"] / frontier[0]["params"] == pytest.approx(10 ** law.a_, rel=0.02)
    fig = figure_nd(content)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    page = nd_html(content, base64.b64encode(buf.getvalue()).decode())
    assert "id='nd-law'" in page and "id='fig-nd'" in page and f"{content['summary']['a']:.3g}" in page
    assert page.count("<tr>") == 1 + 6 + 1 + 4  # header + six parameters, header + four budgets


def test_replicates_section_lists_only_recipes_with_several_seeds():
    table = nd_table(seed=1, seeds=3)
    table["autoattack_acc"] = 0.5 + 0.01 * np.arange(len(table)) % 0.2
    summary = replicates_content(table)
    assert summary is not None and (summary["autoattack_acc_n"] == 3).all()
    page = replicates_html(summary)
    assert "id='replicates'" in page and page.count("<tr>") == 1 + len(summary)
    assert replicates_content(nd_table(seed=1, seeds=1).assign(autoattack_acc=0.5)) is None
