"""FLOP counts: the published figures, exact totals over real training and evaluation, resume, the CLI."""

import json
import re
from pathlib import Path

import pytest
import torch

from robustscale.accounting import RunFlops, step_flops
from robustscale.accounting.flops import count_flops
from robustscale.cli import main
from robustscale.config import load_config
from robustscale.models import create_model

DOCS = Path(__file__).resolve().parents[2] / "docs" / "flops.md"


def _cli_json(capsys, *args):
    assert main(list(args)) == 0
    return json.loads(capsys.readouterr().out)


@pytest.mark.parametrize("name, gflops, mparams", [("wrn_28_10", 10.5, 36.5), ("wrn_70_16", 77.5, 266.8)])
def test_published_forward_flops_and_params(capsys, name, gflops, mparams):
    out = _cli_json(capsys, "flops", name, "--json")
    assert out["forward_flops"] / 1e9 == pytest.approx(gflops, rel=0.01)
    assert out["params"] / 1e6 == pytest.approx(mparams, rel=0.01)
    # an input-gradient backward costs one forward: a PGD step is exactly 2x forward
    assert out["attack_step_flops"] == 2 * out["forward_flops"]
    assert out["attack_flops_per_sample"] == 10 * out["attack_step_flops"]


def test_trades10_matches_the_hand_derivation_in_the_docs(capsys):
    out = _cli_json(capsys, "flops", "wrn_28_10", "--loss", "trades", "--steps", "10", "--json")
    doc = DOCS.read_text()

    def documented(label):  # the bold figure in the derivation table's row for `label`
        row = next(line for line in doc.splitlines() if line.startswith(f"| **{label}**"))
        return int(re.findall(r"\*\*([\d,]+)\*\*", row)[0].replace(",", ""))

    assert out["attack_flops_per_sample"] == documented("attack") == 220_219_808_256
    assert out["train_flops_per_sample"] == documented("train") == 283_137_984_000
    assert out["update_flops_per_sample"] == 62_918_175_744
    assert out["paper_convention_flops_per_sample"] == 3 * (10 + 3) * out["forward_flops"]  # TRADES: K + 3 passes


@pytest.mark.parametrize("loss, steps, passes", [("at", 1, 3), ("at", 10, 12), ("trades", 1, 4), ("trades", 10, 13),
                                                 ("standard", 0, 1)])
def test_paper_convention_charges_the_passes_the_papers_code_ran(capsys, loss, steps, passes):
    out = _cli_json(capsys, "flops", "wrn_16_2", "--loss", loss, "--steps", str(steps), "--json")
    assert out["paper_convention_flops_per_sample"] == 3 * passes * out["forward_flops"]


def test_paper_convention_gives_the_papers_trades_overheads(capsys):
    """The paper quotes TRADES/AT overheads of 1.3x at K=1 and 1.08x at K=10: (K+3)/(K+2) = 4/3 and 13/12."""
    def paper(loss, k):
        return _cli_json(capsys, "flops", "wrn_16_2", "--loss", loss, "--steps", str(k),
                         "--json")["paper_convention_flops_per_sample"]

    assert paper("trades", 1) / paper("at", 1) == pytest.approx(4 / 3)
    assert paper("trades", 10) / paper("at", 10) == pytest.approx(13 / 12)


def test_trades_overhead_over_at_shrinks_with_attack_steps(capsys):
    ratios = []
    for k in ("1", "2", "5", "10"):
        at = _cli_json(capsys, "flops", "wrn_16_4", "--steps", k, "--json")
        trades = _cli_json(capsys, "flops", "wrn_16_4", "--loss", "trades", "--steps", k, "--json")
        ratios.append(trades["train_flops_per_sample"] / at["train_flops_per_sample"])
    assert all(a > b > 1 for a, b in zip(ratios, ratios[1:])), ratios


def test_flops_are_linear_in_batch():
    with torch.device("meta"):
        model = create_model("wrn_16_2")
    counts = [count_flops(model, torch.empty(b, 3, 32, 32, device="meta")) for b in (1, 2, 4)]
    assert counts[1] == 2 * counts[0] and counts[2] == 4 * counts[0]


def test_at_clean_forward_adds_one_forward_per_sample():
    """The paper's PGD-AT step runs K attack steps, a clean and an adversarial forward (src/attacks.py,
    AdvTrainingLoss.forward): (2K + 4) F - stem exactly, one F more than the adversarial-only step."""
    plain = step_flops("wrn_28_10", image_size=32, loss="at", steps=10)
    paper = step_flops("wrn_28_10", image_size=32, loss="at", steps=10, clean_forward=True)
    assert paper.train - plain.train == paper.forward
    assert paper.train == (2 * 10 + 4) * paper.forward - paper.stem
    assert paper.attack == plain.attack and paper.paper_convention == plain.paper_convention  # 3 (K + 2) F either way
    assert step_flops("wrn_28_10", image_size=32, loss="trades", steps=10, clean_forward=True) == \
        step_flops("wrn_28_10", image_size=32, loss="trades", steps=10)  # TRADES already has its clean forward


def test_module_counted_on_a_copy_equals_the_name():
    model = create_model("wrn_10_1", num_classes=10)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    by_module = step_flops(model, image_size=8, loss="trades", steps=3)
    by_name = step_flops("wrn_10_1", image_size=8, loss="trades", steps=3)
    assert by_module == by_name
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # BN statistics untouched


def test_bad_arguments_are_one_line_errors(capsys):
    assert main(["flops", "wrn_28_10", "--steps", "-1"]) == 2
    assert main(["flops", "not_a_model"]) == 2
    assert "error:" in capsys.readouterr().err


# ------------------------------------------------------------------------ exact totals on real training code


@pytest.mark.parametrize("loss, clean_forward", [("standard", False), ("at", False), ("at", True), ("trades", False)])
def test_training_n_samples_counts_exactly_per_sample_times_n(loss, clean_forward):
    """Real attack + loss + backward + SGD step (the trainer's own code) on a tiny model, under the counter; PGD-AT
    with the paper's clean forward (``train.at_clean_forward``) too."""
    from robustscale.training.losses import compute_loss

    cfg = load_config("configs/digits.yaml", ["model.name=wrn_10_1", f"train.loss={loss}", "attack.steps=3",
                                              "attack.step_size=0.05", f"train.at_clean_forward={clean_forward}"])
    torch.manual_seed(0)
    model = create_model("wrn_10_1", num_classes=10).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    run = RunFlops(step_flops(model, image_size=8, loss=loss, steps=3, clean_forward=clean_forward))
    counted = 0
    for batch in (5, 3, 8):  # N = 16 samples in uneven batches
        x, y = torch.rand(batch, 3, 8, 8), torch.randint(0, 10, (batch,))

        def step():
            out = compute_loss(loss, model, x, y, cfg)
            opt.zero_grad()
            out.loss.backward()
            opt.step()

        counted += count_flops(step)
        run.add_train(batch)
    assert run.samples_seen == 16
    assert run.train_flops == counted == 16 * run.step.train
    assert run.attack_flops + run.update_flops == counted


def test_pgd_evaluation_counts_exactly():
    from robustscale.attacks import pgd_accuracy

    torch.manual_seed(1)
    model = create_model("wrn_10_1", num_classes=10)
    x, y = torch.rand(12, 3, 8, 8), torch.randint(0, 10, (12,))
    res = {}
    counted = count_flops(lambda: res.update(pgd_accuracy(model, x, y, eps=0.1, steps=4, batch_size=5)))
    run = RunFlops(step_flops(model, image_size=8, loss="at", steps=4))
    run.add_pgd_eval(12, 4, n_attacked=round(res["clean_acc"] * 12))
    assert run.eval_flops == counted
    assert run.eval_samples == 12


def test_kill_and_resume_counts_each_step_once():
    step = step_flops("wrn_10_1", image_size=8, loss="at", steps=2)
    batch, total_steps, every = 64, 10, 3
    run, checkpoint = RunFlops(step), None
    for t in range(7):  # killed after step 7; the last checkpoint was after step 6
        run.add_train(batch)
        if (t + 1) % every == 0:
            checkpoint = json.loads(json.dumps(run.state_dict()))  # through JSON, as a checkpoint file would
    resumed = RunFlops(step)
    resumed.load_state_dict(checkpoint)
    for t in range(resumed.samples_seen // batch, total_steps):
        resumed.add_train(batch)
    assert resumed.samples_seen == total_steps * batch
    assert resumed.train_flops == total_steps * batch * step.train
    assert resumed.paper_convention_flops == total_steps * batch * step.paper_convention
