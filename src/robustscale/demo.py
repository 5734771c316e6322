"""The whole study in miniature: synthetic data, a sweep of the paper's knobs, the results table, the scaling laws
with intervals, the predictor and the HTML report, on the embedded digits and a laptop CPU.

Every step is the real one (``robustscale synth``, ``sweep``, ``results``, ``report``), so the demo resumes like
any sweep: run it again after an interruption and only the unfinished runs train.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console

from robustscale.analysis import build_report
from robustscale.data.generate import synthesize
from robustscale.errors import ParameterError, UserError
from robustscale.store.atomic import write_text
from robustscale.store.results import results_table
from robustscale.sweep import sweep
from robustscale.sweep.executors import available_cores

BUDGETS = {"small": "demo.yaml", "medium": "demo-medium.yaml"}
SPEC_SYNTHETIC = "runs/demo/synthetic.npz"  # the placeholder the demo specs use for the synthetic set
SYNTHETIC_N = 20000
# The GMM, not the diffusion model (`synth`'s default): on the demo's synthetic recipe the diffusion samples beat the
# GMM's but not real-only data by a margin the seeds can resolve (+0.034 AutoAttack, 95% CI -0.010..0.078, 4 seeds),
# and the draw (3.6 CPU-minutes: training and 20,000 samples) would leave no margin in the demo's 7-minute budget.
# BENCHMARKS.md, "Synthetic digits".
SYNTHETIC_METHOD = "gmm"


def spec_path(budget: str) -> Path:
    """The shipped demo spec for ``budget`` (configs/ lives in the checkout: install with ``pip install -e .``)."""
    if budget not in BUDGETS:
        raise ParameterError(f"budget must be one of {', '.join(BUDGETS)}, got '{budget}'", "budget")
    path = Path(__file__).resolve().parents[2] / "configs" / "sweeps" / BUDGETS[budget]
    if not path.is_file():
        raise UserError(f"demo spec '{path}' not found: run the demo from a robustscale checkout installed with "
                        "`pip install -e .`")
    return path


def _resolved_spec(src: Path, out: Path) -> Path:
    """The demo spec with its base made absolute and the synthetic placeholder pointing into ``out``."""
    spec = yaml.safe_load(src.read_text())
    spec["base"] = str((src.parent / spec["base"]).resolve())
    spec["out"] = str(out / "runs")
    text = yaml.safe_dump(spec, sort_keys=False).replace(SPEC_SYNTHETIC, str(out / "synthetic.npz"))
    return write_text(out / "spec.yaml", f"# resolved from {src}\n{text}")


def _say(progress: bool, message: str) -> None:
    if progress:
        Console(stderr=True, soft_wrap=True).print(f"[bold cyan]demo[/] {message}")


def default_out(budget: str) -> Path:
    """``runs/demo`` for the small budget, ``runs/demo-<budget>`` otherwise: two budgets never share a folder."""
    return Path("runs/demo" if budget == "small" else f"runs/demo-{budget}")


def run_demo(out: str | Path | None = None, budget: str = "small", workers: int | None = None,
             progress: bool = True, *, spec: str | Path | None = None, synthetic_n: int = SYNTHETIC_N,
             bootstrap: int = 500, metric: str = "autoattack_acc") -> dict[str, Any]:
    """Run the miniature study into ``out`` and return its headline numbers and paths.

    ``spec`` replaces the shipped spec of ``budget`` and ``metric`` the analysed accuracy (tests run a handful of
    tiny runs through the same path without AutoAttack, which has tests of its own).
    """
    t0 = time.perf_counter()
    spec = Path(spec) if spec is not None else spec_path(budget)
    out = Path(out if out is not None else default_out(budget)).resolve()
    out.mkdir(parents=True, exist_ok=True)
    synthetic = out / "synthetic.npz"
    if not synthetic.exists():
        _say(progress, f"1/4 drawing {synthetic_n} synthetic digits from a density model of the training split")
        synthesize("digits", synthetic_n, synthetic, method=SYNTHETIC_METHOD)
    spec = _resolved_spec(spec, out)
    workers = workers or available_cores()
    _say(progress, f"2/4 sweeping {spec} with {workers} workers (rerun to resume)")
    summary = sweep(spec, executor="local", workers=workers, progress=progress)
    if summary.get("failed"):
        reasons = "; ".join(f"{k}: {v}" for k, v in list(summary.get("reasons", {}).items())[:3])
        raise UserError(f"{len(summary['failed'])} demo run(s) failed ({reasons}); rerun with --retry-failed "
                        "after fixing the cause")
    _say(progress, "3/4 results table")
    table = results_table(out / "runs")
    table = table[table["run_id"].isin(summary["done"])]  # this spec's runs only, whatever else the folder holds
    write_text(out / "results.csv", table.to_csv(index=False))
    _say(progress, "4/4 scaling laws, predictor and report")
    report = build_report(table, out / "report.html", bootstrap=bootstrap, metric=metric)
    return _headline(report, summary, out, time.perf_counter() - t0)


def _headline(report: dict[str, Any], summary: dict[str, Any], out: Path, seconds: float) -> dict[str, Any]:
    law = (report.get("fit") or {}).get("accuracy_law") or {}
    predictor = report.get("predictor") or {}
    impurity = (predictor.get("importance") or {}).get("impurity") or {}
    top = max(impurity, key=impurity.get) if impurity else None
    return {"report": str(out / "report.html"), "results": str(out / "results.csv"),
            "runs_done": len(summary.get("done", [])), "runs_trained": len(summary.get("trained", [])),
            "alpha": law.get("alpha"), "alpha_ci": (law.get("ci") or {}).get("alpha"), "r2_law": law.get("r2"),
            "predictor_r2": predictor.get("r2"), "top_feature": top, "seconds": seconds}
