"""The DDP layout of a sweep's runs without training anything: the spec's ``ddp`` section and its one-line errors,
what it asks of Slurm (submitit's parameters), how one machine is divided between runs, and the GPU-hours and wall
time the dry run and ``budget`` plan with the run's GPU count."""

import json

import pytest
import yaml

from robustscale.cli import main
from robustscale.errors import ConfigError, UserError
from robustscale.store.record import Hardware, RunRecord
from robustscale.sweep import LocalExecutor, SlurmExecutor, load_spec, make_executor
from robustscale.sweep.executors import CPUS_PER_TASK, SIGNAL_DELAY_S, NodeKind, slurm_options
from robustscale.training.distributed import DDPLayout
from robustscale.training.launch import gpu_sets, threads_per_rank


def _spec(tmp_path, digits_yaml, **body):
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump({"base": str(digits_yaml), "axes": {"train.loss": ["at", "trades"]}, **body}))
    return path


def test_the_spec_says_how_many_processes_each_run_trains_on(tmp_path, digits_yaml):
    assert load_spec(_spec(tmp_path, digits_yaml)).ddp == DDPLayout(1, 1)
    layout = load_spec(_spec(tmp_path, digits_yaml, ddp={"nodes": 2, "procs_per_node": 4})).ddp
    assert (layout.nodes, layout.procs_per_node, layout.world_size, layout.distributed) == (2, 4, 8, True)
    assert load_spec(_spec(tmp_path, digits_yaml, ddp={"procs_per_node": 2})).ddp == DDPLayout(1, 2)


@pytest.mark.parametrize("ddp, words", [
    ({"gpus": 4}, ["ddp", "'gpus'", "procs_per_node"]),
    ({"procs_per_node": 0}, ["ddp.procs_per_node", "1 to 4096"]),
    ({"nodes": True}, ["ddp.nodes", "True"]),
    ({"nodes": 1.5}, ["ddp.nodes"]),
    ([1, 4], ["'ddp' must be a mapping"]),
])
def test_a_bad_ddp_section_is_one_line_naming_the_key(tmp_path, digits_yaml, assert_one_line, ddp, words):
    with pytest.raises(ConfigError) as err:
        load_spec(_spec(tmp_path, digits_yaml, ddp=ddp))
    message = assert_one_line(err.value)
    assert "spec.yaml" in message and all(w in message for w in words)


def test_a_ddp_run_on_slurm_is_one_task_per_rank_with_one_gpu_each():
    options = slurm_options({"partition": "gpu", "account": "lab", "time": 720}, DDPLayout(2, 4))
    assert {k: options[k] for k in ("nodes", "tasks_per_node", "gpus_per_node")} == {
        "nodes": 2, "tasks_per_node": 4, "gpus_per_node": 4}
    assert (options["slurm_partition"], options["slurm_account"], options["timeout_min"]) == ("gpu", "lab", 720)
    assert slurm_options({}, None)["gpus_per_node"] == 1  # one process: one GPU, as before DDP
    assert "gpus_per_node" not in slurm_options({"gpus": 0}, DDPLayout(1, 2))  # a CPU cluster: gloo, no gres asked
    assert options["slurm_additional_parameters"] == {"requeue": True}  # whatever the site's JobRequeue says


def test_gpus_and_cpus_asked_follow_the_partitions_nodes():
    cpu_nodes, gpu_nodes = NodeKind(cpus=2, gpus=False), NodeKind(cpus=64, gpus=True)
    assert "gpus_per_node" not in slurm_options({}, DDPLayout(1, 2), cpu_nodes)  # sbatch refuses a gres there
    assert slurm_options({}, DDPLayout(1, 2), cpu_nodes)["cpus_per_task"] == 1  # 2 ranks on a 2-CPU node
    assert slurm_options({}, DDPLayout(1, 4), gpu_nodes)["gpus_per_node"] == 4
    assert slurm_options({}, DDPLayout(1, 4), gpu_nodes)["cpus_per_task"] == CPUS_PER_TASK
    assert slurm_options({"gpus": 2}, DDPLayout(1, 2), cpu_nodes)["gpus_per_node"] == 2  # the spec has the last word
    assert slurm_options({"cpus": 3}, DDPLayout(1, 2), cpu_nodes)["cpus_per_task"] == 3
    # signalled before the time limit: 5 minutes, at most a quarter of the limit (a 1-minute job: 15 s)
    assert slurm_options({"time": 1})["slurm_signal_delay_s"] == 15
    assert slurm_options({})["slurm_signal_delay_s"] == SIGNAL_DELAY_S == 300
    assert slurm_options({"signal_delay_s": 45})["slurm_signal_delay_s"] == 45
    assert slurm_options({"additional_parameters": {"exclusive": True}})["slurm_additional_parameters"] == {
        "requeue": True, "exclusive": True}


@pytest.mark.parametrize("slurm, ddp, words", [
    ({"gpus": 4}, DDPLayout(1, 1), ["gpus 4", "procs_per_node", "4"]),  # 4 GPUs allocated, one trained on
    ({"gpus_per_node": 2}, DDPLayout(1, 4), ["gpus 2", "procs_per_node"]),
    ({"nodes": 2}, DDPLayout(1, 4), ["nodes 2", "ddp"]),
    ({"tasks_per_node": 8}, DDPLayout(1, 4), ["tasks_per_node 8", "ddp"]),
])
def test_slurm_options_that_contradict_the_layout_are_refused(assert_one_line, slurm, ddp, words):
    with pytest.raises(UserError) as err:
        slurm_options(slurm, ddp)
    message = assert_one_line(err.value)
    assert all(w in message for w in words)


def test_submitit_local_executor_refuses_several_nodes_in_one_line(tmp_path, assert_one_line):
    runner = SlurmExecutor(tmp_path, cluster="local", ddp=DDPLayout(2, 1))
    with pytest.raises(UserError) as err:
        runner.run([(tmp_path / "r", {})], retry_failed=False, stale_s=60)
    assert "nodes" in assert_one_line(err.value)
    assert "1 x 2" in SlurmExecutor(tmp_path, cluster="local", ddp=DDPLayout(1, 2)).describe()
    # a run longer than many time limits is requeued as often as it needs (submitit's default gives up after 3)
    assert SlurmExecutor(tmp_path, cluster="local")._executor()._executor.max_num_timeout == 60
    assert SlurmExecutor(tmp_path, cluster="local", max_num_timeout=5)._executor()._executor.max_num_timeout == 5


def test_the_local_executor_runs_on_one_machine_only(tmp_path, assert_one_line):
    with pytest.raises(UserError) as err:
        make_executor("local", ddp=DDPLayout(2, 2))
    assert "slurm" in assert_one_line(err.value)
    # (2 processes, not 4: on a CPU-only machine a run takes at most one process per core, issue 34 item 5)
    assert make_executor("local", workers=2, ddp=DDPLayout(1, 2)).describe() == "local (2 workers, 2 processes per run)"


def test_one_machine_is_divided_between_runs():
    # 8 GPUs, 4 per run: two runs at once on disjoint devices; 3 per run leaves two GPUs idle
    assert gpu_sets(8, 4) == ["0,1,2,3", "4,5,6,7"]
    assert gpu_sets(8, 3) == ["0,1,2", "3,4,5"]
    assert gpu_sets(8, 1) == [str(g) for g in range(8)] and gpu_sets(2, 4) == []
    assert LocalExecutor(workers=8, procs_per_node=4)._at_once(n_tasks=320, n_gpus=8) == 2
    assert LocalExecutor(workers=1, procs_per_node=4)._at_once(n_tasks=320, n_gpus=8) == 1
    assert LocalExecutor(workers=4, procs_per_node=2)._at_once(n_tasks=3, n_gpus=0) == 3  # CPU: as asked
    assert LocalExecutor(workers=6, procs_per_node=1)._at_once(n_tasks=10, n_gpus=2) == 6  # as before DDP
    with pytest.raises(UserError, match="needs 4 GPUs and 2 are visible"):
        LocalExecutor(workers=1, procs_per_node=4)._at_once(n_tasks=1, n_gpus=2)
    # CPU threads per process: cores / (runs at once x processes per run), at least one
    assert threads_per_rank(16, 2, 4) == 2 and threads_per_rank(2, 1, 2) == 1 and threads_per_rank(2, 2, 2) == 1


def test_dry_run_plans_gpu_hours_and_wall_time_with_the_runs_gpu_count(tmp_path, digits_yaml, capsys):
    spec = str(_spec(tmp_path, digits_yaml))
    plans = {}
    for procs in (1, 4):
        assert main(["sweep", spec, "--dry-run", "--json", "--procs-per-node", str(procs), "--gpu", "a100"]) == 0
        plans[procs] = json.loads(capsys.readouterr().out)
    one, four = plans[1], plans[4]
    assert four["gpus_per_run"] == 4 and four["ddp"] == {"nodes": 1, "procs_per_node": 4} and four["gpu"] == "a100"
    run1, run4 = one["runs"][0], four["runs"][0]
    assert run4["gpus"] == 4 and run4["planned_flops"] == run1["planned_flops"]
    assert run4["planned_wall_hours"] == pytest.approx(run1["planned_wall_hours"] / 4)  # time divides ...
    assert run4["planned_gpu_hours"] == pytest.approx(run1["planned_gpu_hours"])  # ... GPU-hours do not
    assert run4["planned_gpu_hours"] == pytest.approx(4 * run4["planned_wall_hours"])
    assert four["total_planned_gpu_hours"] == pytest.approx(sum(r["planned_gpu_hours"] for r in four["runs"]))
    assert main(["sweep", spec, "--dry-run", "--procs-per-node", "4"]) == 0
    text = capsys.readouterr().out
    assert "GPU-hours planned on h100 x 4 per run" in text and " 4 GPUs " in text


def test_budget_takes_the_ddp_layout(digits_yaml, capsys, assert_one_line):
    config = str(digits_yaml)
    assert main(["budget", config, "--nodes", "2", "--procs-per-node", "4", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["gpus"], out["nodes"], out["procs_per_node"]) == (8, 2, 4)
    assert out["gpu_hours"] == pytest.approx(8 * out["wall_hours"])
    assert main(["budget", config, "--gpus", "3", "--procs-per-node", "4"]) == 2
    assert "--gpus 3" in assert_one_line(capsys.readouterr().err)


def test_the_record_says_how_many_ranks_and_nodes_trained_it():
    record = RunRecord("r", {}, hardware=Hardware(gpus=["H100", "H100"], gpu_count=2, world_size=2, nodes=1))
    again = RunRecord.from_dict(json.loads(json.dumps(record.to_dict())))
    assert (again.hardware.world_size, again.hardware.nodes, again.hardware.gpus) == (2, 1, ["H100", "H100"])
    old = record.to_dict()
    del old["hardware"]["world_size"], old["hardware"]["nodes"]  # a record written before DDP sweeps
    assert (RunRecord.from_dict(old).hardware.world_size, RunRecord.from_dict(old).hardware.nodes) == (1, 1)
