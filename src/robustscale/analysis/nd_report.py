"""The report's beyond-the-paper sections: the N-D law with its compute-optimal frontier, and each recipe's spread
over seeds.

The N-D section appears when a table spans at least three model sizes and three data amounts (fewer cannot separate
the two terms of L(N, D) = E + A/N^alpha + B/D^beta); the replicates section when some recipe was trained with more
than one seed (the paper's "are these techniques brittle?", which it could not afford to ask). Both return
plain content (dicts of numbers and sentences) that :mod:`robustscale.analysis.report` places and renders.
"""

from __future__ import annotations

import html
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from robustscale.analysis.ndlaw import NDLaw, fit_nd, nd_summary
from robustscale.analysis.plan import nearest_wrn
from robustscale.analysis.replicates import by_recipe, has_replicates, recipe_codes
from robustscale.errors import UserError

__all__ = ["MIN_LEVELS", "nd_content", "figure_nd", "nd_html", "replicates_content", "replicates_html"]

MIN_LEVELS = 3  # distinct model sizes and distinct data amounts the N-D section needs
BUDGET_FACTORS = (1, 10, 100, 1000)  # the frontier's budgets, as multiples of the table's largest run
BOOTSTRAP = 100  # refits for the section's intervals (fit --law nd uses 200)


def _levels(table: pd.DataFrame) -> tuple[int, int]:
    if not {"params", "samples_seen"} <= set(table.columns):
        return 0, 0
    return int(table["params"].dropna().nunique()), int(table["samples_seen"].dropna().nunique())


def nd_content(table: pd.DataFrame, *, seed: int = 0) -> dict[str, Any] | None:
    """The N-D law, its frontier at a few budgets and what it says, or None when the table spans fewer than
    :data:`MIN_LEVELS` model sizes or data amounts. A fit that fails says why (``error``) instead."""
    sizes, amounts = _levels(table)
    if min(sizes, amounts) < MIN_LEVELS:
        return None
    try:
        law = fit_nd(table, bootstrap=BOOTSTRAP, seed=seed)
    except UserError as err:
        return {"error": str(err), "sizes": sizes, "amounts": amounts}
    largest = float(table["train_flops"].max())
    frontier = [_budget(law, largest * f, f) for f in BUDGET_FACTORS] if law.k_ else []
    return {"law": law, "summary": nd_summary(law), "frontier": frontier, "sizes": sizes, "amounts": amounts}


def _budget(law: NDLaw, flops: float, factor: float) -> dict[str, Any]:
    n_opt = float(law.optimal_params(flops))
    return {"factor": factor, "flops": flops, "params": n_opt, "samples": float(law.optimal_samples(flops)),
            "loss": float(law.optimal_loss(flops)), "wrn": nearest_wrn(n_opt)["name"]}


def figure_nd(content: dict[str, Any]) -> Figure:
    """Left: the loss against samples seen, one colour per model size, the law's curves through them. Right: the
    compute-optimal N* and D* against compute, the table's runs at their (C, N) and (C, D)."""
    law, runs = content["law"], content["law"].runs_
    fig = Figure(figsize=(10, 4), layout="constrained")
    left, right = fig.subplots(1, 2)
    sizes = np.unique(runs.n)
    colours = [f"C{i % 10}" for i in range(len(sizes))]
    d_grid = np.geomspace(runs.d.min() / 2, runs.d.max() * 4, 60)
    for size, colour in zip(sizes, colours):
        at = runs.n == size
        left.scatter(runs.d[at], runs.loss[at], color=colour, s=18, label=f"N = {size:.3g}")
        left.plot(d_grid, law.predict(np.full_like(d_grid, size), d_grid), color=colour, lw=1)
    left.set(xscale="log", yscale="log", xlabel="samples seen D", ylabel=runs.metric,
             title="L(N, D) = E + A/N^alpha + B/D^beta")
    left.legend(fontsize=7, loc="upper right", frameon=False)
    if law.k_:
        flops = runs.n * runs.d * law.k_
        c_grid = np.geomspace(flops.min() / 2, flops.max() * max(BUDGET_FACTORS), 60)
        right.plot(c_grid, law.optimal_params(c_grid), color="C0", label=f"N* ~ C^{law.a_:.2f}")
        right.plot(c_grid, law.optimal_samples(c_grid), color="C1", label=f"D* ~ C^{law.b_:.2f}")
        right.scatter(flops, runs.n, color="C0", s=10, alpha=0.5)
        right.scatter(flops, runs.d, color="C1", s=10, alpha=0.5)
        right.axvline(flops.max(), color="grey", lw=0.8, ls=":")
        right.legend(fontsize=8, loc="upper left", frameon=False)
    right.set(xscale="log", yscale="log", xlabel="training FLOPs C = k N D", ylabel="parameters / samples",
              title="compute-optimal frontier (dotted: largest run)")
    return fig


def _g(value: Any) -> str:
    return "-" if value is None or not np.isfinite(value) else f"{value:.3g}"


def nd_html(content: dict[str, Any] | None, figure_png_b64: str | None) -> str:
    """The section's HTML: one sentence per finding, the law's parameters with intervals, the frontier table."""
    if content is None:
        return ""
    head = "<h2 id='nd-law'>Beyond the paper: compute-optimal model size and data</h2>"
    if "error" in content:
        return head + f"<p class='note'>Not fitted: {html.escape(content['error'])}</p>"
    s, ci = content["summary"], content["summary"].get("ci") or {}
    rows = "".join(f"<tr><td>{name}</td><td>{_g(s[name])}</td><td>{_g((ci.get(name) or [None])[0])} .. "
                   f"{_g((ci.get(name) or [None, None])[1])}</td></tr>" for name in ("E", "A", "B", "alpha", "beta", "a"))
    unpinned = (s.get("identifiability") or {}).get("unidentified") or []
    sentence = (f"Fitted on {s['n']} runs ({content['sizes']} model sizes x {content['amounts']} data amounts, metric "
                f"{html.escape(str(s['metric']))}): with compute C, the optimal model grows as C^{_g(s['a'])} and the "
                f"data as C^{_g(s['b'])} (Bartoldson et al. 2024 find 0.48 and 0.52 on CIFAR-10); R^2 in log space "
                f"{_g(s['r2'])}.")
    if unpinned:
        sentence += f" The table cannot pin down {', '.join(html.escape(str(u)) for u in unpinned)}: see the notes."
    frontier = "".join(f"<tr><td>{b['factor']}x</td><td>{b['flops']:.3g}</td><td>{b['params']:.3g}</td>"
                       f"<td>{html.escape(b['wrn'])}</td><td>{b['samples']:.3g}</td><td>{b['loss']:.3g}</td></tr>"
                       for b in content["frontier"])
    figure = (f"<figure id='fig-nd'><img alt='fig-nd' src='data:image/png;base64,{figure_png_b64}'><figcaption>The "
              "N-D law: loss against samples seen per model size (left), and the compute-optimal split (right)."
              "</figcaption></figure>") if figure_png_b64 else ""
    return (head + f"<p>{sentence}</p>" + figure +
            "<table><tr><th>parameter</th><th>value</th><th>95% interval</th></tr>" + rows + "</table>" +
            "<h3>Compute-optimal recipes (budgets as multiples of the largest run)</h3><table><tr><th>budget</th>"
            "<th>FLOPs</th><th>N*</th><th>nearest WRN</th><th>D* (samples)</th><th>predicted loss</th></tr>" +
            frontier + "</table>")


def replicates_content(table: pd.DataFrame, metric: str = "autoattack_acc") -> pd.DataFrame | None:
    """Each recipe with more than one seed: mean, std, n and interval of ``metric``; None without replicates."""
    if metric not in table.columns or len(table) < 2 or not has_replicates(recipe_codes(table)):
        return None
    summary = by_recipe(table, metrics=[metric])
    return summary[summary[f"{metric}_n"] > 1] if f"{metric}_n" in summary.columns else None


def replicates_html(summary: pd.DataFrame | None, metric: str = "autoattack_acc") -> str:
    if summary is None or summary.empty:
        return ""
    cols = [c for c in summary.columns if not c.startswith(metric)][:6]
    rows = "".join("<tr>" + "".join(f"<td>{html.escape(str(r[c]))}</td>" for c in cols) +
                   f"<td>{r[f'{metric}_mean']:.4f}</td><td>{r[f'{metric}_std']:.4f}</td><td>{int(r[f'{metric}_n'])}"
                   f"</td><td>{r[f'{metric}_ci_lo']:.4f} .. {r[f'{metric}_ci_hi']:.4f}</td></tr>"
                   for _, r in summary.iterrows())
    return ("<h2 id='replicates'>Seed replicates</h2><p>Recipes trained with more than one seed: the spread of "
            f"{html.escape(metric)} between seeds, and a 95% t-interval of its mean.</p><table><tr>" +
            "".join(f"<th>{html.escape(c)}</th>" for c in cols) +
            "<th>mean</th><th>std</th><th>n</th><th>95% interval</th></tr>" + rows + "</table>")
