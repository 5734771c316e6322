"""The report's first screen: the paper's three questions, each answered for one results table in a sentence.

Section IV of the paper asks what drives adversarial robustness (IV-A: the predictor and its feature importances)
and what compute buys (IV-B: the envelope's power law, and the cost and CO2 laws beside it); its conclusion weighs
what more robustness would cost. Each answer here carries its number and interval and is built from the report's
own content (the ``fit``, ``predictor`` and ``extrapolations`` objects), so the first screen can never disagree
with the tables under it. Two things a reader of a small sweep must not miss are said in the answers themselves:
an effect the sweep's design cannot separate from another (a knob only ever used together with another one), and a
target that lies beyond the data.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np
import pandas as pd

from robustscale.analysis.predictor import same_partition

__all__ = ["answers", "confounds", "headline_extrapolation", "runs_throughput", "duration"]

QUESTIONS = {
    "drivers": "What drives robustness here?",
    "compute": "What does compute buy?",
    "target": "What would more robustness cost?",
}
METRIC_NAMES = {"autoattack_acc": "AutoAttack accuracy", "pgd40_acc": "PGD-40 accuracy", "clean_acc": "clean accuracy"}
# The knobs a confound is looked for among (model stands for params, which it determines).
CONFOUND_KNOBS = ("model", "activation", "loss", "attack_steps", "epochs", "ema", "synthetic")
_FLAGS = {"synthetic": "synthetic data", "ema": "EMA"}
_KNOB_NAMES = {"ema": "EMA", "synthetic": "synthetic data", "attack_steps": "attack steps", "params": "model size",
               "train_flops": "training FLOPs"}
_TWIN = "partitions the runs exactly like "


# ------------------------------------------------------------------------------------------------ formatting


_SUPERSCRIPT = str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹")


def _g(value: float | None, digits: int = 3) -> str:
    """A number as a sentence writes it: 0.0105, 960, 27,000, 5.83×10²² (``digits`` significant digits)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if math.isinf(value):
        return "∞" if value > 0 else "-∞"
    if value == 0:
        return "0"
    exponent = math.floor(math.log10(abs(value)))
    if exponent >= 5 or exponent < -3:
        mantissa = float(f"{value / 10.0**exponent:.{digits}g}")
        if abs(mantissa) >= 10:  # 9.996 rounded up to 10
            mantissa, exponent = mantissa / 10, exponent + 1
        return f"{mantissa:.{digits}g}×10{str(exponent).translate(_SUPERSCRIPT)}"
    if exponent >= digits - 1:
        return f"{round(value, digits - 1 - exponent):,.0f}"
    return f"{value:.{digits}g}"


def _span(interval: Any, digits: int = 3) -> str:
    """A 95% interval in words: "95% CI a to b", open above when some bootstrap fits never get there, or why there is
    none (no bootstrap draws, or all of them agreeing)."""
    if not interval or len(interval) != 2 or any(v is None for v in interval):
        return "no interval: no bootstrap"
    low, high = interval
    if isinstance(high, float) and math.isinf(high) and high > 0:
        return f"95% CI {_g(low, digits)} or more: some bootstrap fits never reach it"
    if _g(low, digits) == _g(high, digits):
        return "no interval: every bootstrap draw gave the same value, or there was no bootstrap"
    return f"95% CI {_g(low, digits)} to {_g(high, digits)}"


def _acc(value: float, unit: str) -> str:
    """An accuracy as a percentage, whatever the table's unit."""
    return f"{value * 100 if unit == 'fraction' else value:.1f}%"


def _points(value: float | None, unit: str) -> str:
    """An accuracy difference (an RMSE) in percentage points."""
    return "n/a" if value is None else f"{value * 100 if unit == 'fraction' else value:.1f} points"


def duration(seconds: float) -> str:
    """A duration in the unit a person would say it in (ms to years)."""
    if not math.isfinite(seconds):
        return "forever"
    for limit, size, unit in ((1, 1e-3, "ms"), (120, 1, "s"), (7200, 60, "min"), (172800, 3600, "h"),
                              (2 * 365 * 86400, 86400, "days")):
        if seconds < limit:
            return f"{seconds / size:.2g} {unit}"
    return f"{seconds / (365 * 86400):.3g} years"


def _money(usd: float | None) -> str:
    """Dollars as a person writes them: $12,345, $4.70, $0.000049."""
    if usd is None or not math.isfinite(usd):
        return "n/a" if usd is None else "unbounded"
    if usd >= 100:
        return f"${usd:,.0f}"
    return f"${usd:.2f}" if usd >= 1 else "$" + np.format_float_positional(usd, precision=2, unique=False,
                                                                         fractional=False, trim="-")


def _metric_name(metric: str) -> str:
    return METRIC_NAMES.get(metric, metric)


def _join(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


# ------------------------------------------------------------------------------------------------ confounds


def _knob_value(knob: str, value: Any) -> str:
    """How a knob's value reads in a sentence: 'EMA', 'no EMA', 'TRADES loss', '3 attack steps'."""
    if knob in _FLAGS:
        return _FLAGS[knob] if bool(value) else f"no {_FLAGS[knob]}"
    if knob == "loss":
        return {"at": "PGD-AT", "trades": "TRADES"}.get(str(value), str(value)) + " loss"
    if knob in ("attack_steps", "epochs"):
        number = int(value) if float(value).is_integer() else value
        return f"{number} {'attack step' if knob == 'attack_steps' else 'epoch'}{'' if number == 1 else 's'}"
    return f"{knob} {value}"


def confounds(frame: pd.DataFrame, dropped: Mapping[str, str] | None = None) -> list[str]:
    """Effects the sweep's design cannot separate, one sentence each.

    A flag (synthetic data, EMA) used only on runs that all share another knob's value, while runs without it vary
    that knob, is nested in that arm: its effect is not separated from the arm's (the demo uses synthetic data only
    on its TRADES, 3-step, EMA runs). Two knobs that change together in every run (the predictor keeps one of them:
    ``dropped``) cannot be told apart at all.
    """
    knobs = [k for k in CONFOUND_KNOBS if k in frame and frame[k].notna().any()]
    found = []
    for flag in (k for k in _FLAGS if k in knobs):
        on = frame[flag].astype("boolean").fillna(False).astype(bool)
        if on.all() or not on.any():
            continue
        shared = [_knob_value(k, frame.loc[on, k].iloc[0]) for k in knobs if k != flag
                  and frame.loc[on, k].nunique(dropna=True) == 1 and frame.loc[~on, k].nunique(dropna=True) > 1]
        if shared:
            found.append(f"{_FLAGS[flag]} was used only on runs with {_join(shared)}, so its effect is not "
                         "separated from theirs")
    pairs = [(name, why.removeprefix(_TWIN)) for name, why in (dropped or {}).items() if why.startswith(_TWIN)]
    varying = [k for k in knobs if frame[k].nunique(dropna=True) > 1]
    pairs += [(b, a) for i, a in enumerate(varying) for b in varying[i + 1:] if same_partition(frame[a], frame[b])]
    for name, twin in dict.fromkeys(tuple(sorted(pair)) for pair in pairs):
        found.append(f"{_KNOB_NAMES.get(name, name)} and {_KNOB_NAMES.get(twin, twin)} change together in every run, "
                     "so their effects cannot be told apart")
    return found


# ------------------------------------------------------------------------------------------------ the answers


def _drivers(predictor: Mapping[str, Any], metric: str, caveats: list[str]) -> dict[str, Any]:
    """Question 1 (paper IV-A): the predictor's held-out R^2 and its most important knobs."""
    caution = f" Caution: {'; '.join(caveats)}." if caveats else ""
    if "error" in predictor:
        return {"text": f"The recipe predictor could not be fitted ({predictor['error']}).{caution}",
                "line": "predictor not fitted", "top": [], "r2": None}
    impurity = predictor["importance"]["impurity"]
    top = sorted(impurity, key=lambda f: -impurity[f])[:3]
    knobs = _join([f"{_KNOB_NAMES.get(f, f)} ({impurity[f]:.2f})" for f in top])
    cv = (f"; {predictor['cv_folds']}-fold CV {predictor['cv_r2']:.2f} ± {predictor['cv_r2_std']:.2f}"
          if predictor.get("cv_r2") is not None else "")
    text = (f"A gradient-boosting predictor of {_metric_name(metric)} from the recipe scores R² = "
            f"{predictor['r2']:.2f} on {predictor['n_test']} held-out runs{cv}; the knobs it leans on most are "
            f"{knobs} (impurity importance).{caution}")
    line = (f"most important knobs: {', '.join(_KNOB_NAMES.get(f, f) for f in top)} (predictor held-out R² "
            f"{predictor['r2']:.2f}{cv})"
            + (f"; caution: {caveats[0]}" if caveats else ""))
    return {"text": text, "line": line, "top": top, "r2": predictor["r2"]}


def _growth(alpha: float, ci: Any) -> str:
    """What ten times the compute does to accuracy under ``C * FLOPs^alpha``: the factor 10^alpha, or for a slow law
    the relative gain (the paper's alpha 0.0105 is +2.4%)."""
    values = [alpha, *(ci or [])]
    if 10**alpha < 2:
        gains = [f"{100 * (10 ** a - 1):.2g}%" for a in values]
        return f"raises it by {gains[0]} of its value" + (f" ({gains[1]} to {gains[2]})" if ci else "")
    factors = [f"{10 ** a:.3g}" for a in values]
    return f"multiplies it by {factors[0]}" + (f" ({factors[1]} to {factors[2]})" if ci else "")


def _compute(fit: Mapping[str, Any], metric: str, unit: str) -> dict[str, Any]:
    """Question 2 (paper IV-B): the envelope's power law, the saturating law, which extrapolates, the cost laws."""
    law, sat, holdout = fit["accuracy_law"], fit["saturating_law"], fit["holdout"]
    alpha_ci = (law.get("ci") or {}).get("alpha")
    text = (f"Along the best-run envelope ({law['n']} runs), {_metric_name(metric)} = C·FLOPs^α with α = "
            f"{law['alpha']:.3g} ({_span(alpha_ci)}; R² {law['r2']:.2f}): ten times the compute "
            f"{_growth(law['alpha'], alpha_ci)}. The saturating law A − B·FLOPs^−γ levels off at "
            f"{_acc(sat['A'], unit)}")
    better = holdout.get("better")
    if better:
        rmse = {k: holdout[k]["rmse"] for k in ("power_law", "saturating_law")}
        other = "power_law" if better == "saturating_law" else "saturating_law"
        text += (f"; on the held-out top quarter of the FLOP range the {better.replace('_', ' ')} extrapolates better "
                 f"(RMSE {_points(rmse[better], unit)} against {_points(rmse[other], unit)}).")
    else:
        text += "; too few envelope points to test which law extrapolates better."
    costs = [(label, fit.get(name)) for name, label in (("cost_law", "Electricity cost"), ("co2_law", "CO2"))]
    costs = [(label, c) for label, c in costs if c]
    if costs:
        laws = [f"{label} as FLOPs^{c['alpha']:.3g} ({_span((c.get('ci') or {}).get('alpha')).removeprefix('95% CI ')})"
                for label, c in costs]
        text += f" {laws[0].replace(' as ', ' grows as ', 1)}" + (f" and {laws[1]}" if len(laws) > 1 else "") + "."
    else:
        text += " The table has no cost or CO2 column, so no cost law."
    line = (f"accuracy = C·FLOPs^α, α = {law['alpha']:.3g} ({_span(alpha_ci)})"
            + (f"; the {better.replace('_', ' ')} extrapolates better" if better else "")
            + (f"; cost ∝ FLOPs^{costs[0][1]['alpha']:.3g}" if costs else ""))
    return {"text": text, "line": line, "alpha": law["alpha"], "alpha_ci": alpha_ci, "better": better}


def runs_throughput(frame: pd.DataFrame) -> dict[str, Any] | None:
    """The runs' median training throughput on their own hardware: FLOPs per GPU-second when the table records
    GPU-hours, else FLOPs per wall-clock second of a run (None when it records neither)."""
    flops = pd.to_numeric(frame.get("train_flops"), errors="coerce")
    for column, seconds, basis in (("gpu_hours", 3600.0, "GPU"), ("wall_s", 1.0, "run")):
        if column in frame:
            time_s = pd.to_numeric(frame[column], errors="coerce") * seconds
            rate = (flops / time_s)[(time_s > 0) & (flops > 0)]
            if len(rate):
                return {"flops_per_s": float(np.median(rate)), "basis": basis, "n": int(len(rate))}
    return None


def headline_extrapolation(extrapolations: list[dict]) -> dict | None:
    """The target the first screen prices: the middle of the report's targets (5 points above the best run by
    default)."""
    return extrapolations[len(extrapolations) // 2] if extrapolations else None


def _amount(value: float, unit: str, small_unit: str, what: str = "") -> str:
    """``value`` in ``unit`` (kWh, kg), or in the thousandth ``small_unit`` (Wh, g) below one."""
    if math.isfinite(value) and 0 < abs(value) < 1:
        value, unit = value * 1000, small_unit
    return f"{_g(value, 2)} {unit}{what}"


def _priced(at: Mapping[str, Any]) -> str:
    """Energy, dollars and CO2 at the target's FLOPs by the fitted cost laws ('' when the table has none)."""
    parts = [_amount(at["energy_kwh"]["value"], "kWh", "Wh")] if at.get("energy_kwh") else []
    parts += [_money(at["cost_usd"]["value"])] if at.get("cost_usd") else []
    parts += [_amount(at["co2_kg"]["value"], "kg", "g", " CO2")] if at.get("co2_kg") else []
    return _join(parts) if parts else ""


def _device_time(flops: float, throughput: dict | None, hardware: str | None, ext: dict) -> str:
    """How long ``flops`` would train: on the runs' own hardware at their median throughput, and on one GPU."""
    gpu = ext["assumptions"]
    on_gpu = (f"{duration(flops / (gpu['peak_tflops'] * 1e12 * gpu['utilization']))} on one {gpu['gpu'].upper()} at "
              f"{gpu['utilization']:.0%} utilisation")
    if throughput is None:
        return on_gpu
    own = f"one GPU like the runs' ({hardware})" if throughput["basis"] == "GPU" and hardware else \
        "one GPU like the runs'" if throughput["basis"] == "GPU" else \
        f"the runs' own hardware ({hardware})" if hardware else "the runs' own hardware"
    return (f"{duration(flops / throughput['flops_per_s'])} on {own} at their median training throughput "
            f"({_g(throughput['flops_per_s'], 2)} FLOP/s), or {on_gpu}")


def _unreachable(ext: dict, name: str, unit: str) -> str:
    """Why ``name``'s law never reaches the target, in words."""
    if name == "saturating_law":
        return f"it levels off at {_acc(ext[name]['ceiling'], unit)}"
    return "it does not grow with compute"


def _law_words(name: str) -> str:
    return name.replace("_", " ")


def _target(ext: dict | None, fit: Mapping[str, Any], frame: pd.DataFrame, unit: str, metric: str,
            throughput: dict | None, hardware: str | None) -> dict[str, Any]:
    """Question 3: what the headline target would take under the law that extrapolates better (under the other one,
    said so, when the better one never reaches it)."""
    if ext is None:
        return {"text": "The best run is already at the top of the accuracy scale: there is no target above it to "
                        "price.", "line": "no target above the best run", "flops": None}
    name = fit["holdout"].get("better") or "power_law"
    other = "power_law" if name == "saturating_law" else "saturating_law"
    why = "the better extrapolator here" if fit["holdout"].get("better") else "the paper's law"
    short = _acc(ext["target"], unit)
    target = f"{short} {_metric_name(metric)} (best run {_acc(ext['observed_best'], unit)})"
    lead = line_lead = ""
    if not ext[name]["reachable"]:
        lead = f"{target[0].upper()}{target[1:]} is out of reach under the {_law_words(name)} ({why}): " \
               f"{_unreachable(ext, name, unit)}. "
        line_lead = f"{short}: out of reach under the {_law_words(name)} ({_unreachable(ext, name, unit)}); "
        if not ext[other]["reachable"]:
            return {"text": lead + f"Nor does the {_law_words(other)} reach it.", "flops": None,
                    "line": line_lead.rstrip("; "), "target": ext["target"], "law": None}
        name, why, target = other, "the other law", short
    at, flops = ext[name], ext[name]["train_flops"]
    largest = float(pd.to_numeric(frame["train_flops"], errors="coerce").max())
    priced, beyond = _priced(at), flops > largest
    text = (lead + f"{'The ' + _law_words(name) + ' puts' if lead else 'Reaching'} {target} "
            f"{'at' if lead else 'would take'} {_g(flops)} training FLOPs ({_span(at['interval'])})"
            + ("" if lead else f" by the {_law_words(name)} ({why})") + ": "
            + (f"{priced} by the fitted cost laws; " if priced else "")
            + f"{_device_time(flops, throughput, hardware, ext)}.")
    if beyond:
        text += (f" Warning: this extrapolates beyond the data, to {_g(flops / largest, 2)}× the largest run's FLOPs "
                 f"({_g(largest)}).")
    line = (line_lead + f"{short} would take {_g(flops)} FLOPs ({_span(at['interval'])})"
            + (f" under the {_law_words(name)}" if line_lead else "")
            + (f", {priced}" if priced else "")
            + (f", {duration(flops / throughput['flops_per_s'])} on the runs' hardware" if throughput else "")
            + (f" (extrapolated {_g(flops / largest, 2)}× past the largest run)" if beyond else ""))
    return {"text": text, "line": line, "flops": flops, "interval": at["interval"], "target": ext["target"],
            "law": name, "beyond_data": beyond}


def answers(content: Mapping[str, Any], frame: pd.DataFrame, *, hardware: str | None = None) -> dict[str, dict]:
    """The three answers for a report's ``content`` and the usable runs ``frame`` it was fitted on.

    Returns:
        ``{"drivers" | "compute" | "target": {"question", "text", "line", ...numbers}}``: ``text`` is the report's
        sentence(s), ``line`` the one-line form the demo prints.
    """
    fit, metric, unit = content["fit"], content["metric"], content["units"]["accuracy"]
    predictor = content["predictor"]
    caveats = confounds(frame, predictor.get("dropped_features"))
    throughput = runs_throughput(frame)
    result = {
        "drivers": _drivers(predictor, metric, caveats),
        "compute": _compute(fit, metric, unit),
        "target": _target(headline_extrapolation(content["extrapolations"]), fit, frame, unit, metric, throughput,
                          hardware),
    }
    result["drivers"]["confounds"] = caveats
    result["target"]["throughput"] = throughput
    return {key: {"question": QUESTIONS[key], **value} for key, value in result.items()}
