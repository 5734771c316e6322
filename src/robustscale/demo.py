"""The whole study in miniature: synthetic data, a sweep of the paper's knobs, the results table, the scaling laws
with intervals, the predictor and the HTML report, on the embedded digits and a laptop CPU.

Every step is the real one (``robustscale synth``, ``sweep``, ``results``, ``report``), so the demo resumes like
any sweep: run it again after an interruption and only the unfinished runs train.
"""

from __future__ import annotations

import os
import resource
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
import yaml
from rich.console import Console

from robustscale.accounting.budget import run_flops_plan
from robustscale.accounting.flops import step_flops_for_config
from robustscale.analysis import build_report
from robustscale.analysis.report import attack_names
from robustscale.config import Config
from robustscale.data.generate import synthesize
from robustscale.enums import AutoAttackVersion
from robustscale.errors import ParameterError, UserError
from robustscale.models import create_model
from robustscale.models.folded import fold_batchnorm
from robustscale.store.atomic import write_json, write_text
from robustscale.store.record import Status, read_record
from robustscale.store.results import results_table
from robustscale.sweep import sweep
from robustscale.sweep.executors import available_cores
from robustscale.sweep.spec import expand_runs, load_spec

BUDGETS = {"small": "demo.yaml", "medium": "demo-medium.yaml"}
# The start-up estimate. A run's core-seconds on the reference machine follow from its planned FLOPs: the dry run's
# training and PGD-validation FLOPs, and for the final evaluation autoattack_n points x one attack step of the model x
# the attack steps AutoAttack spends per point; plus a fixed part per run (setup, checkpoints, clean accuracy, checks).
# The runs are dealt to the workers in the sweep's order, each to the first one free, and the serial steps added. All
# of it scales by this machine's speed, the CPU seconds of _probe_cpu_s against the reference's (CPU time: other
# jobs hardly change it, so the load counts once), and by the share of the cores other jobs leave (_background_load,
# measured as the demo starts).
# Reference and fit: BENCHMARKS.md, "The demo's start-up estimate"; tests/demo_timings.json holds the recorded runs
# the estimate is tested on (benchmarks/demo_timings.py records a demo folder).
PROBE_REFERENCE_CPU_S = 0.095
CORE_S_PER_TRAIN_TFLOP = 19.7
CORE_S_PER_EVAL_TFLOP = 20.3
CORE_S_PER_RUN = 0.3
# attack steps (forward + input gradient, at the evaluation's cost per FLOP) AutoAttack spends per point: all of a
# version's attacks (FAB-T's and Square's thousands of calls on the few points left), or only some of them (the
# demo's APGD-CE + APGD-T)
AA_STEPS_PER_POINT = {"all": 2700.0, "some": 640.0}
# the serial steps, one process: start-up (planning, the probe, the sweep's workers importing torch), step 1, 3-4
SERIAL_S = {"start": 10.0, "synthetic": 0.5, "analysis": 6.0}
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


def _probe_cpu_s() -> float:
    """CPU seconds of the demo's work in miniature, one thread: PGD-AT steps of WRN-10-1 on a channels-last batch of
    64 digits (attack and update), then attack steps through its BatchNorm-folded copy on 8 points, as AutoAttack
    takes them. CPU time, not wall time: how fast this machine runs the demo, whatever other jobs take meanwhile;
    but never more than the wall time, which one thread cannot exceed: on this project's VM, once, in the minutes
    after pip's install, the CPU clock ran ahead of the wall clock (the probe read 0.137 s against 0.095-0.105 before
    and after, and the sweep's two workers 2.5 cores' worth of CPU seconds on 2 cores; BENCHMARKS.md)."""
    generator = torch.Generator().manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model = create_model("wrn_10_1").to(memory_format=torch.channels_last)
        x = torch.rand(64, 3, 8, 8, generator=generator).contiguous(memory_format=torch.channels_last)
        y = torch.randint(0, 10, (64,), generator=generator)
        start, wall = time.process_time(), time.perf_counter()
        for _ in range(4):
            _attack_step(model, x, y)
            F.cross_entropy(model(x), y).backward()
        folded = fold_batchnorm(model.eval())
        for _ in range(30):
            _attack_step(folded, x[:8].contiguous(), y[:8])
        return min(time.process_time() - start, time.perf_counter() - wall)
    finally:
        torch.set_num_threads(threads)


def _attack_step(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> None:
    h = x.clone().requires_grad_()
    torch.autograd.grad(F.cross_entropy(model(h), y), h)


def _status(run_dir: Path) -> Status | None:
    record = read_record(run_dir)
    return record.status if record is not None else None


def _plan(spec: Path, out: Path) -> dict[str, Any]:
    """What the sweep will train: run counts (all, already done), the knobs' values, and the planned FLOPs of the runs
    still to train (in the sweep's order), from the spec itself."""
    runs = expand_runs(load_spec(spec))
    todo = [run for run in runs if _status(out / "runs" / run.run_id) is not Status.done]
    configs = [run.config for run in runs]

    def values(get: Any) -> str:
        found = {get(c) for c in configs}
        return ", ".join(str(v) for v in sorted(found, key=lambda v: (isinstance(v, str), v if isinstance(v, str)
                                                                       else float(v))))

    return {"n": len(runs), "done": len(runs) - len(todo), "synthetic_ready": (out / "synthetic.npz").exists(),
            "models": values(lambda c: c.model.name),
            "losses": values(lambda c: getattr(c.train.loss, "value", c.train.loss)),
            "steps": values(lambda c: c.attack.steps), "epochs": values(lambda c: c.train.epochs),
            "ema": sum(c.train.ema for c in configs), "synthetic": sum(bool(c.data.synthetic.path) for c in configs),
            "autoattack_n": min(c.eval.autoattack_n for c in configs),
            "autoattack": values(_autoattack_words), "flops": [planned_flops(run.config) for run in todo]}


def _autoattack_words(cfg: Config) -> str:
    only = cfg.eval.autoattack_attacks
    return f"{attack_names(only)} of {cfg.eval.autoattack}" if only else str(cfg.eval.autoattack)


def planned_flops(cfg: Config) -> dict[str, Any]:
    """What the start-up estimate prices a run by: its planned training and PGD-validation FLOPs (the dry run's),
    and for its final AutoAttack the FLOPs of one attack step on its points and which of the version's attacks run
    (``all``, ``some``, or ``none``)."""
    step = step_flops_for_config(cfg)
    plan = run_flops_plan(cfg, step)
    attacks = "none" if cfg.eval.autoattack is AutoAttackVersion.none else \
        "some" if cfg.eval.autoattack_attacks else "all"
    return {"train": float(plan["train_flops"]), "eval": float(plan["eval_flops"]),
            "autoattack_step": float(cfg.eval.autoattack_n * step.attack_step), "autoattack": attacks}


def run_core_s(flops: dict[str, Any]) -> float:
    """Core-seconds of one run on the reference machine, from :func:`planned_flops`."""
    autoattack = flops["autoattack_step"] * AA_STEPS_PER_POINT.get(flops["autoattack"], 0.0)
    return CORE_S_PER_RUN + (CORE_S_PER_TRAIN_TFLOP * flops["train"]
                             + CORE_S_PER_EVAL_TFLOP * (flops["eval"] + autoattack)) / 1e12


def _deal(costs: Sequence[float], workers: int) -> float:
    """When the last of ``costs`` ends when each goes, in order, to the first of ``workers`` free (the sweep's pool)."""
    free = [0.0] * max(1, workers)
    for cost in costs:
        free[free.index(min(free))] += cost
    return max(free)


def expected_s(flops: Sequence[dict[str, Any]], workers: int, probe_cpu_s: float, load: float = 0.0,
               cores: int = 2, synthetic_ready: bool = True) -> float:
    """Seconds the demo should take here: the runs still to train (their :func:`planned_flops`, in the sweep's order)
    dealt to the workers, plus the serial steps, scaled by the probe against the reference machine and by the share
    of a core each process gets beside ``load`` (the cores other jobs keep busy as the demo starts). A guide: the
    sweep's live ETA refines it."""
    speed = max(probe_cpu_s / PROBE_REFERENCE_CPU_S, 0.05)
    sweep_share = min(1.0, cores / max(load + min(workers, max(len(flops), 1)), 1e-9))
    serial_share = min(1.0, cores / max(load + 1.0, 1e-9))
    serial = SERIAL_S["start"] + SERIAL_S["analysis"] + (0.0 if synthetic_ready else SERIAL_S["synthetic"])
    return speed * (_deal([run_core_s(f) for f in flops], workers) / sweep_share + serial / serial_share)


def _cpu_ticks() -> tuple[int, int] | None:
    """(busy, all) clock ticks of every CPU since boot, from ``/proc/stat``; None where it cannot be read."""
    try:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:8]]
        user, nice, system, _idle, _iowait, irq, softirq = fields
    except (OSError, ValueError):
        return None
    return user + nice + system + irq + softirq, sum(fields)


def _others_busy_cores(before: tuple[int, int] | None, after: tuple[int, int] | None, own_cpu_s: float,
                       cpus: int | None = None, ticks_per_s: int | None = None) -> float | None:
    """Cores other processes kept busy between two :func:`_cpu_ticks` readings of ``cpus`` CPUs (default: this
    machine's), this process's own CPU seconds taken out; None without both readings."""
    if before is None or after is None or after[1] <= before[1]:
        return None
    ticks_per_cpu = (after[1] - before[1]) / max(cpus or os.cpu_count() or 1, 1)
    others = (after[0] - before[0]) - own_cpu_s * (ticks_per_s or os.sysconf("SC_CLK_TCK"))
    return max(0.0, others / ticks_per_cpu)


def _background_load(probe: Callable[[], float], window_s: float = 1.0) -> tuple[float, float]:
    """The probe's CPU seconds (the best of as many as fit in ``window_s``, at least three) and the cores other jobs
    keep busy meanwhile: what they take now, where the 1-minute load average still carries what just ended (README
    command 1 starts the demo right after pip's install, which left the average near 1 on an idle machine). The load
    average where ``/proc/stat`` is missing. The best of many: on a shared VM one probe took 0.10-0.18 CPU-s from
    one moment to the next, the best of three once 0.139 before a demo whose runs went at the speed of 0.095
    (BENCHMARKS.md, "The demo's start-up estimate")."""
    start, own, before = time.perf_counter(), time.process_time(), _cpu_ticks()
    probes = [probe() for _ in range(3)]
    while time.perf_counter() - start < window_s:
        probes.append(probe())
    probe_cpu_s = min(probes)
    busy = _others_busy_cores(before, _cpu_ticks(), time.process_time() - own)
    if busy is None:
        busy = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    return probe_cpu_s, busy


def _announce(progress: bool, plan: dict[str, Any], workers: int) -> dict[str, Any]:
    """Say what the demo will do and how long it should take here; returns what the estimate was made of."""
    loadavg, cores = (os.getloadavg()[0] if hasattr(os, "getloadavg") else None), available_cores()
    probe, load = _background_load(_probe_cpu_s)
    estimate = expected_s(plan["flops"], workers, probe, load, cores, plan["synthetic_ready"])
    said = {"estimate_s": estimate, "probe_cpu_s": probe, "load_start": load, "loadavg_start": loadavg,
            "cores": cores, "workers": workers}
    if not progress:
        return said
    todo, minutes = plan["n"] - plan["done"], estimate / 60
    busy = f"; the machine is busy: other jobs keep {load:.1f} of {cores} cores busy" if load > 0.5 * cores else ""
    resumed = f" ({plan['done']} already done: resuming)" if plan["done"] else ""
    _say(progress, f"{plan['n']} adversarial training runs{resumed} on the embedded 8x8 digits: models "
                   f"{plan['models']}; losses {plan['losses']}; attack steps {plan['steps']}; epochs {plan['epochs']} "
                   f"({plan['ema']} runs with EMA, {plan['synthetic']} with synthetic data). Each run is evaluated "
                   f"with PGD-40 and AutoAttack ({plan['autoattack']}, {plan['autoattack_n']} test points); then the "
                   "scaling laws, the robustness predictor and report.html.")
    _say(progress, f"expected: about {max(minutes, 1):.0f} minutes on this machine for {todo} runs with {workers} "
                   f"workers (from a short benchmark of it just now{busy}; the live ETA below refines it)")
    return said


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
    clock = _Phases()
    spec = Path(spec) if spec is not None else spec_path(budget)
    out = Path(out if out is not None else default_out(budget)).resolve()
    out.mkdir(parents=True, exist_ok=True)
    workers = workers or available_cores()
    estimate = _announce(progress, _plan(_resolved_spec(spec, out), out), workers)
    synthetic = out / "synthetic.npz"
    clock.mark("start")
    if not synthetic.exists():
        _say(progress, f"1/4 drawing {synthetic_n} synthetic digits from a density model of the training split")
        synthesize("digits", synthetic_n, synthetic, method=SYNTHETIC_METHOD)
    clock.mark("synthetic")
    spec = _resolved_spec(spec, out)
    _say(progress, f"2/4 sweeping {spec} with {workers} workers (rerun to resume)")
    summary = sweep(spec, executor="local", workers=workers, progress=progress)
    clock.mark("sweep")
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
    clock.mark("analysis")
    write_json(out / "timings.json", {**estimate, **clock.summary(), "runs_trained": len(summary["trained"])})
    return _headline(report, summary, out, clock.total_s())


class _Phases:
    """Wall seconds of the demo's steps and the CPU seconds behind them (this process, and the sweep's workers once
    they have ended): ``timings.json`` in the demo's folder, what benchmarks/demo_timings.py records and the start-up
    estimate is checked against."""

    def __init__(self):
        self.t0 = self.last = time.perf_counter()
        self.phases_s: dict[str, float] = {}

    def mark(self, phase: str) -> None:
        now = time.perf_counter()
        self.phases_s[phase], self.last = now - self.last, now

    def total_s(self) -> float:
        return time.perf_counter() - self.t0

    def summary(self) -> dict[str, Any]:
        own, workers = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        return {"wall_s": self.total_s(), "phases_s": self.phases_s,
                "cpu_s": {"demo": own.ru_utime + own.ru_stime, "workers": workers.ru_utime + workers.ru_stime},
                "load_end": list(os.getloadavg()) if hasattr(os, "getloadavg") else None}


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
