"""A 4-run sweep on the embedded digits through the local executor and through submitit's local executor; rerunning
trains nothing; failed runs keep their reason and are retried only on request; a preempted job resumes."""

import io
import json
import os
import time

import numpy as np
import pytest
import yaml
from rich.console import Console

from robustscale.cli import main
from robustscale.data import save_synthetic
from robustscale.data.synthetic import content_key
from robustscale.errors import UserError
from robustscale.store.record import read_record, record_problems
from robustscale.store.results import results_table
from robustscale.sweep import SweepProgress, sweep
from robustscale.sweep.adaptive import adaptive_sweep
from robustscale.sweep.run import ATTEMPTS, ERROR_LOG

pytestmark = pytest.mark.slow

TINY = {"model.name": "wrn_10_1", "train.epochs": 1, "train.max_steps": 2, "eval.pgd_steps": 2,
        "eval.autoattack": "none", "data.val_size": 50, "attack.steps": 1, "attack.step_size": None,
        "data.batch_size": 32}


def write_spec(tmp_path, digits_yaml, **body):
    body.setdefault("axes", {"model.act_layer": ["relu", "gelu"], "train.loss": ["at", "trades"]})
    body["overrides"] = {**TINY, **body.get("overrides", {})}
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump({"base": str(digits_yaml), **body}))
    return path


def attempts(run_dir):
    path = run_dir / ATTEMPTS
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_local_sweep_then_rerun_trains_nothing(tmp_path, digits_yaml, capsys):
    spec, out = write_spec(tmp_path, digits_yaml), tmp_path / "out"
    assert main(["sweep", str(spec), "--out", str(out), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert len(summary["done"]) == 4 and sorted(summary["trained"]) == sorted(summary["done"])
    assert summary["failed"] == [] and summary["skipped"] == []

    table = results_table(out)
    assert len(table) == 4 and set(table["status"]) == {"done"}
    assert table["train_flops"].gt(0).all() and table["clean_acc"].between(0, 1).all()
    assert set(zip(table["activation"], table["loss"])) == {("relu", "at"), ("relu", "trades"), ("gelu", "at"),
                                                            ("gelu", "trades")}
    for run_dir in (out / rid for rid in summary["done"]):
        assert record_problems(read_record(run_dir)) == [] and len(attempts(run_dir)) == 1
        assert not (run_dir / "claim.json").exists()
    assert main(["results", str(out)]) == 0
    assert capsys.readouterr().out.count(" done ") >= 4

    view = SweepProgress([out / rid for rid in summary["done"]], enabled=False)
    snap = view.snapshot()
    assert (snap["done"], snap["running"], snap["failed"], snap["pending"]) == (4, 0, 0, 0)
    assert snap["train_flops"] == pytest.approx(table["train_flops"].sum())
    console = Console(file=io.StringIO(), width=200)
    console.print(view._render())
    assert "FLOPs" in console.file.getvalue() and "ETA" in console.file.getvalue()

    again = sweep(spec, out)
    assert again["trained"] == [] and sorted(again["skipped"]) == sorted(summary["done"])
    assert all(len(attempts(out / rid)) == 1 for rid in summary["done"])


def test_failed_runs_keep_their_reason_and_are_retried_only_on_request(tmp_path, digits_yaml, capsys):
    spec = write_spec(tmp_path, digits_yaml, axes={"train.loss": ["at"]},
                      overrides={"data.synthetic.path": str(tmp_path / "missing.npz")})
    out = tmp_path / "out"
    main(["sweep", str(spec), "--out", str(out)])  # exits 1 (failed runs) once cli.main returns typer.Exit codes
    assert "missing.npz" in capsys.readouterr().err
    (rid,) = [p.name for p in out.iterdir()]
    record = read_record(out / rid)
    assert record.status == "failed" and "missing.npz" in record.reason
    assert len(record.reason.splitlines()) == 1 and "Traceback" in (out / rid / ERROR_LOG).read_text()
    assert "missing.npz" in results_table(out).loc[0, "reason"]

    assert sweep(spec, out)["trained"] == [] and len(attempts(out / rid)) == 1
    retried = sweep(spec, out, retry_failed=True)
    assert retried["trained"] == [rid] and retried["failed"] == [rid] and len(attempts(out / rid)) == 2


def test_a_done_run_is_not_taken_for_another_file_at_its_synthetic_path(tmp_path, digits_yaml, capsys,
                                                                          assert_one_line):
    """A run's id holds data.synthetic.path, not the file: regenerated in place, the set would leave the done runs
    standing for images they never saw. The sweep and the adaptive sweep stop with one line, training nothing; with
    the first file back, the sweep goes on."""
    rng = np.random.default_rng(0)
    path = save_synthetic(tmp_path / "synthetic.npz", rng.integers(0, 256, (64, 8, 8, 3), dtype=np.uint8),
                          rng.integers(0, 10, 64))
    first = path.read_bytes()
    spec = write_spec(tmp_path, digits_yaml, axes={"train.loss": ["at"]}, overrides={"data.synthetic.path": str(path)})
    out = tmp_path / "out"
    (rid,) = sweep(spec, out)["done"]
    assert read_record(out / rid).synthetic_key == content_key(path) == results_table(out).loc[0, "synthetic_key"]

    save_synthetic(path, rng.integers(0, 256, (64, 8, 8, 3), dtype=np.uint8), rng.integers(0, 10, 64))
    assert main(["sweep", str(spec), "--out", str(out)]) == 2
    line = assert_one_line(capsys.readouterr().err)
    assert f"1 done run(s) in '{out}'" in line and f"data.synthetic.path '{path}'" in line and rid in line
    with pytest.raises(UserError, match="trained on another file"):
        adaptive_sweep(spec, out, budget_flops=1e15)
    assert len(attempts(out / rid)) == 1 and not (out / "adaptive_plan.json").exists()

    path.write_bytes(first)
    again = sweep(spec, out)
    assert again["trained"] == [] and again["skipped"] == [rid]


@pytest.mark.xdist_group("ports")
def test_submitit_local_executor_runs_the_sweep_and_requeues_a_preempted_job(tmp_path, digits_yaml):
    """The Slurm code path (job array, Checkpointable requeue) through submitit's local executor."""
    from submitit.local.local import LocalJobEnvironment

    # a job array of a 1-epoch run and one of 3 epochs, the long one preempted after its first checkpoint
    spec = write_spec(tmp_path, digits_yaml, axes={"train.loss": ["trades"]},
                      zip=[{"train.epochs": 1}, {"train.epochs": 3, "train.max_steps": None, "data.batch_size": 256}],
                      slurm={"cluster": "local", "timeout_min": 10})
    out = tmp_path / "out"
    submitted = sweep(spec, out, executor="slurm", wait=False)
    assert submitted["runs"] == 2 and submitted["done"] == []
    run_dirs = sorted(p for p in out.iterdir() if not p.name.startswith("."))
    victim = next(d for d in run_dirs if read_record(d).config["train"]["epochs"] == 3)
    deadline = time.time() + 240
    while not (victim / "checkpoint.safetensors").exists():
        assert time.time() < deadline, "the long run never checkpointed"
        time.sleep(0.1)
    os.kill(attempts(victim)[0]["pid"], LocalJobEnvironment._usr_sig())  # what Slurm sends before preempting

    while any(read_record(d).status != "done" for d in run_dirs):
        assert time.time() < deadline, "the jobs did not finish"
        time.sleep(0.5)
    assert [t["resume"] for t in attempts(victim)] == [False, True]  # requeued, resumed from its checkpoint
    assert read_record(victim).epochs_run == 3
    for run_dir in run_dirs:
        assert record_problems(read_record(run_dir)) == []
        assert run_dir == victim or len(attempts(run_dir)) == 1
    assert set(results_table(out)["status"]) == {"done"}

    again = sweep(spec, out, executor="slurm")
    assert again["trained"] == [] and len(again["done"]) == 2


def test_progress_off_a_terminal_is_one_line_per_finished_run(tmp_path, capsys):
    """In a CI log or a Slurm output file the live table would be noise: one plain line each time a run ends."""
    from robustscale.config import config_to_dict, load_config
    from robustscale.store.record import Status, new_record, write_record

    config = config_to_dict(load_config("configs/digits.yaml"))
    dirs = [tmp_path / f"r{i}" for i in range(3)]
    for d in dirs:
        d.mkdir()
        write_record(d, new_record(config, Status.running))
    with SweepProgress(dirs, enabled=True, refresh_s=0.01):  # stdout is captured by pytest: not a terminal
        time.sleep(0.5)
        write_record(dirs[0], new_record(config, Status.done))
        time.sleep(0.5)
        write_record(dirs[1], new_record(config, Status.failed))
        time.sleep(0.5)
    lines = capsys.readouterr().err.strip().splitlines()
    assert "0/3 done, 3 running, 0 failed" in lines[0]
    assert any("1/3 done, 2 running, 0 failed" in line for line in lines)
    assert "1/3 done, 1 running, 1 failed" in lines[-1] and "ETA" in lines[-1]
    assert len(lines) == 4  # a line only when a run finished (polled every 0.05 s), and the closing one
