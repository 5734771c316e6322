"""One self-contained HTML report (and the same content as JSON) from a results table.

The report reads like the paper's results section. Its first screen (``id="summary"``) answers the paper's three
questions for this table in sentences with their numbers and intervals (:mod:`.summary`), beside figure 3a; then come
the seven figures in the paper's order, each with a caption that says what it shows, and then the tables a
researcher attaches to a paper: every law with its interval and R^2, the held-out check of which law extrapolates,
the compute a few target accuracies would need, the predictor's scores and importances, the runs themselves, and
the methodology and units. Figures are embedded as base64 PNG, with no external CSS or JavaScript, so the file opens
offline; PNG and SVG copies are written next to it for papers.
"""

from __future__ import annotations

import base64
import html
import json
import math
from dataclasses import asdict
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

import robustscale.analysis.figures as figs
from robustscale.analysis.adaptive_figures import ADAPTIVE_FIGURES, adaptive_report
from robustscale.analysis._table import CANONICAL_COLUMNS, Runs, jsonable, usable_runs
from robustscale.analysis.ndlaw import BOOTSTRAP_MAX, fit_nd, nd_summary
from robustscale.analysis.plan import AccuracyMap, nearest_wrn
from robustscale.analysis.predictor import fit_predictor, summarize_predictor
from robustscale.analysis.replicates import by_recipe, has_replicates, recipe_codes
from robustscale.analysis.scaling import PUE, extrapolate_laws, fit_laws, summarize_laws
from robustscale.analysis.stops import early_stops, sentence
from robustscale.analysis.summary import answers, duration
from robustscale.errors import UserError
from robustscale.store.atomic import write_bytes
from robustscale.store.record import read_record

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
    "Cost, energy and CO2 laws: the same power law against FLOPs over the envelope's runs (as the paper's Fig. 3b/c "
    "over its best configurations): the cost of the compute that buys the accuracy law.",
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


def report_name(source: str) -> str:
    """What the title names: the table's file (``results.csv``), or the sweep's folder for a runs folder
    (``runs/demo`` -> ``demo``; the demo's ``runs/demo/runs`` -> ``demo`` too)."""
    path = Path(source)
    if path.suffix:
        return path.name
    return path.parent.name if path.name == "runs" and path.parent.name else path.name


def build_report(table: pd.DataFrame, out_html: str | Path, *, metric: str = "autoattack_acc",
                 min_acc: float | None = None, bins: int = 19, bootstrap: int = 1000, seed: int = 0,
                 gpu: str = "h100", targets: list[float] | None = None, name: str | None = None,
                 hardware: str | None = None) -> dict:
    """Fit everything, draw the figures, and write ``out_html``, a sibling ``.json`` and a ``<stem>_figures`` folder.

    Args:
        name: the sweep or file the title names (default: from the table's source, :func:`report_name`).
        hardware: the machine the runs trained on, for the device time of a target (default: read from the runs'
            records when the table came from a runs folder).

    Returns:
        The report's content (the JSON written next to the HTML), with the paths written.
    """
    out_html = Path(out_html)
    if out_html.suffix.lower() not in (".html", ".htm") or out_html.is_dir():
        raise UserError(f"report -o '{out_html}': name an .html file (its .json and _figures folder are written "
                        "beside it, so -o x.json would overwrite the one with the other)")
    runs = usable_runs(table, metric, min_acc)
    laws = fit_laws(runs, bins=bins, bootstrap=bootstrap, seed=seed)
    predictor, predictor_summary, why, held_out = _predictor(table, metric, min_acc, seed)
    targets = default_targets(runs) if targets is None else list(targets)
    name = name or report_name(runs.source)
    content = {
        "title": f"Scaling laws of adversarial robustness: {name}", "name": name,
        "source": runs.source, "metric": runs.metric, "units": runs.units(), "n_runs": len(runs.frame),
        "fit": summarize_laws(laws), "predictor": predictor_summary,
        "extrapolations": [extrapolate_laws(laws, t, gpu=gpu) for t in targets],
        "hardware": hardware or runs_hardware(runs.frame),
        "autoattack": runs_autoattack(runs.frame) if runs.metric == "autoattack_acc" else None,
        "replicates": _replicates(table, runs.metric),
        "early_stops": early_stops(table),  # None unless some run collapsed or stopped early
    }
    nd_law, content["nd_law"] = _nd_law(table, runs, bootstrap, seed)
    content["answers"] = answers(content, runs.frame, hardware=content["hardware"])
    content.update(methodology=METHODOLOGY, runs=_run_records(runs))
    drawn = figs.all_figures(laws, predictor, why, held_out=held_out)
    if nd_law is not None:
        drawn["fig_nd"] = figs.figure_nd(nd_law, [row["flops"] for row in content["nd_law"]["budgets"]])
    rendered = {key: figs.render(fig) for key, fig in drawn.items()}
    adaptive, adaptive_figure = adaptive_report(table, metric=metric, bins=bins, bootstrap=bootstrap, seed=seed,
                                                min_acc=min_acc)  # (None, {}) unless from an adaptive sweep
    content.update({"adaptive": adaptive} if adaptive else {})
    rendered.update(adaptive_figure)
    content["figures"] = _write_figures(rendered, out_html, {**captions(content), **ADAPTIVE_FIGURES})
    as_json = jsonable(content)  # inf/NaN become null here; the HTML keeps them as ∞ and —
    write_bytes(out_html.with_suffix(".json"), json.dumps(as_json, indent=2).encode())
    write_bytes(out_html, _html(content, rendered).encode())
    return {**as_json, "html": str(out_html), "json": str(out_html.with_suffix(".json"))}


def _predictor(table: pd.DataFrame, metric: str, min_acc: float | None,
               seed: int) -> tuple[Any, dict, str, pd.DataFrame | None]:
    """The predictor, its summary and its held-out runs' rows, or why it could not be fitted (the rest of the
    report still stands)."""
    try:
        predictor, runs, frame = fit_predictor(table, metric=metric, min_acc=min_acc, seed=seed)
    except UserError as err:
        return None, {"error": str(err)}, str(err), None
    return predictor, summarize_predictor(predictor, runs, frame), "", _held_out(predictor, frame, runs.metric)


def _held_out(predictor: Any, frame: pd.DataFrame, metric: str) -> pd.DataFrame | None:
    """The rows the predictor held out: its split redrawn with its own seed, kept only if it matches the truth it
    scored (so a change in how the predictor splits can only lose the colours of figure 1b, never mislabel them)."""
    test = train_test_split(np.arange(len(frame)), test_size=predictor.test_size, random_state=predictor.seed)[1]
    rows = frame.iloc[test]
    truth = pd.to_numeric(rows[metric], errors="coerce").to_numpy(dtype=float)
    same = len(truth) == len(predictor.test_true_) and np.allclose(truth, predictor.test_true_)
    return rows if same else None


def runs_hardware(frame: pd.DataFrame) -> str | None:
    """The machine the runs trained on, from the first run's record (a table read from a runs folder has
    ``run_dir``); None for another framework's table."""
    if "run_dir" not in frame or frame["run_dir"].dropna().empty:
        return None
    record = read_record(Path(frame["run_dir"].dropna().iloc[0]))
    info = asdict(record.hardware) if record is not None else {}
    if info.get("gpu_count"):
        return f"{info['gpu_count']}× {info.get('gpu_name') or 'GPU'}"
    if info.get("cpu"):
        cores = f", {info['cpu_count']} cores" if info.get("cpu_count") else ""
        return f"{info['cpu']} CPU{cores}"
    return None


# pyautoattack's attack names as its paper writes them
_ATTACK_NAMES = {"apgd-ce": "APGD-CE", "apgd-t": "APGD-T", "apgd-dlr": "APGD-DLR", "fab": "FAB", "fab-t": "FAB-T",
                 "square": "Square"}


def runs_autoattack(frame: pd.DataFrame) -> str | None:
    """Which AutoAttack measured the runs (version, the attacks when only some of the version's ran, test points),
    from their records; None for another framework's table. The demo runs standard's APGD-CE and APGD-T only, and a
    reader comparing its numbers with the paper's must see that."""
    if "run_dir" not in frame:
        return None
    found = set()
    for run_dir in frame["run_dir"].dropna():
        record = read_record(Path(run_dir))
        result = (record.evaluations or {}).get("autoattack") if record is not None else None
        if isinstance(result, dict) and result.get("attacks"):
            found.add(_autoattack_words(result))
    return "; ".join(sorted(found)) or None


def attack_names(attacks: Sequence[str]) -> str:
    """``APGD-CE + APGD-T``: pyautoattack's attack names as its paper writes them."""
    return " + ".join(_ATTACK_NAMES.get(str(a), str(a)) for a in attacks)


def _autoattack_words(result: dict) -> str:
    skipped, points = result.get("skipped") or [], f"{result.get('n')} test points"
    if skipped:
        return (f"{attack_names(result['attacks'])} of {result.get('version')} AutoAttack ({attack_names(skipped)} not "
                f"run), {points}")
    return f"{result.get('version')} AutoAttack ({attack_names(result['attacks'])}), {points}"


def _replicates(table: pd.DataFrame, metric: str) -> dict | None:
    """Per-recipe mean, spread and t-interval when some recipe was trained with several seeds, else None."""
    done = table[table["status"].astype(str).str.lower() == "done"] if "status" in table else table
    if done.empty or not has_replicates(recipe_codes(done)):
        return None
    recipes = by_recipe(done, metrics=[metric])
    repeated = recipes[recipes["n"] > 1]
    std = pd.to_numeric(repeated[f"{metric}_std"], errors="coerce")
    return {"n_recipes": len(recipes), "n_replicated": len(repeated), "median_std": float(std.median()),
            "max_std": float(std.max()), "metric": metric, "recipes": jsonable(recipes.to_dict("records"))}


ND_MIN_LEVELS = 3  # model sizes and data amounts an N-D law section needs: with two of either it cannot say much
ND_BUDGET_FACTORS = (1.0, 10.0, 100.0)  # budgets priced: the largest run's compute, then 10x and 100x it


def _nd_law(table: pd.DataFrame, runs: Runs, bootstrap: int, seed: int) -> tuple[Any, dict]:
    """Beyond the paper: the N-D law and its compute-optimal split for a few budgets, when the table spans at least
    three model sizes and three data amounts (``samples_seen``); otherwise why not."""
    frame = runs.frame
    spans = {c: int(pd.to_numeric(frame[c], errors="coerce").nunique()) if c in frame else 0
             for c in ("params", "samples_seen")}
    if min(spans.values()) < ND_MIN_LEVELS:
        return None, {"skipped": f"the table spans {spans['params']} model sizes and {spans['samples_seen']} data "
                                 f"amounts (samples_seen); the N-D law needs at least {ND_MIN_LEVELS} of each"}
    try:
        law = fit_nd(table, bootstrap=min(bootstrap, BOOTSTRAP_MAX), seed=seed)
        accuracy = AccuracyMap(law, table)
        budgets = [_nd_budget(law, accuracy, runs.flops.max() * f) for f in ND_BUDGET_FACTORS]
    except UserError as err:
        return None, {"skipped": str(err)}
    return law, {"law": nd_summary(law), "budgets": budgets, "accuracy_mapping": accuracy.describe()}


def _nd_budget(law: Any, accuracy: Any, flops: float) -> dict:
    n_star, d_star = float(law.optimal_params(flops)), float(law.optimal_samples(flops))
    loss = float(law.optimal_loss(flops))
    wrn = nearest_wrn(n_star)["name"] if math.isfinite(n_star) and n_star > 0 else None
    return {"flops": float(flops), "params": n_star, "samples": d_star, "loss": loss,
            "accuracy": accuracy.accuracy(loss) if accuracy.available else None, "wrn": wrn,
            "beyond_table": bool(n_star > law.runs_.n.max() or d_star > law.runs_.d.max())}


def _run_records(runs: Runs) -> list[dict]:
    columns = [c for c in CANONICAL_COLUMNS if c in runs.frame] or list(runs.frame.columns)
    return runs.frame[columns].astype(object).where(runs.frame[columns].notna(), None).to_dict("records")


def captions(content: dict) -> dict[str, str]:
    """What each figure shows (:data:`~robustscale.analysis.figures.FIGURES`), with this table's numbers."""
    fit, unit = content["fit"], content["units"]["accuracy"]
    law, sat = fit["accuracy_law"], fit["saturating_law"]
    scale = 100.0 if unit == "fraction" else 1.0
    alpha_ci = (law.get("ci") or {}).get("alpha")
    interval = f" (95% CI {alpha_ci[0]:.3g} to {alpha_ci[1]:.3g})" if alpha_ci else ""
    extra = {
        "fig1a": f"{content['n_runs']} runs.",
        "fig3a": f"Here α = {law['alpha']:.3g}{interval} over {law['n']} envelope runs; the saturating law levels off "
                 f"at {sat['A'] * scale:.1f}%.",
    }
    predictor = content["predictor"]
    if "error" not in predictor:
        extra["fig1b"] = f"{predictor['n_test']} held-out runs of {predictor['n']}; R² {predictor['r2']:.2f}."
    for key, name in (("fig3b", "cost_law"), ("fig3c", "co2_law")):
        if fit.get(name):
            extra[key] = f"Exponent {fit[name]['alpha']:.3g}, R² {fit[name]['r2']:.2f}, {fit[name]['n']} runs."
    result = {key: f"{text} {extra[key]}" if key in extra else text for key, text in figs.FIGURES.items()}
    result["fig_nd"] = ("Beyond the paper: the runs by model size N and samples seen D, coloured by loss, with the "
                        "compute-optimal frontier of the fitted L(N, D) and the loss along it; crosses: the budgets "
                        "priced in the N-D table.")
    return result


def _write_figures(rendered: dict[str, dict[str, bytes]], out_html: Path, caption: dict[str, str]) -> dict:
    folder = out_html.with_name(f"{out_html.stem}_figures")
    paths = {}
    for name, formats in rendered.items():
        for fmt, data in formats.items():
            write_bytes(folder / f"{name}.{fmt}", data)
        paths[name] = {"caption": caption[name], "png": str(folder / f"{name}.png"),
                       "svg": str(folder / f"{name}.svg")}
    return paths


# ---------------------------------------------------------------------------------------------------------- HTML

_CSS = """
body{font-family:system-ui,sans-serif;max-width:1200px;margin:1.2em auto;padding:0 1em;color:#222;line-height:1.45}
h1{font-size:1.5em;margin:.2em 0}h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:1.8em}
.meta{color:#555;font-size:.9em;margin:.2em 0 1em}
#summary{display:grid;grid-template-columns:minmax(0,1.15fr) minmax(0,1fr);gap:1.5em;align-items:start;
background:#f7f9fc;border:1px solid #dde3ec;border-radius:6px;padding:1em 1.2em}
#summary h2{margin:0 0 .4em;border:0;font-size:1.2em}.answer{margin:0 0 .8em}
.answer h3{font-size:1em;margin:0 0 .15em;color:#1f3b63}.answer p{margin:0}
#summary figure{margin:0}#summary figure img{width:100%}
.grid{display:grid;grid-template-columns:repeat(auto-fit,minmax(480px,1fr));gap:1.2em}.grid .wide{grid-column:1/-1}
table{border-collapse:collapse;margin:.8em 0;font-size:.9em}td,th{border:1px solid #ddd;padding:.25em .6em;
text-align:right}th{background:#f3f3f3}td.l,th.l{text-align:left}figure{margin:0 0 1em}
figure img{max-width:100%;border:1px solid #eee}figcaption{font-size:.9em;color:#555}
.runs{max-height:32em;overflow:auto}.note{color:#7a4b00}code{background:#f5f5f5;padding:0 .2em}
nav{font-size:.9em;margin:.8em 0}nav a{margin-right:1em}
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
    return (f"<h2 id='laws'>Scaling laws</h2>{table}<p>Saturating law B = {_fmt(sat['B'])} (FLOPs in the table's "
            "unit). "
            f"Power-law R² is in log-log space, saturating R² in accuracy space. A dash marks a law whose column is "
            f"absent.</p>{notes}")


def _holdout_section(fit: dict) -> str:
    holdout = fit["holdout"]
    rows = [[label, h.get("rmse"), h.get("mae"), h.get("n_train"), h.get("n_test"), h.get("flops_threshold")]
            for label, h in (("power law", holdout["power_law"]), ("saturating law", holdout["saturating_law"]))]
    verdict = (f"On this table the <b>{holdout['better'].replace('_', ' ')}</b> extrapolates better."
               if holdout.get("better") else "Too few points to compare the laws out of sample.")
    return ("<h2 id='holdout'>Held-out extrapolation check</h2><p>Each law is fitted on the lower-compute envelope "
            "and tested on the highest-compute points (error in accuracy units).</p>"
            + _table(["law", "RMSE", "MAE", "n fit", "n held out", "held out above FLOPs"], rows) + f"<p>{verdict}</p>")


def _extrapolation_section(extrapolations: list[dict], throughput: dict | None, hardware: str | None) -> str:
    if not extrapolations:
        return ("<h2 id='extrapolations'>Extrapolations</h2><p>The best run is already at the top of the accuracy "
                "scale.</p>")
    a = extrapolations[0]["assumptions"]
    gpu_flops_per_s = a["peak_tflops"] * 1e12 * a["utilization"]
    rows = []
    for ext in extrapolations:
        for key, label in (("power_law", "power"), ("saturating_law", "saturating")):
            law = ext[key]
            flops = law["train_flops"]
            here = duration(flops / throughput["flops_per_s"]) if throughput and flops is not None else None
            rows.append([ext["target"], label, flops, law["interval"], duration(flops / gpu_flops_per_s), here,
                         _value(law["energy_kwh"]), _value(law["tdp_energy_kwh"]), _value(law["cost_usd"]),
                         _value(law["co2_kg"]), law["note"]])
    where = f" ({hardware})" if hardware else ""
    assumptions = (f"GPU time on one {a['gpu']}: {a['precision']} peak {a['peak_tflops']} TFLOP/s at utilisation "
                   f"{a['utilization']}, TDP {a['tdp_w']} W, PUE {a['pue']}. "
                   + (f"Time here: at the runs' median training throughput on their own hardware{where}, "
                      f"{throughput['flops_per_s']:.3g} FLOP/s per {throughput['basis']}. " if throughput else "")
                   + "Energy, cost and CO2 come from the fitted laws at the target FLOPs; the TDP column is "
                   "GPU-hours × TDP × PUE.")
    header = ["target", "law", "FLOPs", "95% CI", f"time on {a['gpu']}", "time here", "kWh (law)", "kWh (TDP)",
              "USD", "CO2 kg", "note"]
    return (f"<h2 id='extrapolations'>Extrapolations</h2><p>{html.escape(assumptions)}</p>"
            + _table(header, rows, left=2))


def _value(quantity: dict | None) -> Any:
    return None if quantity is None else quantity["value"]


def _predictor_section(summary: dict) -> str:
    if "error" in summary:
        return f"<h2 id='predictor'>Predictor</h2><p class='note'>Not fitted: {html.escape(summary['error'])}</p>"
    scores = _table(["held-out R²", "held-out MAE", "cv R² (mean)", "cv R² (std)", "folds", "runs", "held out"],
                    [[summary["r2"], summary["mae"], summary["cv_r2"], summary["cv_r2_std"], summary["cv_folds"],
                      summary["n"], summary["n_test"]]], left=0)
    importance = summary["importance"]
    rows = [[f, importance["impurity"][f], importance["permutation"][f]] for f in summary["features"]]
    return ("<h2 id='predictor'>Predictor</h2><p>Gradient boosting regression, 50 estimators, max depth 5, 70:30 "
            "split.</p>" + scores + _table(["feature", "impurity importance", "permutation importance"], rows))


def _img(name: str, rendered: dict[str, dict[str, bytes]]) -> str:
    data = base64.b64encode(rendered[name]["png"]).decode()
    return f"<img alt='{name}' src='data:image/png;base64,{data}'>"


FIGURE_ORDER = ("fig1a", "fig1b", "fig1c", "fig2", "fig3a", "fig3b", "fig3c", "fig_nd", "adaptive")  # the paper's,
# then ours
_WIDE = ("fig2", "fig_nd")


def _figures_section(content: dict, rendered: dict[str, dict[str, bytes]]) -> str:
    parts = []
    for name in (n for n in FIGURE_ORDER if n in content["figures"]):
        paths = content["figures"][name]
        label = {"fig_nd": "N-D law", "adaptive": "Adaptive sweep"}.get(name, f"Fig. {name[3:]}")
        wide = " class='wide'" if name in _WIDE else ""
        parts.append(f"<figure id='{name}'{wide}>{_img(name, rendered)}<figcaption><b>{label}.</b> "
                     f"{html.escape(paths['caption'])} (SVG: <code>{html.escape(Path(paths['svg']).name)}</code>)"
                     "</figcaption></figure>")
    return "<section id='figures'><h2>Figures</h2><div class='grid'>" + "".join(parts) + "</div></section>"


def _summary_section(content: dict, rendered: dict[str, dict[str, bytes]]) -> str:
    """The first screen: the three answers, and the figure that answers the second."""
    blocks = "".join(f"<div class='answer' id='answer-{key}'><h3>{i}. {html.escape(a['question'])}</h3>"
                     f"<p>{html.escape(a['text'])}</p></div>"
                     for i, (key, a) in enumerate(content["answers"].items(), start=1))
    caption = html.escape(content["figures"]["fig3a"]["caption"])
    return (f'<section id="summary"><div><h2>What this sweep says</h2>{blocks}</div>'
            f"<figure>{_img('fig3a', rendered)}<figcaption><b>Fig. 3a.</b> {caption}</figcaption></figure>"
            "</section>")


def _replicates_section(replicates: dict | None) -> str:
    if not replicates:
        return ""
    metric = replicates["metric"]
    knobs = [k for k in ("model", "loss", "attack_steps", "epochs", "ema", "synthetic") if k in
             (replicates["recipes"][0] if replicates["recipes"] else {})]
    rows = [[*(r[k] for k in knobs), r["n"], r["seeds"], r[f"{metric}_mean"], r[f"{metric}_std"],
             [r[f"{metric}_ci_lo"], r[f"{metric}_ci_hi"]]] for r in replicates["recipes"]]
    return (f"<h2 id='replicates'>Seed spread per recipe</h2><p>{replicates['n_replicated']} of "
            f"{replicates['n_recipes']} recipes were trained with several seeds; the median standard deviation of "
            f"<code>{metric}</code> across seeds is {_fmt(replicates['median_std'])} (largest "
            f"{_fmt(replicates['max_std'])}): differences between recipes smaller than that are noise.</p>"
            + _table([*knobs, "runs", "seeds", "mean", "std", "95% CI"], rows, left=len(knobs) + 2))


def _stops_section(stops: dict | None) -> str:
    """The runs that collapsed or stopped early (:mod:`.stops`), and the training compute the stops saved."""
    if not stops:
        return ""
    header = list(stops["runs"][0])
    return (f"<h2 id='early-stops'>Early stops</h2><p>{html.escape(sentence(stops))} Saved compute is estimated from "
            "the planned epochs: train_flops × (epochs − epochs_run) / epochs_run.</p>"
            + _table(header, [[r[h] for h in header] for r in stops["runs"]]))


def _nd_section(nd: dict) -> str:
    if "skipped" in nd:
        return (f"<h2 id='nd-law'>N-D law (beyond the paper)</h2><p class='note'>Not fitted: "
                f"{html.escape(nd['skipped'])}</p>")
    law = nd["law"]
    ci = law.get("ci") or {}
    rows = [[name, law[name], ci.get(name)] for name in ("E", "A", "B", "alpha", "beta")]
    budgets = [[b["flops"], b["params"], b["wrn"], b["samples"], b["loss"], b["accuracy"],
                "yes" if b["beyond_table"] else "no"] for b in nd["budgets"]]
    notes = "".join(f"<p class='note'>{html.escape(n)}</p>" for n in law.get("identifiability", {}).get("notes", []))
    return ("<h2 id='nd-law'>N-D law (beyond the paper)</h2>"
            f"<p><code>{html.escape(law['law'])}</code>, fitted on {law['n']} runs ({html.escape(law['fit'])}); "
            f"R² {_fmt(law['r2'])}. L is <code>{html.escape(law['metric'])}</code>.</p>"
            + _table(["parameter", "value", "95% CI"], rows) + notes
            + "<p>The compute-optimal model size N* and samples D* for a few budgets (the largest run's compute, "
            "then 10× and 100× it)" + (f"; accuracy via {html.escape(nd['accuracy_mapping'])}"
                                        if nd.get("accuracy_mapping") else "") + ":</p>"
            + _table(["budget FLOPs", "N*", "nearest WRN", "D*", "loss", "accuracy", "beyond the table"], budgets))


def _runs_section(runs: list[dict]) -> str:
    if not runs:
        return ""
    header = list(runs[0])
    return (f"<h2 id='runs'>Runs ({len(runs)})</h2><div class='runs'>"
            + _table(header, [[r[h] for h in header] for r in runs], left=1) + "</div>")


def _meta(content: dict) -> str:
    dropped = ", ".join(f"{k}: {v}" for k, v in content["fit"]["dropped"].items() if v) or "none"
    hardware = f"; trained on {html.escape(content['hardware'])}" if content.get("hardware") else ""
    hardware += f"; {html.escape(content['autoattack'])}" if content.get("autoattack") else ""
    source = f" from <code>{html.escape(content['source'])}</code>" if content["source"] != "table" else ""
    return (f"<p class='meta'>{content['n_runs']} usable runs{source} "
            f"(set aside: {html.escape(dropped)}); metric <code>{content['metric']}</code> "
            f"({content['units']['accuracy']}){hardware}.</p>")


def _html(content: dict, rendered: dict[str, dict[str, bytes]]) -> str:
    fit, throughput = content["fit"], content["answers"]["target"].get("throughput")
    methodology = "<h2 id='methodology'>Methodology and units</h2><ul>" + "".join(
        f"<li>{html.escape(m)}</li>" for m in content["methodology"]) + "</ul>"
    nav = ("<nav><a href='#figures'>Figures</a><a href='#laws'>Scaling laws</a><a href='#extrapolations'>"
           "Extrapolations</a><a href='#predictor'>Predictor</a>"
           + ("<a href='#replicates'>Seed spread</a>" if content.get("replicates") else "")
           + ("<a href='#early-stops'>Early stops</a>" if content.get("early_stops") else "")
           + "<a href='#nd-law'>N-D law</a><a href='#runs'>Runs</a><a href='#methodology'>Methodology</a></nav>")
    extrapolations = _extrapolation_section(content["extrapolations"], throughput, content.get("hardware"))
    tables = (f"<section id='tables'>{_laws_section(fit)}{_holdout_section(fit)}{extrapolations}"
              f"{_predictor_section(content['predictor'])}"
              f"{_replicates_section(content.get('replicates'))}{_stops_section(content.get('early_stops'))}"
              f"{_nd_section(content['nd_law'])}"
              f"{_runs_section(content['runs'])}{methodology}</section>")
    body = (f"<h1>{html.escape(content['title'])}</h1>{_meta(content)}{_summary_section(content, rendered)}{nav}"
            f"{_figures_section(content, rendered)}{tables}")
    return (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
            f"<meta name='viewport' content='width=device-width, initial-scale=1'>"
            f"<title>{html.escape(content['title'])}</title><style>{_CSS}</style></head><body>{body}</body></html>\n")
