"""``sweep --adaptive``: a live digits sweep chosen in rounds, interrupted and resumed on the same plan; the results
table marks the rounds; bad flags and folders are one-line errors with exit status 2."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import yaml

import robustscale.sweep.worker as worker
from robustscale.cli import main
from robustscale.store.adaptive_plan import PLAN, AdaptivePlan, PlanRound, plan_lock, read_plan, write_plan
from robustscale.store.record import read_record
from robustscale.store.results import results_table
from robustscale.sweep.adaptive import adaptive_sweep, grid_candidates
from robustscale.sweep.run import ATTEMPTS
from robustscale.sweep.spec import load_spec

# two steps of training, no AutoAttack, a small validation set: about two seconds a run on one core
TINY = {"train.epochs": 1, "train.max_steps": 2, "eval.pgd_steps": 2, "eval.autoattack": "none", "data.val_size": 50,
        "attack.step_size": None, "data.batch_size": 32}
JSON_KEYS = {"rounds", "runs_trained", "chosen", "spent_flops", "spent_gpu_hours", "compute_frac", "alpha", "alpha_ci",
             "stop_reason", "strategy", "seed", "metric", "candidates", "grid_flops"}
ROUND_KEYS = {"round", "run_ids", "replayed", "trained", "spent_flops", "spent_gpu_hours", "alpha", "alpha_ci",
              "ci_width", "law_points", "compute_frac"}


def write_spec(tmp_path, digits_yaml, axes=None):
    """A grid of 8 tiny digits runs over the three axes a strategy learns from (size, loss, attack steps)."""
    path = tmp_path / "spec.yaml"
    axes = axes or {"model.name": ["wrn_10_1", "wrn_16_1"], "train.loss": ["at", "trades"], "attack.steps": [1, 2]}
    path.write_text(yaml.safe_dump({"base": str(digits_yaml), "axes": axes, "overrides": TINY}))
    return path


@pytest.fixture
def spec(tmp_path, digits_yaml):
    return write_spec(tmp_path, digits_yaml)


def attempts(run_dir) -> int:
    path = run_dir / ATTEMPTS
    return len(path.read_text().splitlines()) if path.exists() else 0


def interrupt_mid_round(monkeypatch, out) -> list:
    """Stop the sweep as a kill would (KeyboardInterrupt is no run failure) when it starts the second run of a round
    after the first: that round then holds a done run and one that never finished."""
    real, started = worker.train, []

    def train(cfg, run_dir, **kwargs):
        started.append(run_dir.name)
        where = next(r for r in read_plan(out).rounds if run_dir.name in r.run_ids)
        if where.round > 1 and where.run_ids.index(run_dir.name) == 1:
            raise KeyboardInterrupt
        return real(cfg, run_dir, **kwargs)

    monkeypatch.setattr(worker, "train", train)
    return started


@pytest.mark.slow
def test_interrupted_adaptive_sweep_resumes_the_recorded_plan(tmp_path, spec, monkeypatch, capsys, one_torch_thread):
    out = tmp_path / "out"
    grid = grid_candidates(load_spec(spec), out)
    budget = 0.7 * sum(c.planned_flops for c in grid.values())  # leaves a round of two runs (one to interrupt)
    started = interrupt_mid_round(monkeypatch, out)
    with pytest.raises(KeyboardInterrupt):
        adaptive_sweep(spec, out, budget_flops=budget, metric="clean_acc", round_size=2)
    plan = read_plan(out)
    *before, last = plan.rounds
    assert len(last.run_ids) == 2 and all(r.ended for r in before) and not last.ended
    assert started == plan.chosen_ids()
    assert [read_record(out / rid).status.value for rid in plan.chosen_ids()] == ["done"] * (len(started) - 1) + [
        "pending"]
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == sorted(started)  # nothing else trained

    monkeypatch.undo()
    assert main(["sweep", str(spec), "--out", str(out), "--adaptive", "--budget-flops", str(budget), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert JSON_KEYS <= set(summary) and all(ROUND_KEYS <= set(r) for r in summary["rounds"])
    rounds, n = summary["rounds"], len(plan.rounds)
    # the interrupted round is finished with its recorded runs, although the strategy, asked again now, could not
    # choose the run of it that is already done
    assert [r["run_ids"] for r in rounds[:n]] == [r.run_ids for r in plan.rounds]
    assert [r["replayed"] for r in rounds] == [True] * n + [False] * (len(rounds) - n)
    assert [r["trained"] for r in rounds[:n]] == [[]] * (n - 1) + [[last.run_ids[1]]]
    assert summary["runs_trained"][0] == last.run_ids[1]
    assert summary["metric"] == "clean_acc"  # kept from the plan, not re-chosen
    assert summary["stop_reason"] in ("budget", "grid_exhausted")
    assert summary["spent_flops"] <= budget and 4 <= len(summary["chosen"]) < len(grid)
    assert [r["spent_flops"] for r in rounds] == sorted(r["spent_flops"] for r in rounds)
    assert all(attempts(out / rid) == 1 for rid in started[:-1])  # done runs were not trained again
    assert attempts(out / started[-1]) == 2  # the interrupted run: its attempt, then the resumed one
    unchosen = set(grid) - set(summary["chosen"])
    assert unchosen and not any((out / rid).exists() for rid in unchosen)  # runs not chosen are not trained

    table = results_table(out)
    assert sorted(table["run_id"]) == sorted(summary["chosen"])
    by_run = dict(zip(table["run_id"], table["adaptive_round"]))
    assert {rid: by_run[rid] for rid in started} == {rid: r.round for r in plan.rounds for rid in r.run_ids}
    assert sorted(set(by_run.values())) == [r["round"] for r in rounds]
    assert set(table["adaptive_strategy"]) == {"envelope"}
    assert main(["results", str(out)]) == 0
    assert "adaptive_round" in capsys.readouterr().out

    assert main(["sweep", str(spec), "--out", str(out), "--adaptive", "--budget-flops", str(budget), "--json"]) == 0
    again = json.loads(capsys.readouterr().out)  # a third call: the same plan, nothing to train
    assert again["runs_trained"] == [] and again["chosen"] == summary["chosen"]
    assert [r["alpha"] for r in again["rounds"]] == [r["alpha"] for r in rounds]  # the law per round, refitted alike


@pytest.mark.slow
def test_target_ci_and_gpu_hour_budget_stop_the_sweep(tmp_path, spec, capsys, one_torch_thread):
    wide = adaptive_sweep(spec, tmp_path / "ci", target_ci=100.0, metric="clean_acc", round_size=2, settle_runs=0)
    assert wide["stop_reason"] == "target_ci" and wide["pinned"] and wide["not_pinned"] == []
    narrow = [r["ci_width"] is not None and r["ci_width"] < 100.0 for r in wide["rounds"]]
    assert narrow[-1] and wide["rounds"][-1]["pinned"]
    # it stopped at the first round both pinned and narrow enough; a narrow interval alone did not stop it
    assert not any(r["pinned"] for r in wide["rounds"][:-1]) and any(narrow[:-1])
    assert all(r["not_pinned"] for r in wide["rounds"][:-1])
    settled = adaptive_sweep(spec, tmp_path / "settled", target_ci=100.0, metric="clean_acc", round_size=2,
                             settle_runs=2)  # the same rounds, and one more, whose law must stay pinned
    assert [r["run_ids"] for r in settled["rounds"][:len(wide["rounds"])]] == [r["run_ids"] for r in wide["rounds"]]
    assert len(settled["rounds"]) == len(wide["rounds"]) + 1 and settled["stop_reason"] == "target_ci"
    assert settled["rounds"][-1]["pinned"] and settled["rounds"][-1]["ci_width"] < 100.0

    hours = tmp_path / "hours"  # the text output; one worker, so rounds of one run
    assert main(["sweep", str(spec), "--out", str(hours), "--adaptive", "--budget-gpu-hours", "1e-9"]) == 0
    printed = capsys.readouterr()
    assert "round 1: 1 run (1 trained)" in printed.err and "round 2" not in printed.err  # never held back: the first
    assert "1 round, 1 of 8 runs chosen" in printed.out and "stopped: budget" in printed.out
    assert read_plan(hours).metric == "pgd40_acc"  # the runs skip AutoAttack


ERRORS = [
    (["--adaptive"], ["stopping rule", "--budget-flops", "--target-ci"]),
    (["--budget-flops", "1e9"], ["--budget-flops", "--adaptive"]),
    (["--adaptive", "--budget-flops", "-1"], ["--budget-flops", "positive"]),
    (["--adaptive", "--budget-flops", "nan"], ["--budget-flops", "positive"]),
    (["--adaptive", "--target-ci", "0"], ["--target-ci", "positive"]),
    (["--adaptive", "--budget-gpu-hours", "inf"], ["--budget-gpu-hours", "positive"]),
    (["--adaptive", "--budget-flops", "1e9", "--strategy", "best"], ["--strategy", "best", "envelope"]),
    (["--adaptive", "--budget-flops", "1e9", "--metric", "adv_loss"], ["--metric", "pgd40_acc"]),
    (["--adaptive", "--budget-flops", "1e9", "--seed", "-1"], ["--seed", "non-negative"]),
    (["--adaptive", "--budget-flops", "1e9", "--dry-run"], ["--dry-run", "--adaptive"]),
    (["--adaptive", "--budget-flops", "1e9", "--no-wait"], ["--no-wait"]),
]


@pytest.mark.parametrize("args, words", ERRORS)
def test_bad_adaptive_flags_are_one_line_errors(tmp_path, spec, capsys, assert_one_line, args, words):
    out = tmp_path / "out"
    assert main(["sweep", str(spec), "--out", str(out), *args]) == 2
    message = assert_one_line(capsys.readouterr().err)
    assert all(w in message for w in words), message
    assert not out.exists()  # checked before anything is written


@pytest.fixture
def small_spec(tmp_path, digits_yaml):
    """One model (its FLOPs counted once): the folder checks below train nothing."""
    return write_spec(tmp_path, digits_yaml, {"train.loss": ["at", "trades"]})


def planned(out, spec, **changes) -> AdaptivePlan:
    grid = grid_candidates(load_spec(spec), out)
    plan = AdaptivePlan("envelope", 0, "pgd40_acc", 19, rounds=[PlanRound(1, [next(iter(grid))])])
    for key, value in changes.items():
        setattr(plan, key, value)
    out.mkdir(parents=True, exist_ok=True)
    write_plan(out, plan)
    return plan


@pytest.mark.parametrize("changes, args, words", [
    ({"strategy": "random"}, ["--strategy", "envelope"], ["--strategy envelope", "random", "new --out"]),
    ({"seed": 3}, ["--seed", "4"], ["--seed 4", "seed 3"]),
    ({"rounds": [PlanRound(1, ["digits-gone-s0-0000000000"])]}, [], ["digits-gone-s0-0000000000", "spec"]),
])
def test_a_folder_planned_otherwise_is_refused(tmp_path, small_spec, capsys, assert_one_line, changes, args, words):
    out = tmp_path / "out"
    before = planned(out, small_spec, **changes).to_dict()
    argv = ["sweep", str(small_spec), "--out", str(out), "--adaptive", "--budget-flops", "1e12", *args]
    assert main(argv) == 2
    message = assert_one_line(capsys.readouterr().err)
    assert all(w in message for w in words), message
    assert read_plan(out).to_dict() == before and not any(p.is_dir() for p in out.iterdir())


def test_a_damaged_plan_or_a_second_planner_is_refused(tmp_path, small_spec, capsys, assert_one_line):
    out = tmp_path / "out"
    argv = ["sweep", str(small_spec), "--out", str(out), "--adaptive", "--budget-flops", "1e12"]
    planned(out, small_spec)
    with plan_lock(out):  # another adaptive sweep on the folder
        assert main(argv) == 2
    assert "another adaptive sweep" in assert_one_line(capsys.readouterr().err)
    (out / PLAN).write_text('{"schema": 1, "strategy": "envelope", "rounds": "no"}')
    assert main(argv) == 2
    assert "damaged" in assert_one_line(capsys.readouterr().err)


def test_results_mark_the_runs_each_round_chose(tmp_path, small_spec, caplog):
    """Two run folders, one chosen in round 1: only that one carries a round; a damaged plan costs the columns."""
    out = tmp_path / "out"
    grid = grid_candidates(load_spec(small_spec), out)
    (chosen, _), (other, _) = list(grid.items())
    for rid in (chosen, other):
        (out / rid).mkdir(parents=True)
        (out / rid / "record.json").write_text(json.dumps({"schema": 2, "run_id": rid, "status": "pending",
                                                           "config": grid[rid].config}))
    write_plan(out, AdaptivePlan("random", 0, "pgd40_acc", 19, rounds=[PlanRound(1, [chosen])]))
    table = results_table(out).set_index("run_id")
    assert table.at[chosen, "adaptive_round"] == 1 and table.at[chosen, "adaptive_strategy"] == "random"
    assert pd.isna(table.at[other, "adaptive_round"]) and pd.isna(table.at[other, "adaptive_strategy"])
    (out / PLAN).write_text("{")
    assert "adaptive_round" not in results_table(out) and "damaged" in caplog.text


def test_the_plan_file_reads_back_as_written(tmp_path):
    plan = AdaptivePlan("crude", 2, "autoattack_acc", 11, spec="s.yaml",
                        rounds=[PlanRound(1, ["a", "b"], planned_flops=3.0, alpha=0.1, alpha_ci=[0.0, 0.2]),
                                PlanRound(2, ["c"])])
    write_plan(tmp_path, plan)
    assert read_plan(tmp_path) == plan and read_plan(tmp_path / "none") is None
    assert plan.chosen_ids() == ["a", "b", "c"]
    assert not [p for p in tmp_path.iterdir() if p.name != PLAN]  # no temp file left behind


def _plan_edits():
    """``(id, edit of the plan's JSON, the key the one line names)``: issue 34 item 6 and its "also"."""
    def dup(p):
        p["rounds"].append({"round": 2, "run_ids": list(p["rounds"][0]["run_ids"])})

    return [
        ("seed -1", lambda p: p.update(seed=-1), "seed"), ("seed x", lambda p: p.update(seed="x"), "seed"),
        ("seed true", lambda p: p.update(seed=True), "seed"),
        ("bins x", lambda p: p.update(bins="x"), "bins"), ("bins -5", lambda p: p.update(bins=-5), "bins"),
        ("bins 2.5", lambda p: p.update(bins=2.5), "bins"), ("bins 1e9", lambda p: p.update(bins=10**9), "bins"),
        ("strategy evil", lambda p: p.update(strategy="evil"), "strategy"),
        ("metric", lambda p: p.update(metric="adv_loss"), "metric"),
        ("run twice", dup, "rounds[1].run_ids[0]"),
        ("flops word", lambda p: p["rounds"][0].update(spent_flops="lots"), "rounds[0].spent_flops"),
        ("alpha inf", lambda p: p["rounds"][0].update(alpha=float("inf")), "rounds[0].alpha"),
        ("ci short", lambda p: p["rounds"][0].update(alpha_ci=[0.1]), "rounds[0].alpha_ci"),
        ("round key", lambda p: p["rounds"][0].update(evil=1), "rounds[0].evil"),
        ("round id", lambda p: p["rounds"][0].update(run_ids=[7]), "rounds[0].run_ids[0]"),
        ("rounds", lambda p: p.update(rounds={"a": 1}), "rounds"),
    ]


@pytest.mark.parametrize("edit, key", [e[1:] for e in _plan_edits()], ids=[e[0] for e in _plan_edits()])
def test_a_bad_plan_value_is_one_line_naming_the_file_and_key(tmp_path, small_spec, capsys, assert_one_line, edit,
                                                              key):
    """Seed -1 or "x" and bins "x", -5 or 2.5 were numpy tracebacks; a strategy "evil" was blamed on a --strategy
    flag never passed; an unknown metric gave "no law yet" forever; a run listed twice was counted twice ("116% of
    the grid"). Each is now one line naming adaptive_plan.json and the key, before anything is trained."""
    out = tmp_path / "out"
    plan = planned(out, small_spec).to_dict()
    edit(plan)
    (out / PLAN).write_text(json.dumps(plan))
    argv = ["sweep", str(small_spec), "--out", str(out), "--adaptive", "--budget-flops", "1e12"]
    assert main(argv) == 2
    message = assert_one_line(capsys.readouterr().err)
    assert str(out / PLAN) in message and f"key '{key}'" in message, message
    assert "--strategy" not in message and "--seed" not in message and "--metric" not in message
    assert not any(p.is_dir() for p in out.iterdir())  # nothing trained


def test_a_deeply_nested_plan_is_one_line_in_sweep_results_and_report(tmp_path, small_spec, capsys,
                                                                      assert_one_line):
    """A plan nested 100,000 levels deep was a RecursionError in `results`, `report` and `sweep --adaptive`."""
    out = tmp_path / "out"
    rid = planned(out, small_spec).rounds[0].run_ids[0]
    (out / rid).mkdir()
    (out / rid / "record.json").write_text(json.dumps({"schema": 2, "run_id": rid, "status": "pending"}))
    (out / PLAN).write_text("[" * 100_000 + "]" * 100_000)
    assert main(["sweep", str(small_spec), "--out", str(out), "--adaptive", "--budget-flops", "1e12"]) == 2
    message = assert_one_line(capsys.readouterr().err)
    assert str(out / PLAN) in message and "deeper than 64" in message
    assert main(["results", str(out)]) == 0  # the plan only adds columns: the table is shown without them
    assert rid in capsys.readouterr().out
    assert main(["report", str(out), "-o", str(tmp_path / "r.html"), "--bootstrap", "0"]) == 2  # no runs: one line
    assert "Recursion" not in assert_one_line(capsys.readouterr().err)


def test_a_valid_plan_reads_back_with_every_field(tmp_path):
    """The checks accept what write_plan writes (every field set, ints where floats are allowed)."""
    plan = AdaptivePlan("envelope", 2**32 - 1, "clean_acc", 1000, spec="s.yaml", stop_reason="budget",
                        rounds=[PlanRound(1, ["a"], chosen="t", planned_flops=3, ended="t", spent_flops=3.0,
                                          spent_gpu_hours=0.0, alpha=-0.1, alpha_ci=[-0.2, 0.0], law_points=3)])
    write_plan(tmp_path, plan)
    assert read_plan(tmp_path, strategies=["envelope"], metrics=["clean_acc"]) == plan
