"""One scope for time, FLOPs and energy: energy_kwh, metered_s, wall_s and train_flops cover the training steps;
validation and the final evaluation are metered and counted apart (eval_*), and the whole bill is total_*."""

import pytest
import torch

from robustscale.accounting import step_flops
from robustscale.accounting.flops import count_model_calls
from robustscale.config import load_config
from robustscale.data import load_data
from robustscale.evaluate import evaluate_model
from robustscale.models import create_model
from robustscale.training import train

pytestmark = pytest.mark.xdist_group("test_scope")  # module fixtures built once (conftest.py)


@pytest.fixture(scope="module")
def record(tmp_path_factory):
    cfg = load_config("configs/digits.yaml", ["train.epochs=2", "data.val_size=50", "eval.pgd_steps=5",
                                              "eval.autoattack=none"])
    return train(cfg, tmp_path_factory.mktemp("scope") / "run", progress=False).to_dict()


def test_training_energy_covers_the_training_time(record):
    acc = record["accounting"]
    assert acc["metered_s"] == pytest.approx(acc["wall_s"], rel=0.15)  # was 1.54x with validation inside
    assert acc["energy_kwh"] > 0 and acc["cost_usd"] > 0 and acc["co2_kg"] > 0
    assert not set(record) & set(acc)  # wall_s (and samples_seen, hardware) stated once, in one place


def test_evaluation_is_metered_and_counted_apart(record):
    acc = record["accounting"]
    assert acc["eval_energy_kwh"] > 0 and acc["eval_wall_s"] > 0 and acc["eval_metered_s"] > 0
    assert acc["eval_cost_usd"] > 0 and acc["eval_co2_kg"] > 0
    assert acc["val_flops"] > 0 and acc["eval_flops"] == acc["val_flops"] + acc["final_eval_flops"]
    forward = step_flops("wrn_10_1", image_size=8, loss="at", steps=5).forward
    # the clean pass over the 360 digits test points, then the adversarial test loss on AutoAttack's points: per
    # point 5 PGD steps (forward + input gradient, 2 forwards' worth each) and one forward at the last iterate
    n_loss = record["evaluations"]["adv_loss"]["n"]
    assert n_loss == 200  # configs/digits.yaml's eval.autoattack_n
    assert acc["final_eval_flops"] == 360 * forward + n_loss * (5 * 2 + 1) * forward
    assert acc["total_energy_kwh"] >= acc["energy_kwh"] + acc["eval_energy_kwh"] - 1e-12
    assert acc["total_metered_s"] >= acc["metered_s"] + acc["eval_metered_s"] - 1e-6


def test_autoattack_is_counted_from_the_models_calls(monkeypatch):
    """Every call AutoAttack makes is counted, also where it runs on the BatchNorm-folded copy (a CPU): the same
    counts as with folding off. Before, only the model's own calls were (147 of 82,000 on 40 digits)."""
    import robustscale.attacks.autoattack as aa

    torch.manual_seed(0)
    model = create_model("wrn_10_1", num_classes=10).eval()  # untrained: AutoAttack is done in a few steps
    x, y = load_data("digits", "test")
    kw = dict(attack="autoattack", eps=0.15, n=60, batch_size=60)
    with count_model_calls(model) as calls:
        res = evaluate_model(model, x, y, **kw)
    monkeypatch.setattr(aa, "fold_batchnorm", lambda net: None)
    with count_model_calls(model) as unfolded:
        plain = evaluate_model(model, x, y, **kw)
    assert res["attacked"] == "folded copy" and plain["attacked"] == "model"
    assert res["robust_acc"] == plain["robust_acc"] and calls.with_grad == unfolded.with_grad
    # the same attack calls; the folded path also checks the copy against the model on the first batch (60 points
    # through each, counted: it is work done)
    assert calls.plain == unfolded.plain + 2 * 60
    step = step_flops("wrn_10_1", image_size=8, loss="at", steps=1)
    assert res["clean_acc"] > 0  # some points were classified right, so AutoAttack attacked them
    assert calls.with_grad > 60 and calls.plain >= 60  # attack steps and clean passes
    assert calls.flops(step) == calls.plain * step.forward + calls.with_grad * 2 * step.forward
