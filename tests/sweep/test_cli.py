"""The sweep command line: the dry-run plan contract and one-line errors."""

import json

import pytest

from robustscale.accounting.budget import plan
from robustscale.cli import main
from robustscale.sweep import expand_runs, load_spec


def test_dry_run_json_lists_every_run_with_planned_flops(repo_root, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the dry run must write nothing (the demo spec's out is relative)
    spec = repo_root / "configs/sweeps/demo.yaml"
    assert main(["sweep", str(spec), "--dry-run", "--json"]) == 0
    planned = json.loads(capsys.readouterr().out)
    expected = expand_runs(load_spec(spec))
    assert [r["run_id"] for r in planned["runs"]] == [run.run_id for run in expected]
    first_cfg = expected[0].config
    assert planned["runs"][0]["config"]["model"]["name"] == first_cfg.model.name
    assert planned["runs"][0]["planned_flops"] == pytest.approx(plan(first_cfg)["total_flops"])
    assert all(r["planned_flops"] > 0 for r in planned["runs"])
    assert planned["total_planned_flops"] == pytest.approx(sum(r["planned_flops"] for r in planned["runs"]))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("args, words", [
    (["sweep", "no/such/spec.yaml"], ["no/such/spec.yaml"]),
    (["sweep", "SPEC", "--executor", "cloud"], ["cloud", "local"]),
    (["sweep", "SPEC", "--workers", "0"], ["--workers"]),
    (["sweep", "SPEC", "--executor", "slurm"], ["Slurm", "--executor local"]),
    (["results", "no/such/runs"], ["no/such/runs"]),
])
def test_user_errors_are_one_line_with_status_2(tmp_path, digits_yaml, capsys, assert_one_line, monkeypatch, args,
                                                words):
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))  # no sbatch, whatever this machine has (tests/slurm: a real one)
    spec = tmp_path / "spec.yaml"
    spec.write_text(f"base: {digits_yaml}\naxes: {{train.loss: [at]}}\noverrides: {{train.max_steps: 1}}\n")
    args = [str(spec) if a == "SPEC" else a for a in args]
    assert main([*args, "--out", str(tmp_path / "out")] if args[0] == "sweep" else args) == 2
    message = assert_one_line(capsys.readouterr().err)
    assert all(w in message for w in words)
    assert not (tmp_path / "out").exists()  # checked before anything is written
