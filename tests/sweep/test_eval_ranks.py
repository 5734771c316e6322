"""Evaluation at scale, with real gloo processes: PGD-40 validation and the final AutoAttack split over a run's ranks
give the one-process numbers and FLOPs on the same weights; a rank killed mid-AutoAttack resumes to the same answer;
``robustscale eval`` on 2 processes (local launcher, submitit's local executor) gives the same ``robust_acc``; and
``robustscale eval FOLDER`` fills every run's AutoAttack, claim-safe, and a rerun evaluates nothing."""

import json
import os
import shutil
import signal
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml

from robustscale.attacks import Shard, run_autoattack
from robustscale.cli import main
from robustscale.config import load_config
from robustscale.data import load_data
from robustscale.store.results import results_table
from robustscale.store.rundir import acquire_claim
from robustscale.sweep import sweep
from robustscale.training.distributed import cleanup, init_distributed
from robustscale.training.launch import RankFailed, launch, train_on_ranks
from robustscale.training.loop import train

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("ports")]

REPO = Path(__file__).resolve().parents[2]
# one epoch stopped after 20 steps; the resumes train nothing more (epoch 2 has no step left), so they validate and
# evaluate the very weights the first process trained, at eps 0.05, where some points survive every attack
FIRST = ["model.name=wrn_10_1", "train.epochs=1", "train.max_steps=20", "data.val_size=60", "eval.pgd_steps=3",
         "eval.autoattack=none", "attack.steps=2", "attack.step_size=0.075"]
AGAIN = [*FIRST[:1], "train.epochs=2", *FIRST[2:5], "eval.autoattack=standard", "eval.autoattack_n=20",
         "eval.batch_size=10", "attack.eps=0.05", *FIRST[6:]]
# AutoAttack's two APGD attacks (standard AutoAttack runs in the loop's test above), 3 batches
EVAL = ["--attack", "autoattack", "--attacks", "apgd-ce,apgd-dlr", "--n", "30", "--batch-size", "10", "--eps", "0.05",
        "--json"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A digits run trained on one process (one torch thread: tests/conftest.py), its final evaluation not run yet."""
    run_dir = tmp_path_factory.mktemp("ranks") / "run"
    train(load_config("configs/digits.yaml", FIRST), run_dir, progress=False)
    return run_dir


def _copy(run_dir: Path, to: Path) -> Path:
    shutil.copytree(run_dir, to)
    return to


def test_validation_and_final_autoattack_on_two_ranks_equal_one_process(trained, tmp_path):
    """The same weights resumed on 1 and on 2 processes: the epoch's PGD validation, the final clean accuracy,
    adversarial loss and AutoAttack (per attack) are equal, and so are the evaluation FLOPs in the records."""
    cfg = load_config("configs/digits.yaml", AGAIN)
    one, two = _copy(trained, tmp_path / "one"), _copy(trained, tmp_path / "two")
    train(cfg, one, resume=True, progress=False)
    train_on_ranks(cfg, two, 2, resume=True, progress=False)
    a, b = (json.loads((d / "record.json").read_text()) for d in (one, two))
    assert a["status"] == b["status"] == "done" and b["hardware"]["world_size"] == 2
    rows = [[json.loads(line) for line in (d / "metrics.jsonl").read_text().splitlines()] for d in (one, two)]
    assert rows[0][-1]["val_pgd_acc"] == rows[1][-1]["val_pgd_acc"] and rows[0][-1]["epoch"] == 2
    assert 0 < a["metrics"]["autoattack_acc"] < a["metrics"]["autoattack_clean_acc"]  # some points survive
    assert a["metrics"] == b["metrics"]
    assert a["evaluations"]["autoattack"]["per_attack"] == b["evaluations"]["autoattack"]["per_attack"]
    for key in ("val_flops", "final_eval_flops", "eval_flops", "eval_samples"):
        assert a["accounting"][key] == b["accounting"][key] > 0, key
    assert not list((two / "eval").glob("*.state*.json"))  # every rank's resume state removed with the result


def test_eval_on_two_processes_and_as_a_slurm_job_gives_the_same_robust_acc(trained, tmp_path, capsys):
    """``robustscale eval RUN --attack autoattack ... --procs-per-node 2 --json``, here and through submitit's local
    executor (Slurm's code path: one task per rank), against one process."""
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump({"base": str(REPO / "configs" / "digits.yaml"), "slurm": {"cluster": "local"}}))
    results = {}
    for name, extra in [("one", []), ("local", ["--procs-per-node", "2"]),
                        ("slurm", ["--procs-per-node", "2", "--executor", "slurm", "--spec", str(spec)])]:
        run_dir = _copy(trained, tmp_path / name)
        assert main(["eval", str(run_dir), *EVAL, *extra]) == 0
        results[name] = json.loads(capsys.readouterr().out)
    one = results["one"]
    assert 0 < one["robust_acc"] < one["clean_acc"] and one["ranks"] == 1
    for name in ("local", "slurm"):
        assert results[name]["ranks"] == 2
        for key in ("robust_acc", "clean_acc", "per_attack", "eval_flops", "eval_samples"):
            assert results[name][key] == one[key], (name, key)


# ---------------------------------------------------------------------------------------------- a killed rank

AA = dict(eps=0.1, attacks=["apgd-ce", "apgd-dlr"], n=20, batch_size=5)  # 2 batches per rank


def _mlp() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(192, 64), torch.nn.ReLU(), torch.nn.Linear(64, 10))


class _KilledAfter(torch.nn.Module):
    """A model whose process is killed (SIGKILL, no cleanup) at its ``limit``-th forward."""

    def __init__(self, net, limit):
        super().__init__()
        self.net, self.calls, self.limit = net, 0, limit

    def forward(self, x):
        self.calls += 1
        if self.limit is not None and self.calls >= self.limit:
            os.kill(os.getpid(), signal.SIGKILL)
        return self.net(x)


def autoattack_on_rank(weights, state_dir: str, kill_rank_1_at):
    """One rank of a 2-process AutoAttack with per-rank resume states; rank 1 is killed at its given forward."""
    info = init_distributed()
    try:
        net = _mlp()
        net.load_state_dict(weights)
        model = _KilledAfter(net.eval(), kill_rank_1_at if info.rank == 1 else None)
        x, y = load_data("digits", "test")
        return run_autoattack(model, x, y, state_path=Path(state_dir) / f"aa.state-{info.rank}.json",
                              shard=Shard(info.rank, info.world_size), **AA)
    finally:
        cleanup()


@pytest.fixture(scope="module")
def mlp_weights():
    net = _mlp()
    x, y = load_data("digits", "train")
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _ in range(100):
        opt.zero_grad()
        F.cross_entropy(net(x), y).backward()
        opt.step()
    return net.state_dict()


def test_a_rank_killed_mid_autoattack_resumes_to_the_same_answer(mlp_weights, tmp_path):
    net = _mlp()
    net.load_state_dict(mlp_weights)
    reference = run_autoattack(_KilledAfter(net.eval(), None), *load_data("digits", "test"), **AA)
    assert 0 < reference["robust_acc"] < reference["clean_acc"]
    with pytest.raises(RankFailed, match="rank 1 of 2 was killed by SIGKILL"):
        launch(autoattack_on_rank, (mlp_weights, str(tmp_path), 300), 2, threads=1)
    killed = json.loads((tmp_path / "aa.state-1.json").read_text())
    assert killed["current"] == "apgd-ce" and killed["todo"] and not killed["done"]  # mid-attack, a batch saved
    resumed = launch(autoattack_on_rank, (mlp_weights, str(tmp_path), None), 2, threads=1)
    assert resumed["resumed"]
    assert (resumed["robust_acc"], resumed["per_attack"]) == (reference["robust_acc"], reference["per_attack"])


# ---------------------------------------------------------------------------------------------- a sweep's folder


def test_eval_folder_fills_every_runs_autoattack_claim_safe_and_a_rerun_evaluates_nothing(tmp_path, capsys):
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump({"base": str(REPO / "configs" / "digits.yaml"), "axes": {"train.seed": [0, 1]},
                                    "overrides": {"model.name": "wrn_10_1", "train.epochs": 1, "train.max_steps": 3,
                                                  "eval.pgd_steps": 2, "eval.autoattack": "none",
                                                  "eval.autoattack_n": 10, "data.val_size": 20,
                                                  "attack.steps": 1, "attack.step_size": None}}))
    out = tmp_path / "out"
    assert sorted(sweep(spec, out)["trained"]) == sorted(p.name for p in out.iterdir() if p.is_dir()
                                                         and not p.name.startswith("."))
    first, second = sorted(p for p in out.iterdir() if p.is_dir() and not p.name.startswith("."))
    held = acquire_claim(second)  # another worker is on it
    try:
        assert main(["eval", str(out), "--attack", "autoattack", "--json"]) == 0
    finally:
        held.release()
    summary = json.loads(capsys.readouterr().out)
    assert summary["evaluated"] == [first.name] and summary["busy"] == [second.name] and summary["runs"] == 2
    assert main(["eval", str(out), "--attack", "autoattack"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert any(line.startswith(f"{first.name}: skipped") for line in lines)
    assert any(line.startswith(f"{second.name}: evaluated: robust") for line in lines)
    assert main(["eval", str(out), "--attack", "autoattack", "--json"]) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["evaluated"] == [] and sorted(again["skipped"]) == [first.name, second.name]
    table = results_table(out)
    assert table["autoattack_acc"].notna().all() and len(table) == 2
    for run_dir in (first, second):
        record = json.loads((run_dir / "record.json").read_text())
        assert record["metrics"]["autoattack_acc"] == record["evaluations"]["autoattack"]["robust_acc"]
        assert record["evaluations"]["autoattack"]["n"] == 10  # the run's own eval.autoattack_n
        assert record["accounting"]["final_eval_flops"] > 0 and not (run_dir / "claim.json").exists()


@pytest.mark.parametrize("args, message", [
    (["--nodes", "2"], "--nodes 2: a local evaluation runs on this machine only"),
    (["--executor", "slurm", "--spec", "nowhere.yaml"], "nowhere.yaml"),
])
def test_eval_job_options_that_cannot_work_are_one_line_and_status_2(trained, args, message, capsys, assert_one_line):
    assert main(["eval", str(trained), "--attack", "pgd", *args]) == 2
    assert message in assert_one_line(capsys.readouterr().err)


def test_eval_of_a_folder_without_runs_is_one_line_and_status_2(tmp_path, capsys, assert_one_line):
    assert main(["eval", str(tmp_path)]) == 2
    assert "no runs under" in assert_one_line(capsys.readouterr().err)
