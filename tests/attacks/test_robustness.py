"""Robustness evaluation of a normally trained tiny model on the embedded digits: PGD, AutoAttack, checks, CLI."""

import json

import pytest
import torch
import torch.nn.functional as F

from robustscale.attacks import frozen_bn, pgd, pgd_accuracy, run_autoattack, subset_indices
from robustscale.cli import main
from robustscale.config import load_config
from robustscale.data import dataset_info, load_data
from robustscale.evaluate import evaluate_model
from robustscale.training.model_files import create_from_config, save_model

pytestmark = pytest.mark.xdist_group("test_robustness")  # module fixtures built once (conftest.py)

EPS = dataset_info("digits").default_eps  # the radius where a normally trained model falls below 10%


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models: fanning out over threads costs more than it gains, and collapses when the CI box is shared."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def cfg():
    return load_config("configs/digits.yaml")


@pytest.fixture(scope="module")
def model(cfg):
    """WRN-10-1 trained normally (no attack) for 10 epochs: about 98% clean test accuracy in a few seconds."""
    torch.manual_seed(0)
    net = create_from_config(cfg)
    x, y = load_data("digits", "train")
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4)
    epochs, g = 10, torch.Generator().manual_seed(0)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, 0.2, total_steps=epochs * -(-len(x) // 128))
    for _ in range(epochs):
        for idx in torch.randperm(len(x), generator=g).split(128):
            opt.zero_grad()
            F.cross_entropy(net(x[idx]), y[idx]).backward()
            opt.step()
            sched.step()
    return net.eval()


@pytest.fixture(scope="module")
def mlp():
    """A one-hidden-layer MLP on the flattened digits (96% clean): AutoAttack's iterations on it cost microseconds,
    so the tests can afford the full standard ensemble with survivors at every attack."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(192, 64), torch.nn.ReLU(), torch.nn.Linear(64, 10))
    x, y = load_data("digits", "train")
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _ in range(100):
        opt.zero_grad()
        F.cross_entropy(net(x), y).backward()
        opt.step()
    return net.eval()


@pytest.fixture(scope="module")
def test_set():
    return load_data("digits", "test")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, model, cfg):
    run = tmp_path_factory.mktemp("run")
    save_model(run / "best.safetensors", model, cfg)
    return run


def _buffers(net):
    return {k: v.clone() for k, v in net.named_buffers()}


# ---------------------------------------------------------------------------------------------- PGD


def test_normal_model_is_accurate_but_not_robust(model, test_set):
    res = pgd_accuracy(model, *test_set, eps=EPS, steps=20)
    assert res["clean_acc"] > 0.9
    assert res["robust_acc"] < 0.1


def test_more_steps_never_give_higher_accuracy(model, test_set):
    accs = [pgd_accuracy(model, *test_set, eps=0.05, steps=s, step_size=0.01, seed=1)["robust_acc"]
            for s in (0, 2, 5, 10, 20)]
    assert accs == sorted(accs, reverse=True)
    assert accs[0] > accs[-1]  # the attack does something at this eps


def test_pgd_metric_is_seeded(model, test_set):
    runs = [pgd_accuracy(model, *test_set, eps=0.05, steps=5, loss="margin", seed=s)["robust_acc"] for s in (4, 4)]
    assert runs[0] == runs[1]


def test_attacks_leave_batchnorm_statistics_bit_identical(model, test_set):
    x, y = test_set[0][:64], test_set[1][:64]
    before = _buffers(model)
    model.train()
    try:
        with frozen_bn(model):
            pgd(model, x, y, eps=EPS, step_size=0.05, steps=5)
    finally:
        model.eval()
    pgd_accuracy(model, x, y, eps=EPS, steps=5)
    run_autoattack(model, x, y, eps=EPS, attacks=["apgd-ce"], n=10)
    after = _buffers(model)
    assert all(torch.equal(before[k], after[k]) for k in before) and not model.training


# ---------------------------------------------------------------------------------------------- AutoAttack


def _direct(model, x, y, *, eps, version, attacks, batch_size):
    """A plain pyautoattack call, as its README shows it."""
    from pyautoattack import AutoAttack

    adversary = AutoAttack(model, eps=eps, norm="Linf", version=version, attacks=attacks, seed=0)
    adversary.logger.setLevel("ERROR")  # its checks' warnings are the wrapper's business, not this reference's
    x_adv, y_adv = adversary.run_standard_evaluation(x, y, batch_size=batch_size)
    with torch.no_grad():
        assert torch.equal(model(x_adv).argmax(1), y_adv)
    return (y_adv == y).sum().item() / len(y)


@pytest.mark.parametrize("version, attacks, batch_size", [
    ("standard", None, 15),  # the paper's ensemble, three batches
    ("custom", ["square", "apgd-ce"], 500),  # both attacks fool some points
])
def test_wrapper_matches_a_direct_pyautoattack_call(mlp, test_set, version, attacks, batch_size):
    res = run_autoattack(mlp, *test_set, eps=0.1, version=version, attacks=attacks, n=40, batch_size=batch_size)
    idx = subset_indices(len(test_set[1]), 40, seed=0)
    expected = _direct(mlp, test_set[0][idx], test_set[1][idx], eps=0.1, version=version, attacks=attacks,
                       batch_size=batch_size)
    assert res["robust_acc"] == expected and res["n"] == 40
    per_attack = list(res["per_attack"].values())
    assert list(res["per_attack"]) == res["attacks"] and per_attack[-1] == res["robust_acc"]
    assert res["clean_acc"] >= per_attack[0] and per_attack == sorted(per_attack, reverse=True)
    assert res["points_per_s"] > 0 and res["warnings"] == []


def test_only_runs_those_of_the_versions_attacks_with_its_settings(mlp, test_set):
    """The demo's subset, standard's APGD-CE and APGD-T: with standard's settings (custom's would give APGD-CE five
    restarts), so it equals standard's accuracy after its second attack and a direct pyautoattack call of standard
    with only those two attacks; the result names the two left out."""
    from pyautoattack import AutoAttack

    kw = dict(eps=0.1, n=40, batch_size=15)
    full = run_autoattack(mlp, *test_set, **kw)
    res = run_autoattack(mlp, *test_set, only=["apgd-t", "apgd-ce"], **kw)
    assert (res["version"], res["attacks"], res["skipped"], full["skipped"]) == (
        "standard", ["apgd-ce", "apgd-t"], ["fab-t", "square"], [])
    assert res["robust_acc"] == full["per_attack"]["apgd-t"] < res["clean_acc"]
    idx = subset_indices(len(test_set[1]), 40, seed=0)
    direct = AutoAttack(mlp, eps=0.1, norm="Linf", version="standard", seed=0)
    direct.attacks_to_run = ["apgd-ce", "apgd-t"]
    direct.logger.setLevel("ERROR")
    _, y_adv = direct.run_standard_evaluation(test_set[0][idx], test_set[1][idx], batch_size=15)
    assert res["robust_acc"] == (y_adv == test_set[1][idx]).sum().item() / 40


@pytest.mark.parametrize("kw, words", [
    (dict(only=["fab"]), ["only", "apgd-ce, apgd-t, fab-t, square", "fab"]),
    (dict(only=["apgd-ce", "apgd-ce"]), ["only", "distinct"]),
    (dict(only=["apgd-ce"], attacks=["apgd-ce"]), ["either", "attacks", "only"]),
])
def test_a_bad_subset_is_one_line_naming_it(mlp, test_set, assert_one_line, kw, words):
    with pytest.raises(ValueError) as err:
        run_autoattack(mlp, *test_set, eps=0.1, n=4, **kw)
    assert all(w in assert_one_line(err.value) for w in words)


@pytest.mark.slow
def test_on_a_cpu_conv_kernels_change_nothing_but_time(model, test_set):
    """Channels-last weights and, on 16 points or fewer, native convolutions: the result of a direct pyautoattack
    call on the model as it is, and the caller's weights (same storage, same layout) and kernel flags come back."""
    kw = dict(eps=EPS / 2, version="custom", attacks=["apgd-ce"], batch_size=500)
    weights = [(p, p.data_ptr(), p.stride()) for p in model.parameters()]
    res = run_autoattack(model, *test_set, n=16, **kw)  # 16 points: native kernels
    idx = subset_indices(len(test_set[1]), 16, seed=0)
    assert 0 < res["robust_acc"] < res["clean_acc"]
    assert res["robust_acc"] == _direct(model, test_set[0][idx], test_set[1][idx], **kw)
    assert all(p.data_ptr() == ptr and p.stride() == stride for p, ptr, stride in weights)
    assert torch.backends.mkldnn.enabled and torch._C._get_nnpack_enabled() and res["warnings"] == []


@pytest.mark.slow
def test_on_a_cpu_a_wideresnet_is_attacked_through_its_folded_copy(model, test_set, monkeypatch):
    """The same result as a direct pyautoattack call on the model; a copy whose logits differ is refused."""
    import robustscale.attacks.autoattack as aa

    # at 0.8 eps 6 of the 24 points survive APGD-CE into Square's 5,000 queries (at eps / 2: 14, for 1.6x the time)
    kw = dict(eps=0.8 * EPS, version="custom", attacks=["apgd-ce", "square"], batch_size=500)
    res = run_autoattack(model, *test_set, n=24, **kw)
    idx = subset_indices(len(test_set[1]), 24, seed=0)
    assert res["attacked"] == "folded copy" and 0 < res["robust_acc"] < res["clean_acc"]
    assert res["robust_acc"] == _direct(model, test_set[0][idx], test_set[1][idx], **kw)

    fold = aa.fold_batchnorm

    def off_by_a_bit(net):
        folded = fold(net)
        folded.head_b = folded.head_b + 1e-3
        return folded

    monkeypatch.setattr(aa, "fold_batchnorm", off_by_a_bit)
    assert run_autoattack(model, *test_set, n=8, eps=EPS / 2, attacks=["apgd-ce"])["attacked"] == "model"


def test_subset_is_seeded_and_sorted():
    a, b, c = subset_indices(360, 50, 0), subset_indices(360, 50, 0), subset_indices(360, 50, 1)
    assert torch.equal(a, b) and not torch.equal(a, c) and torch.equal(a, a.sort().values) and len(a.unique()) == 50


class _CrashAfter(torch.nn.Module):
    """Wraps a model and raises after ``limit`` forwards: a job killed in the middle of an attack."""

    def __init__(self, net):
        super().__init__()
        self.net, self.calls, self.limit = net, 0, None

    def forward(self, x):
        self.calls += 1
        if self.limit is not None and self.calls > self.limit:
            raise KeyboardInterrupt
        return self.net(x)


def test_killed_autoattack_resumes_to_the_same_result(mlp, test_set, tmp_path):
    kw = dict(eps=0.1, attacks=["apgd-ce", "apgd-t"], n=40, batch_size=10)
    net = _CrashAfter(mlp)
    reference = run_autoattack(net, *test_set, **kw)
    state = tmp_path / "aa.state.json"
    net.calls, net.limit = 0, net.calls // 2
    with pytest.raises(KeyboardInterrupt):
        run_autoattack(net, *test_set, state_path=state, **kw)
    saved = json.loads(state.read_text())
    assert saved["current"] == "apgd-ce" and 0 < len(saved["todo"]) < sum(1 for r in saved["robust"] if r)
    net.limit = None
    resumed = run_autoattack(net, *test_set, state_path=state, **kw)
    assert resumed["resumed"] and resumed["robust_acc"] == reference["robust_acc"]
    assert resumed["per_attack"] == reference["per_attack"]



@pytest.mark.parametrize("tamper", ["forged", "malformed", "unsigned"])
def test_a_resume_state_from_elsewhere_or_edited_is_started_over(mlp, test_set, tmp_path, tamper):
    """A run folder can be downloaded, and its resume state decides which points count as robust: a state whose
    signature does not hold (edited to mark every point robust, or written without this user's key) is not trusted,
    and a signed but malformed one does not crash the evaluation; both start over and give the honest number."""
    kw = dict(eps=0.1, attacks=["apgd-ce"], n=30, batch_size=10)
    net = _CrashAfter(mlp)
    reference = run_autoattack(net, *test_set, **kw)
    assert reference["robust_acc"] < 1.0
    state_path = tmp_path / "aa.state.json"
    net.calls, net.limit = 0, net.calls // 2  # a state on disk mid-attack, written and signed by this user
    with pytest.raises(KeyboardInterrupt):
        run_autoattack(net, *test_set, state_path=state_path, **kw)
    state = json.loads(state_path.read_text())
    if tamper == "forged":  # every point robust, all attacks done: 100% robust accuracy if trusted
        state.update(robust=[True] * 30, done={"apgd-ce": 30}, current=None, todo=[])
    elif tamper == "malformed":  # signed again with this user's key, but not a state
        from robustscale.store.local_key import sign

        state.pop("signature")
        state["robust"] = "all"
        state["signature"] = sign(state)
    else:
        state.pop("signature")
    state_path.write_text(json.dumps(state))
    net.limit = None
    again = run_autoattack(net, *test_set, state_path=state_path, **kw)
    assert not again["resumed"] and again["robust_acc"] == reference["robust_acc"]
    assert any("started over" in w for w in again["warnings"])


@pytest.mark.parametrize("kind, words", [("deep", "deeper than 64"), ("link", "symbolic link"), ("fifo", "FIFO"),
                                         ("huge", "larger than")])
def test_a_state_that_is_no_regular_json_file_is_started_over(mlp, test_set, tmp_path, planted_fifo, kind, words):
    """Issue 34 item 3: a deeply nested state raised RecursionError, and one that is a FIFO or a link was read
    (a FIFO blocked until someone wrote to it; a link to /dev/zero ate the memory; a link to a valid state elsewhere
    was resumed). Each now starts over, with a warning saying why."""
    kw = dict(eps=0.1, attacks=["apgd-ce"], n=30, batch_size=10)
    net = _CrashAfter(mlp)
    reference = run_autoattack(net, *test_set, **kw)
    saved = tmp_path / "saved.state.json"  # a valid state of this very evaluation, signed by this user
    net.calls, net.limit = 0, net.calls // 2
    with pytest.raises(KeyboardInterrupt):
        run_autoattack(net, *test_set, state_path=saved, **kw)
    net.limit = None
    state_path = tmp_path / "aa.state.json"
    if kind == "deep":
        state_path.write_text("[" * 100_000 + "]" * 100_000)
    elif kind == "link":
        state_path.symlink_to(saved)
    elif kind == "fifo":
        planted_fifo(state_path, saved.read_text())
    else:
        state_path.write_text(saved.read_text()[:-1] + " " * (64 << 20) + "}")
    again = run_autoattack(net, *test_set, state_path=state_path, **kw)
    assert not again["resumed"] and again["robust_acc"] == reference["robust_acc"]
    assert any("started over" in w and words in w for w in again["warnings"]), again["warnings"]


class _Masked(torch.nn.Module):
    """Gradient masking: confident one-hot outputs of the argmax, so every gradient is zero."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        logits = self.net(x)
        return 10.0 * F.one_hot(logits.argmax(1), 10).float() + 0.0 * logits


class _Probabilities(torch.nn.Module):
    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net(x).softmax(1)


def test_gradient_masking_warnings_land_in_the_result(mlp, test_set):
    res = run_autoattack(_Masked(mlp), *test_set, eps=EPS, attacks=["apgd-dlr", "square"], n=30)
    text = " ".join(res["warnings"])
    assert "zero gradient" in text and "Square Attack has decreased" in text
    assert res["per_attack"]["square"] < res["per_attack"]["apgd-dlr"]


def test_probability_outputs_warning_lands_in_the_result(mlp, test_set):
    res = run_autoattack(_Probabilities(mlp), *test_set, eps=EPS, attacks=["apgd-ce"], n=20)
    assert any("probability distribution" in w for w in res["warnings"])


# ---------------------------------------------------------------------------------------------- evaluate, CLI


def test_evaluate_model_runs_the_checks_and_writes_the_result(model, test_set, tmp_path):
    res = evaluate_model(model, *test_set, attack="pgd", eps=EPS, steps=10, n=100, run_dir=tmp_path)
    assert res["ok"] and res["errors"] == [] and {c["name"] for c in res["checks"]} == {
        "eps_zero_robust_equals_clean", "robust_le_clean", "pgd_monotone_in_eps"}
    assert json.loads((tmp_path / "eval" / f"pgd-{EPS:.6g}.json").read_text())["robust_acc"] == res["robust_acc"]


def test_cli_autoattack_json_on_a_run_folder(run_dir, capsys):
    # eps 0.3: APGD-CE leaves no survivor, so the other three attacks cost nothing (the MLP tests cover them)
    assert main(["eval", str(run_dir), "--attack", "autoattack", "--n", "50", "--eps", "0.3", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert {"clean_acc", "robust_acc", "attack", "eps", "n", "seconds", "checks", "per_attack"} <= set(out)
    assert 0 <= out["robust_acc"] <= out["clean_acc"] <= 1 and out["n"] == 50 and out["eps"] == 0.3
    assert list(out["per_attack"]) == ["apgd-ce", "apgd-t", "fab-t", "square"] and out["ok"]
    stored = json.loads((run_dir / "eval" / "autoattack-0.3.json").read_text())
    assert stored["robust_acc"] == out["robust_acc"]
    assert not (run_dir / "eval" / "autoattack-0.3.state.json").exists()


def test_evaluate_defaults_to_the_runs_threat_model(run_dir):
    from robustscale.evaluate import evaluate

    res = evaluate(run_dir, attack="pgd", steps=5, n=50)
    assert res["eps"] == EPS and res["norm"] == "linf" and res["dataset"] == "digits" and res["n"] == 50
    assert (run_dir / "eval" / f"pgd-{EPS:.6g}.json").exists()


def test_cli_pgd_table_on_a_checkpoint(run_dir, capsys):
    assert main(["eval", str(run_dir / "best.safetensors"), "--attack", "pgd", "--steps", "5", "--eps", "8/255",
                 "--n", "100"]) == 0
    out = capsys.readouterr().out
    assert "robust accuracy" in out and "0.0313725" in out and "check robust_le_clean" in out


@pytest.mark.parametrize("args, message", [
    (["--eps", "lots"], "--eps"),
    (["--norm", "l1"], "--norm"),
    (["--version", "fast"], "version"),
    (["--attacks", "apgd-ce,pgd"], "attacks"),
])
def test_cli_bad_input_is_one_line_and_status_2(run_dir, capsys, args, message):
    assert main(["eval", str(run_dir), "--n", "5", *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and message in err and len(err.strip().splitlines()) == 1


def test_cli_missing_path_is_status_2(tmp_path, capsys):
    assert main(["eval", str(tmp_path / "nowhere")]) == 2
    assert "nowhere" in capsys.readouterr().err


def test_cli_failed_check_exits_1(monkeypatch, capsys, run_dir):
    import robustscale.evaluate

    real = robustscale.evaluate.evaluate_model

    def with_broken_checks(*args, **kwargs):  # a model whose attack reports more than clean accuracy
        res = real(*args, **kwargs)
        res["checks"][1] = {"name": "robust_le_clean", "ok": False, "detail": "robust 0.9 vs clean 0.5"}
        res["errors"], res["ok"] = ["robust_le_clean: robust 0.9 vs clean 0.5"], False
        return res

    monkeypatch.setattr(robustscale.evaluate, "evaluate_model", with_broken_checks)
    assert main(["eval", str(run_dir / "best.safetensors"), "--attack", "pgd", "--steps", "2", "--n", "20"]) == 1
    captured = capsys.readouterr()
    assert "FAILED" in captured.out and "robust_le_clean" in captured.err
