"""configs/sweeps/paper.yaml is the grid the paper's code ran (dedeswim/timm-adv-training: scripts/job.sh over
configs/sweep-cifar10.yaml), value by value, as `robustscale sweep --dry-run --json` shows it; and the spec's
conditional ``rules`` that express its per-model batch sizes."""

import json
from collections import Counter
from pathlib import Path

import pytest
import yaml

from robustscale.cli import main
from robustscale.errors import ConfigError
from robustscale.sweep import expand_runs, load_spec

pytestmark = pytest.mark.xdist_group("test_paper_grid")  # module fixtures built once (conftest.py)

# scripts/job.sh (last commit): per-GPU batch by model name, x 4 GPUs (nproc_per_node=4)
PER_GPU = {("wrn_28_10", "relu"): 128, ("wrn_34_10", "relu"): 128, ("wrn_34_20", "relu"): 32,
           ("wrn_70_16", "relu"): 16, ("wrn_28_10", "silu"): 32, ("wrn_34_10", "silu"): 16,
           ("wrn_34_20", "silu"): 16, ("wrn_70_16", "silu"): 16}


def _synthetic_share(per_gpu: int) -> float:
    """src/setup_task.py: int(b * 0.7) synthetic images per GPU, rounded up to even."""
    n = int(per_gpu * 0.7)
    return (n + n % 2) / per_gpu


PAPER_SPEC = Path(__file__).resolve().parents[2] / "configs" / "sweeps" / "paper.yaml"


@pytest.fixture(scope="module")
def plan():
    """The CLI's dry run, once for the module (it counts the FLOPs of 4 architectures x 2 losses on the meta device)."""
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["sweep", str(PAPER_SPEC), "--dry-run", "--json"]) == 0
    return json.loads(out.getvalue())


def test_dry_run_has_the_320_runs_of_the_grid(plan):
    runs = plan["runs"]
    assert len(runs) == 320 and len({r["run_id"] for r in runs}) == 320
    key = Counter((r["config"]["model"]["name"], r["config"]["model"]["act_layer"], r["config"]["train"]["loss"],
                   r["config"]["attack"]["steps"], r["config"]["train"]["ema"],
                   r["config"]["data"]["synthetic"]["path"] is not None) for r in runs)
    assert len(key) == 320 and set(key.values()) == {1}
    assert {k[1] for k in key} == {"relu", "silu"}  # wide_resnetD_W (ReLU) and wide_resnetD_W_dm (Swish)
    assert {k[3] for k in key} == {1, 2, 5, 7, 10}


def test_every_run_carries_the_papers_recipe(plan):
    for run in plan["runs"]:
        c = run["config"]
        d, m, a, t, e = c["data"], c["model"], c["attack"], c["train"], c["eval"]
        assert (t["momentum"], t["nesterov"], t["weight_decay"], t["decay_bn_and_bias"]) == (0.9, False, 5e-4, False)
        assert (t["lr"], t["lr_base_size"]) == (0.1, 256)  # 0.1 per 256 images of global batch
        per_gpu = PER_GPU[(m["name"], m["act_layer"])]
        assert d["batch_size"] == 4 * per_gpu and run["batch_size"] == 4 * per_gpu
        assert run["lr"] == pytest.approx(0.1 * 4 * per_gpu / 256)
        assert (t["schedule"], t["warmup_epochs"], t["warmup_lr"], t["min_lr"]) == ("timm_cosine", 10, 1e-6, 1e-5)
        assert t["cooldown_epochs"] == 10 and run["cooldown_epochs"] == 10
        assert t["label_smoothing"] == 0.1 and t["beta"] == 5.0 and t["sync_bn"] is True
        assert a["eps"] == pytest.approx(8 / 255) and a["step_size"] == pytest.approx(1.5 * a["eps"] / a["steps"])
        assert a["random_start"] and a["trades_start"] == "uniform"
        assert a["bn_mode"] == ("eval" if t["loss"] == "at" else "train")  # AdvTrainingLoss vs TRADESLoss
        assert d["synthetic"]["fraction"] == pytest.approx(_synthetic_share(per_gpu))
        assert (d["val_source"], d["val_size"]) == ("test", 4096)
        assert (e["pgd_steps"], e["pgd_step_size_factor"], e["autoattack"], e["autoattack_n"]) == (40, 1.5, "standard",
                                                                                                   10000)
        # src/setup_task.py, resolve_attack_cfg(args, eval=True): step 1.5 * eps / args.attack_steps (training K)
        assert e["pgd_step_divisor"] == "attack_steps"
        assert run["pgd40_step_size"] == pytest.approx(1.5 * (8 / 255) / a["steps"])
        assert t["at_clean_forward"] is True  # src/attacks.py, AdvTrainingLoss.forward: model(x), model(x_adv)
        assert d["drop_last"] is True  # timm create_loader_v2: drop_last=is_training
        assert d["std"] == [0.2023, 0.1994, 0.2010] and d["mean"] == [0.4914, 0.4822, 0.4465]  # job.sh STD, MEAN
        silu = m["act_layer"] == "silu"  # src/models/wide_resnet_deepmind.py: momentum 0.01, 'SAME' pad, its init
        assert m["kwargs"].get("bn_momentum") == (0.01 if silu else None)
        assert m["kwargs"].get("style") == ("deepmind" if silu else None)
        assert t["ema_decay"] == 0.995 and t["ema_warmup"] is False


def test_the_two_arms_train_110_and_400_epochs_with_cutmix_only_with_ema(plan):
    arms = Counter((r["epochs"], r["config"]["train"]["ema"], r["config"]["train"]["cutmix"]) for r in plan["runs"])
    assert arms == {(110, False, 0.0): 160, (400, True, 1.0): 160}


def test_planned_flops_cover_every_epoch(plan):
    for run in plan["runs"]:
        steps_per_epoch = 50_000 // run["batch_size"]  # validation from the test split; the last batch dropped
        assert run["optimizer_steps"] == run["epochs"] * steps_per_epoch
        assert 0 < run["planned_train_flops"] < run["planned_flops"]
    by_arm = {}
    for run in plan["runs"]:
        c = run["config"]
        key = (c["model"]["name"], c["model"]["act_layer"], c["train"]["loss"], c["attack"]["steps"],
               c["data"]["synthetic"]["path"])
        by_arm.setdefault(key, {})[run["epochs"]] = run["planned_train_flops"]
    assert all(v[400] / v[110] == pytest.approx(400 / 110) for v in by_arm.values())


# ---------------------------------------------------------------------------------------------- rules


def _spec(tmp_path, digits_yaml, **body):
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump({"base": str(digits_yaml), **body}))
    return path


def test_rules_set_values_by_condition_in_order(tmp_path, digits_yaml):
    spec = load_spec(_spec(tmp_path, digits_yaml,
                           axes={"model.name": ["wrn_10_1", "wrn_16_1"], "train.loss": ["at", "trades"]},
                           rules=[{"when": {"model.name": ["wrn_16_1"]}, "set": {"data.batch_size": 32}},
                                  {"when": {"model.name": "wrn_16_1", "train.loss": "trades"},
                                   "set": {"data.batch_size": 16, "train.lr": 0.05}},
                                  {"when": {"data.batch_size": 16}, "set": {"eval.autoattack_n": 7}},
                                  {"when": {"attack.norm": "linf"}, "set": {"train.beta": 3.0}}]))
    got = {(r.config.model.name, r.config.train.loss.value): (r.config.data.batch_size, r.config.train.lr,
                                                              r.config.eval.autoattack_n, r.config.train.beta)
           for r in expand_runs(spec)}
    base = (64, 0.1, 200, 3.0)  # digits.yaml's values; the last rule matches a default (norm linf) everywhere
    assert got == {("wrn_10_1", "at"): base, ("wrn_10_1", "trades"): base,
                   ("wrn_16_1", "at"): (32, 0.1, 200, 3.0),
                   ("wrn_16_1", "trades"): (16, 0.05, 7, 3.0)}  # a later rule wins and sees earlier ones


@pytest.mark.parametrize("rules, fragment", [
    ([{"when": {"model.name": "wrn_10_1"}, "set": {"model.name": "wrn_16_1"}}], "is an axis"),
    ([{"when": {"model.nam": "wrn_10_1"}, "set": {"train.lr": 0.2}}], "'model.nam' is not a config key"),
    ([{"when": {"model.name": "wrn_10_1"}}], "exactly the keys 'when' and 'set'"),
    ([{"when": {}, "set": {"train.lr": 0.2}}], "at least one config key"),
    ({"when": {"model.name": "x"}, "set": {}}, "must be a list"),
    ([{"when": {"model.name": "wrn_10_1"}, "set": {"train.lr": "fast"}}], "train.lr"),
])
def test_bad_rules_are_one_line_errors_naming_the_spec(tmp_path, digits_yaml, rules, fragment, assert_one_line):
    path = _spec(tmp_path, digits_yaml, axes={"model.name": ["wrn_10_1"]}, rules=rules)
    with pytest.raises(ConfigError) as err:
        expand_runs(load_spec(path))
    assert fragment in str(err.value) and "spec.yaml" in str(err.value)
    assert_one_line(str(err.value))
