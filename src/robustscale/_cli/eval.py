"""``robustscale eval``: AutoAttack or PGD on a run folder, a checkpoint or a sweep's folder of runs, with the sanity
checks in the result; split over processes here, under torchrun or as Slurm jobs
(:mod:`robustscale.sweep.evaluation`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, List, Optional

import typer

from robustscale.enums import Attack, ExecutorKind, Norm, PGDLoss, Tracker
from robustscale.errors import UserError, shown


def parse_eps(text: Optional[str]) -> Optional[float]:
    """``"8/255"`` or ``"0.03"`` -> float; anything else is a one-line :class:`UserError`."""
    if text is None:
        return None
    from robustscale.config import parse_number

    value = parse_number(text)
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise UserError(f"--eps must be a number or a fraction such as 8/255, got '{shown(text)}'") from None
    if not 0 <= value < float("inf"):
        raise UserError(f"--eps must be a finite non-negative number, got '{shown(text)}'")
    return value


def _rows(res: dict[str, Any]) -> list[tuple[str, str]]:
    rows = [("attack", f"{res['attack']}" + (f" ({res['version']})" if "version" in res else f"-{res['steps']}")),
            ("eps", f"{res['eps']:.6g} ({res['norm']})"), ("points", str(res["n"])),
            ("clean accuracy", f"{res['clean_acc']:.2%}"), ("robust accuracy", f"{res['robust_acc']:.2%}")]
    rows += [(f"  after {name}", f"{acc:.2%}") for name, acc in (res.get("per_attack") or {}).items()]
    rows.append(("seconds", f"{res['seconds']:.1f}"))
    rows += [(f"check {c['name']}", ("ok" if c["ok"] else "FAILED") + f"  {c['detail']}") for c in res["checks"]]
    rows += [("warning", w) for w in res.get("warnings") or []]
    return rows


def _print_table(res: dict[str, Any]) -> None:
    rows = _rows(res)
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        typer.echo(f"{key:<{width}}  {value}")
    for error in res["errors"]:
        typer.echo(f"error: sanity check failed: {error}", err=True)


def eval_cmd(
    path: Path = typer.Argument(..., help="Run folder (its best weights), a .safetensors checkpoint, or a sweep's "
                                "folder of runs (each done run lacking this evaluation is evaluated).",
                                show_default=False),
    attack: Attack = typer.Option(Attack.autoattack, "--attack", help="autoattack or pgd."),
    steps: int = typer.Option(20, "--steps", min=0, help="PGD steps (--attack pgd)."),
    eps: Optional[str] = typer.Option(None, "--eps", help="Radius in pixel units, e.g. 8/255 (default: the run's)."),
    norm: Optional[Norm] = typer.Option(None, "--norm", help="linf or l2 (default: the run's)."),
    n: Optional[int] = typer.Option(None, "--n", min=1, help="Evaluate a seeded subset of N test points (default: "
                                    "the run's eval.autoattack_n; all points when N is at least the test set)."),
    version: str = typer.Option("standard", "--version", help="AutoAttack version: standard, plus or rand."),
    attacks: Optional[str] = typer.Option(None, "--attacks", help="Custom AutoAttack list, e.g. apgd-ce,square."),
    loss: Optional[PGDLoss] = typer.Option(None, "--loss", help="PGD loss: ce or margin (default: the run's)."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", min=1, help="Points per attack batch (default: "
                                             "the run's eval.batch_size)."),
    seed: Optional[int] = typer.Option(None, "--seed", min=0, max=2**32 - 1, help="Seeds the subset and the attacks "
                                       "(default: the run's train.seed)."),
    data_root: Optional[Path] = typer.Option(None, "--data-root", help="Folder holding the test set (default: data). "
                                             "A model file's own data.root is never used."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object on stdout (a folder: the summary)."),
    tracker: Optional[List[Tracker]] = typer.Option(None, "--tracker", help="Log each result to its run's tracker "
                                                    "runs too (repeatable): tensorboard, mlflow or wandb; run "
                                                    "folders only."),
    procs_per_node: Optional[int] = typer.Option(None, "--procs-per-node", min=1, help="Split each evaluation over "
                                                 "this many processes per node, one per GPU (default: --spec's "
                                                 "ddp.procs_per_node, else 1)."),
    nodes: Optional[int] = typer.Option(None, "--nodes", min=1, help="Nodes per evaluation (--executor slurm)."),
    executor: ExecutorKind = typer.Option(ExecutorKind.local, "--executor", help="local or slurm (submitit: one "
                                          "job per run)."),
    spec: Optional[Path] = typer.Option(None, "--spec", help="A sweep spec whose slurm section (partition, account, "
                                        "cluster...) and ddp layout the jobs use."),
    partition: Optional[str] = typer.Option(None, "--partition", help="Slurm partition."),
    account: Optional[str] = typer.Option(None, "--account", help="Slurm account."),
    time_min: Optional[int] = typer.Option(None, "--time-min", help="Slurm time limit per job, minutes (a job that "
                                           "needs longer is requeued and resumes)."),
    stale_after: Optional[float] = typer.Option(None, "--stale-after", help="Seconds without heartbeat after which "
                                                "another worker's claim on a run is taken over (default 600)."),
) -> None:
    """Measure robust accuracy; exits 1 when a sanity check fails. With a run folder the result is also written to
    eval/<attack>-<eps>.json there (and, for AutoAttack at the run's threat model, into a record that has none).
    A folder of runs: every done run lacking the evaluation, a line each; a rerun evaluates nothing.

    Split over P processes: --procs-per-node P here, --executor slurm as jobs, or
    torchrun --nproc_per_node=P -m robustscale eval PATH ... (the same result as one process)."""
    from robustscale.evaluate import EvalRequest, check_trackers
    from robustscale.sweep.evaluation import is_run

    attack_names = tuple(a.strip() for a in attacks.split(",") if a.strip()) if attacks else None
    request = EvalRequest(attack=attack, eps=parse_eps(eps), norm=norm, steps=steps, loss=loss, n=n, version=version,
                          attacks=attack_names, batch_size=batch_size, seed=seed,
                          data_root=str(data_root) if data_root is not None else None)
    if not path.exists():
        raise UserError(f"'{path}' does not exist: pass a run folder, a .safetensors checkpoint or a folder of runs")
    check_trackers(path, tracker or ())
    slurm, layout = _where(spec, nodes, procs_per_node, {"partition": partition, "account": account,
                                                          "time": time_min})
    single = is_run(path)
    outcomes = _run(path, single, request, executor, layout, slurm, stale_after)
    if outcomes is None:  # a rank of torchrun's group other than 0: rank 0 reports
        return
    _track(outcomes, tracker or ())
    if single:
        _report_one(outcomes[0], as_json)
    else:
        _report_folder(path, outcomes, as_json)


def _where(spec: Optional[Path], nodes: Optional[int], procs: Optional[int], options: dict[str, Any]):
    """The Slurm options (--spec's slurm section, then the flags) and the DDP layout (the flags, then --spec's)."""
    from robustscale.training.distributed import DDPLayout

    slurm, layout = {}, DDPLayout(nodes or 1, procs or 1)
    if spec is not None:
        from robustscale.sweep.spec import load_spec

        loaded = load_spec(spec)
        slurm, layout = dict(loaded.slurm), loaded.layout(nodes, procs)
    return {**slurm, **{k: v for k, v in options.items() if v is not None}}, layout


def _run(path: Path, single: bool, request, executor, layout, slurm: dict[str, Any], stale_after: Optional[float]):
    from robustscale.store.rundir import DEFAULT_STALE_S
    from robustscale.sweep.evaluation import evaluate_runs
    from robustscale.training.distributed import is_main_process
    from robustscale.training.launch import RankFailed

    if single:
        paths, folder = [path], path.parent / ".submitit"
    else:
        from robustscale.store.results import find_run_dirs

        paths, folder = find_run_dirs(path), path / ".submitit"
        if not paths:
            raise UserError(f"no runs under '{path}' (no record.json, best.safetensors or last.safetensors): pass a "
                            "run folder, a checkpoint or a sweep's --out folder")
    try:
        outcomes = evaluate_runs(paths, request, only_missing=not single, executor=executor,
                                 procs_per_node=layout.procs_per_node, nodes=layout.nodes, slurm=slurm, folder=folder,
                                 stale_s=stale_after or DEFAULT_STALE_S)
    except RankFailed as err:  # the AutoAttack states the ranks saved resume it on the next call
        typer.echo(f"failed: {err}; run the command again to resume", err=True)
        raise typer.Exit(1) from None
    return outcomes if is_main_process() else None


def _track(outcomes: list[dict[str, Any]], trackers) -> None:
    """Each new result to its run's tracker runs (rank 0, after the evaluation: a tracker never holds it up)."""
    from robustscale.evaluate import track_evaluation

    for o in outcomes if trackers else ():
        if o["action"] in ("evaluated", "recorded") and Path(o["path"]).is_dir():
            track_evaluation(o["path"], trackers, o["result"])


def _report_one(outcome: dict[str, Any], as_json: bool) -> None:
    if outcome["action"] == "busy":
        raise UserError(f"'{outcome['path']}' is held by another worker (training or evaluating it, see its "
                        "claim.json): wait for it, or evaluate a copy of its best.safetensors")
    res = outcome["result"]
    if as_json:
        from robustscale._cli._common import print_json

        print_json(res)
    else:
        _print_table(res)
    if not res["ok"]:
        raise typer.Exit(1)


def _report_folder(folder: Path, outcomes: list[dict[str, Any]], as_json: bool) -> None:
    """A line per run (or the ``--json`` summary); exits 1 when an evaluation failed or failed its checks."""
    from robustscale.sweep.evaluation import ACTIONS

    summary = {"folder": str(folder), "runs": len(outcomes),
               **{action: [o["run_id"] for o in outcomes if o["action"] == action] for action in ACTIONS},
               "reasons": {o["run_id"]: o["reason"] for o in outcomes if o["reason"]},
               "results": {o["run_id"]: {k: o.get(k) for k in ("robust_acc", "clean_acc", "n", "ok", "eval_flops")}
                           for o in outcomes if "result" in o}}
    if as_json:
        from robustscale._cli._common import print_json

        print_json(summary)
    else:
        for o in outcomes:
            typer.echo(f"{o['run_id']}: {_line(o)}")
        typer.echo(f"{folder}: {len(outcomes)} runs, " + ", ".join(f"{len(summary[a])} {a.replace('_', ' ')}"
                                                                  for a in ACTIONS if summary[a]))
    if summary["failed"] or any(o["action"] == "evaluated" and o["ok"] is False for o in outcomes):
        raise typer.Exit(1)


def _line(outcome: dict[str, Any]) -> str:
    action = outcome["action"].replace("_", " ")
    if "result" in outcome:
        res = outcome["result"]
        checks = "" if res.get("ok", True) else " (sanity check FAILED)"
        return f"{action}: robust {res['robust_acc']:.4f}, clean {res['clean_acc']:.4f} on {res['n']} points{checks}"
    return f"{action}" + (f": {outcome['reason']}" if outcome["reason"] else "")


def register(app: typer.Typer) -> None:
    app.command("eval")(eval_cmd)
