"""One self-contained HTML report (and the same content as JSON) from a results table.

The report is what a researcher attaches to a paper: every law with its interval and R^2, the held-out check of
which law extrapolates, the predictor's scores and importances, the compute a few target accuracies would need, the
seven figures, the runs themselves, and the methodology and units. Figures are embedded as base64 PNG, with no
external CSS or JavaScript, so the file opens offline; PNG and SVG copies are written next to it for papers.
"""

from __future__ import annotations

import base64
import html
import json
import math
from pathlib import Path
from typing import Any

import pandas as pd

import robustscale.analysis.figures as figs
from robustscale.analysis.adaptive_figures import ADAPTIVE_FIGURES, adaptive_report
from robustscale.analysis._table import CANONICAL_COLUMNS, Runs, jsonable, usable_runs
from robustscale.analysis.predictor import fit_predictor, summarize_predictor
from robustscale.analysis.scaling import PUE, extrapolate_laws, fit_laws, summarize_laws
from robustscale.errors import UserError
from robustscale.store.atomic import write_bytes

METHODOLOGY = [
    "Runs: only rows with status 'done' (when a status column exists), positive train_flops and a positive value of "
    "the accuracy metric are used; dropped rows are counted in the summary.",
    "Accuracy law (paper IV-B): the log10(FLOPs) range is split into equal-width bins; the best run of each non-empty "
    "bin forms the envelope, fitted as accuracy = C * FLOPs^alpha by least squares in log-log space (R^2 in log-log "
    "space).",
    "Intervals: pairs bootstrap of the fitted points (seeded); percentile intervals at 95%. The paper reports none.",
    "Saturating law: accuracy = A - B * FLOPs^(-gamma), least squares in accuracy space on the same envelope, with the "
    "plateau A bounded by 100% (R^2 in accuracy space).",
    "Held-out check: each law is refitted on the envelope points below the top quarter of the log10(FLOPs) range and "
    "scored (RMSE, accuracy units) on the points above it: the lower error extrapolates better on this table.",
    "Cost, energy and CO2 laws: the same power law against FLOPs over all runs.",
    "Extrapolation: the FLOPs at which each law reaches the target (interval from the bootstrap draws); energy, cost "
    "and CO2 from their fitted laws at those FLOPs; GPU time = FLOPs / (peak * utilisation) on the named GPU; "
    f"TDP energy = GPU-hours * TDP * PUE {PUE}.",
    "Predictor (paper IV-A): gradient boosting regression (50 estimators, max depth 5) from recipe features to "
    "accuracy, 70:30 split; k-fold cross-validated R^2; impurity and permutation (held-out) importances; prediction "
    "interval from the 95% quantile of out-of-fold absolute errors.",
    "Units: accuracy as given in the table (fraction or percent, detected: max > 1.5 means percent); FLOPs in the "
    "table's unit; cost in USD; energy in kWh; CO2 in kg.",
]


def default_targets(runs: Runs) -> list[float]:
    """A few accuracies above the best run, in the table's unit, where extrapolation becomes interesting."""
    scale = 100.0 if runs.accuracy_unit == "percent" else 1.0
    best = float(runs.accuracy.max()) / scale
    targets = sorted({round(min(best + step, 0.99), 2) for step in (0.02, 0.05, 0.10)})
    return [t * scale for t in targets if t > best]


def build_report(table: pd.DataFrame, out_html: str | Path, *, metric: str = "autoattack_acc",
                 min_acc: float | None = None, bins: int = 19, bootstrap: int = 1000, seed: int = 0,
                 gpu: str = "h100", targets: list[float] | None = None) -> dict:
    """Fit everything, draw the figures, and write ``out_html``, a sibling ``.json`` and a ``<stem>_figures`` folder.

    Returns:
        The report's content (the JSON written next to the HTML), with the paths written.
    """
    out_html = Path(out_html)
    if out_html.suffix.lower() not in (".html", ".htm") or out_html.is_dir():
        raise UserError(f"report -o '{out_html}': name an .html file (its .json and _figures folder are written "
                        "beside it, so -o x.json would overwrite the one with the other)")
    runs = usable_runs(table, metric, min_acc)
    laws = fit_laws(runs, bins=bins, bootstrap=bootstrap, seed=seed)
    predictor, predictor_summary, why = _predictor(table, metric, min_acc, seed)
    targets = default_targets(runs) if targets is None else list(targets)
    content = {
        "title": f"Scaling laws of adversarial robustness: {Path(runs.source).name}",
        "source": runs.source, "metric": runs.metric, "units": runs.units(), "n_runs": len(runs.frame),
        "fit": summarize_laws(laws), "predictor": predictor_summary,
        "extrapolations": [extrapolate_laws(laws, t, gpu=gpu) for t in targets],
        "methodology": METHODOLOGY, "runs": _run_records(runs),
    }
    rendered = {name: figs.render(fig) for name, fig in figs.all_figures(laws, predictor, why).items()}
    adaptive, adaptive_figure = adaptive_report(table, metric=metric, bins=bins, bootstrap=bootstrap, seed=seed,
                                                min_acc=min_acc)  # (None, {}) unless from an adaptive sweep
    content.update({"adaptive": adaptive} if adaptive else {})
    rendered.update(adaptive_figure)
    content["figures"] = _write_figures(rendered, out_html)
    as_json = jsonable(content)  # inf/NaN become null here; the HTML keeps them as ∞ and —
    write_bytes(out_html.with_suffix(".json"), json.dumps(as_json, indent=2).encode())
    write_bytes(out_html, _html(content, rendered).encode())
    return {**as_json, "html": str(out_html), "json": str(out_html.with_suffix(".json"))}


def _predictor(table: pd.DataFrame, metric: str, min_acc: float | None, seed: int) -> tuple[Any, dict, str]:
    """The predictor and its summary, or why it could not be fitted (the rest of the report still stands)."""
    try:
        predictor, runs, frame = fit_predictor(table, metric=metric, min_acc=min_acc, seed=seed)
    except UserError as err:
        return None, {"error": str(err)}, str(err)
    return predictor, summarize_predictor(predictor, runs, frame), ""


def _run_records(runs: Runs) -> list[dict]:
    columns = [c for c in CANONICAL_COLUMNS if c in runs.frame] or list(runs.frame.columns)
    return runs.frame[columns].astype(object).where(runs.frame[columns].notna(), None).to_dict("records")


def _write_figures(rendered: dict[str, dict[str, bytes]], out_html: Path) -> dict:
    folder = out_html.with_name(f"{out_html.stem}_figures")
    paths = {}
    for name, formats in rendered.items():
        for fmt, data in formats.items():
            write_bytes(folder / f"{name}.{fmt}", data)
        paths[name] = {"caption": {**figs.FIGURES, **ADAPTIVE_FIGURES}[name], "png": str(folder / f"{name}.png"),
                       "svg": str(folder / f"{name}.svg")}
    return paths


# ---------------------------------------------------------------------------------------------------------- HTML

_CSS = """
body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222;line-height:1.45}
h1{font-size:1.6em}h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;margin:.8em 0;font-size:.9em}td,th{border:1px solid #ddd;padding:.25em .6em;
text-align:right}th{background:#f3f3f3}td.l,th.l{text-align:left}figure{margin:1.5em 0}
figure img{max-width:100%;border:1px solid #eee}figcaption{font-size:.9em;color:#555}
.runs{max-height:32em;overflow:auto}.note{color:#7a4b00}code{background:#f5f5f5;padding:0 .2em}
"""


def _fmt(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if isinstance(value, float):
        return "∞" if math.isinf(value) else f"{value:.4g}"
    if isinstance(value, (list, tuple)) and len(value) == 2:
        return f"[{_fmt(value[0])}, {_fmt(value[1])}]"
    return html.escape(str(value))


def _table(header: list[str], rows: list[list[Any]], left: int = 1) -> str:
    head = "".join(f"<th class='l'>{html.escape(h)}</th>" if i < left else f"<th>{html.escape(h)}</th>"
                   for i, h in enumerate(header))
    body = "".join("<tr>" + "".join(f"<td class='l'>{_fmt(v)}</td>" if i < left else f"<td>{_fmt(v)}</td>"
                                    for i, v in enumerate(row)) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _ci(law: dict | None, key: str) -> Any:
    return (law.get("ci") or {}).get(key) if law else None


def _laws_section(fit: dict) -> str:
    acc, sat = fit["accuracy_law"], fit["saturating_law"]
    rows = [["accuracy (envelope)", "C·FLOPs^α", acc["C"], _ci(acc, "C"), acc["alpha"], _ci(acc, "alpha"), acc["r2"],
             acc["n"]],
            ["accuracy (envelope)", "A − B·FLOPs^−γ", sat["A"], _ci(sat, "A"), sat["gamma"], _ci(sat, "gamma"),
             sat["r2"], sat["n"]]]
    cost_laws = (("cost_law", "electricity cost (USD)"), ("energy_law", "energy (kWh)"), ("co2_law", "CO2 (kg)"))
    for name, label in cost_laws:
        law = fit.get(name)
        rows.append([label, "C·FLOPs^α", *([law["C"], _ci(law, "C"), law["alpha"], _ci(law, "alpha"), law["r2"],
                                            law["n"]] if law else [None] * 6)])
    table = _table(["quantity", "law", "C or A", "95% CI", "α or γ", "95% CI", "R²", "n"], rows, left=2)
    notes = "".join(f"<p class='note'>{html.escape(n)}</p>" for n in fit.get("notes", []))
    return (f"<h2>Scaling laws</h2>{table}<p>Saturating law B = {_fmt(sat['B'])} (FLOPs in the table's unit). "
            f"Power-law R² is in log-log space, saturating R² in accuracy space. A dash marks a law whose column is "
            f"absent.</p>{notes}")


def _holdout_section(fit: dict) -> str:
    holdout = fit["holdout"]
    rows = [[label, h.get("rmse"), h.get("mae"), h.get("n_train"), h.get("n_test"), h.get("flops_threshold")]
            for label, h in (("power law", holdout["power_law"]), ("saturating law", holdout["saturating_law"]))]
    verdict = (f"On this table the <b>{holdout['better'].replace('_', ' ')}</b> extrapolates better."
               if holdout.get("better") else "Too few points to compare the laws out of sample.")
    return ("<h2>Held-out extrapolation check</h2><p>Each law is fitted on the lower-compute envelope and tested on "
            "the highest-compute points (error in accuracy units).</p>"
            + _table(["law", "RMSE", "MAE", "n fit", "n held out", "held out above FLOPs"], rows) + f"<p>{verdict}</p>")


def _extrapolation_section(extrapolations: list[dict]) -> str:
    if not extrapolations:
        return "<h2>Extrapolations</h2><p>The best run is already at the top of the accuracy scale.</p>"
    rows = []
    for ext in extrapolations:
        for key, label in (("power_law", "power"), ("saturating_law", "saturating")):
            law = ext[key]
            rows.append([ext["target"], label, law["train_flops"], law["interval"], _value(law["gpu_years"]),
                         _value(law["energy_kwh"]), _value(law["tdp_energy_kwh"]), _value(law["cost_usd"]),
                         _value(law["co2_kg"]), law["note"]])
    a = extrapolations[0]["assumptions"]
    assumptions = (f"GPU {a['gpu']}, {a['precision']} peak {a['peak_tflops']} TFLOP/s at utilisation "
                   f"{a['utilization']}, "
                   f"TDP {a['tdp_w']} W, PUE {a['pue']}; energy, cost and CO2 come from the fitted laws at the target "
                   "FLOPs; the TDP column is GPU-hours × TDP × PUE.")
    header = ["target", "law", "FLOPs", "95% CI", "GPU-years", "kWh (law)", "kWh (TDP)", "USD", "CO2 kg", "note"]
    return f"<h2>Extrapolations</h2><p>{html.escape(assumptions)}</p>" + _table(header, rows, left=2)


def _value(quantity: dict | None) -> Any:
    return None if quantity is None else quantity["value"]


def _predictor_section(summary: dict) -> str:
    if "error" in summary:
        return f"<h2>Predictor</h2><p class='note'>Not fitted: {html.escape(summary['error'])}</p>"
    scores = _table(["held-out R²", "held-out MAE", "cv R² (mean)", "cv R² (std)", "folds", "runs", "held out"],
                    [[summary["r2"], summary["mae"], summary["cv_r2"], summary["cv_r2_std"], summary["cv_folds"],
                      summary["n"], summary["n_test"]]], left=0)
    importance = summary["importance"]
    rows = [[f, importance["impurity"][f], importance["permutation"][f]] for f in summary["features"]]
    return ("<h2>Predictor</h2><p>Gradient boosting regression, 50 estimators, max depth 5, 70:30 split.</p>" + scores
            + _table(["feature", "impurity importance", "permutation importance"], rows))


def _figures_section(content: dict, rendered: dict[str, dict[str, bytes]]) -> str:
    parts = ["<h2>Figures</h2>"]
    for name, paths in content["figures"].items():
        data = base64.b64encode(rendered[name]["png"]).decode()
        parts.append(f"<figure id='{name}'><img alt='{name}' src='data:image/png;base64,{data}'>"
                     f"<figcaption><b>{name}</b>: {html.escape(paths['caption'])} "
                     f"(SVG: <code>{html.escape(Path(paths['svg']).name)}</code>)</figcaption></figure>")
    return "".join(parts)


def _runs_section(runs: list[dict]) -> str:
    if not runs:
        return ""
    header = list(runs[0])
    return (f"<h2>Runs ({len(runs)})</h2><div class='runs'>"
            + _table(header, [[r[h] for h in header] for r in runs], left=1) + "</div>")


def _html(content: dict, rendered: dict[str, dict[str, bytes]]) -> str:
    fit = content["fit"]
    dropped = ", ".join(f"{k}: {v}" for k, v in fit["dropped"].items()) or "none"
    summary = (f"<p>Source <code>{html.escape(content['source'])}</code>; {content['n_runs']} usable runs "
               f"(dropped: {html.escape(dropped)}); metric <code>{content['metric']}</code>; accuracy as a "
               f"{content['units']['accuracy']}; FLOPs {content['units']['flops']}.</p>")
    methodology = "<h2>Methodology and units</h2><ul>" + "".join(
        f"<li>{html.escape(m)}</li>" for m in content["methodology"]) + "</ul>"
    body = (f"<h1>{html.escape(content['title'])}</h1>{summary}{_laws_section(fit)}{_holdout_section(fit)}"
            f"{_extrapolation_section(content['extrapolations'])}{_predictor_section(content['predictor'])}"
            f"{_figures_section(content, rendered)}{_runs_section(content['runs'])}{methodology}")
    return (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(content['title'])}"
            f"</title><style>{_CSS}</style></head><body>{body}</body></html>\n")
