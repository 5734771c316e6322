"""The whole study in miniature: synthetic data, a sweep of the paper's knobs, the results table, the scaling laws
with intervals, the predictor and the HTML report, on the embedded digits and a laptop CPU.

Every step is the real one (``robustscale synth``, ``sweep``, ``results``, ``report``), so the demo resumes like
any sweep: run it again after an interruption and only the unfinished runs train.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
import yaml
from rich.console import Console

from robustscale.analysis import build_report
from robustscale.data.generate import synthesize
from robustscale.errors import ParameterError, UserError
from robustscale.store.atomic import write_text
from robustscale.store.record import Status, read_record
from robustscale.store.results import results_table
from robustscale.sweep import sweep
from robustscale.sweep.executors import available_cores
from robustscale.sweep.spec import expand_runs, load_spec

BUDGETS = {"small": "demo.yaml", "medium": "demo-medium.yaml"}
# What one run of each budget costs on the reference machine (the 2-core AMD EPYC VM of BENCHMARKS.md: core-seconds
# per run, training and evaluation), and how long _probe_s takes there (best of three): the start-up estimate scales
# the one by how much slower this machine runs the other, and by the share of its cores other jobs leave.
RUN_CORE_S = {"small": 30.0, "medium": 95.0}
PROBE_REFERENCE_S = 0.12
ANALYSIS_S = 25.0  # results table, laws with 500 bootstrap draws, predictor and report, on the reference machine
SYNTHETIC_S = 15.0  # drawing the synthetic digits (step 1), when they are not there yet
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


def _probe_s() -> float:
    """Wall seconds of a fixed small-convolution workload like the demo's (forward and input gradient of a 16-channel
    8x8 convolution stack, batch 8, one thread): how fast this machine runs the demo now, load included."""
    generator = torch.Generator().manual_seed(0)
    weights = [torch.randn(16, 16, 3, 3, generator=generator) * 0.1 for _ in range(4)]
    x = torch.rand(8, 16, 8, 8, generator=generator)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        start = time.perf_counter()
        for _ in range(60):
            h = x.clone().requires_grad_()
            out = h
            for w in weights:
                out = F.relu(F.conv2d(out, w, padding=1))
            torch.autograd.grad(out.sum(), h)
        return time.perf_counter() - start
    finally:
        torch.set_num_threads(threads)


def _status(run_dir: Path) -> Status | None:
    record = read_record(run_dir)
    return record.status if record is not None else None


def _plan(spec: Path, out: Path) -> dict[str, Any]:
    """What the sweep will train: run counts (all, already done) and the knobs' values, from the spec itself."""
    runs = expand_runs(load_spec(spec))
    done = sum(1 for run in runs if _status(out / "runs" / run.run_id) is Status.done)
    configs = [run.config for run in runs]

    def values(get: Any) -> str:
        found = {get(c) for c in configs}
        return ", ".join(str(v) for v in sorted(found, key=lambda v: (isinstance(v, str), v if isinstance(v, str)
                                                                       else float(v))))

    return {"n": len(runs), "done": done, "synthetic_ready": (out / "synthetic.npz").exists(),
            "models": values(lambda c: c.model.name),
            "losses": values(lambda c: getattr(c.train.loss, "value", c.train.loss)),
            "steps": values(lambda c: c.attack.steps), "epochs": values(lambda c: c.train.epochs),
            "ema": sum(c.train.ema for c in configs), "synthetic": sum(bool(c.data.synthetic.path) for c in configs),
            "autoattack_n": min(c.eval.autoattack_n for c in configs),
            "autoattack": values(lambda c: getattr(c.eval.autoattack, "value", c.eval.autoattack))}


def expected_s(plan: dict[str, Any], budget: str, workers: int, probe_s: float, load: float = 0.0,
               cores: int = 2) -> float:
    """Seconds the demo should take here: the runs still to train, spread over the workers, plus the analysis, all
    scaled by the probe against the reference machine and by the cores' share other jobs leave (``load``, the load
    average before the demo starts). A rough guide: the sweep's live ETA refines it."""
    todo = plan["n"] - plan["done"]
    share = min(1.0, cores / max(load + min(workers, cores), 1e-9))  # CPU-bound: each process gets its share
    slowdown = max(probe_s / PROBE_REFERENCE_S, 0.2) / share
    per_run = RUN_CORE_S.get(budget, RUN_CORE_S["small"])
    setup = 0.0 if plan.get("synthetic_ready", True) else SYNTHETIC_S
    return slowdown * (per_run * todo / max(min(workers, todo), 1) + ANALYSIS_S + setup)


def _announce(progress: bool, plan: dict[str, Any], budget: str, workers: int) -> None:
    if not progress:
        return
    load, cores = (os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0), available_cores()
    todo = plan["n"] - plan["done"]
    minutes = expected_s(plan, budget, workers, min(_probe_s() for _ in range(3)), load, cores) / 60
    busy = f"; the machine is busy: load average {load:.1f} on {cores} cores" if load > 0.5 * cores else ""
    resumed = f" ({plan['done']} already done: resuming)" if plan["done"] else ""
    _say(progress, f"{plan['n']} adversarial training runs{resumed} on the embedded 8x8 digits: models "
                   f"{plan['models']}; losses {plan['losses']}; attack steps {plan['steps']}; epochs {plan['epochs']} "
                   f"({plan['ema']} runs with EMA, {plan['synthetic']} with synthetic data). Each run is evaluated "
                   f"with PGD-40 and AutoAttack ({plan['autoattack']}, {plan['autoattack_n']} test points); then the "
                   "scaling laws, the robustness predictor and report.html.")
    _say(progress, f"expected: about {max(minutes, 1):.0f} minutes on this machine for {todo} runs with {workers} "
                   f"workers (from a short benchmark of it just now{busy}; the live ETA below refines it)")


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
    _announce(progress, _plan(_resolved_spec(spec, out), out), budget, workers or available_cores())
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
    table.attrs["source"] = str(out / "runs")
    write_text(out / "results.csv", table.to_csv(index=False))
    _say(progress, "4/4 scaling laws, predictor and report")
    report = build_report(table, out / "report.html", bootstrap=bootstrap, metric=metric,
                          name=f"robustscale demo ({budget}, {len(table)} runs)")
    return _headline(report, summary, out, time.perf_counter() - t0)


def _headline(report: dict[str, Any], summary: dict[str, Any], out: Path, seconds: float) -> dict[str, Any]:
    law = (report.get("fit") or {}).get("accuracy_law") or {}
    predictor = report.get("predictor") or {}
    impurity = (predictor.get("importance") or {}).get("impurity") or {}
    top = max(impurity, key=impurity.get) if impurity else None
    return {"report": str(out / "report.html"), "results": str(out / "results.csv"),
            "runs_done": len(summary.get("done", [])), "runs_trained": len(summary.get("trained", [])),
            "alpha": law.get("alpha"), "alpha_ci": (law.get("ci") or {}).get("alpha"), "r2_law": law.get("r2"),
            "predictor_r2": predictor.get("r2"), "top_feature": top, "seconds": seconds,
            "answers": {key: answer["line"] for key, answer in (report.get("answers") or {}).items()}}
