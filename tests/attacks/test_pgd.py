"""PGD as plain functions: bounds, input-only gradients, BatchNorm statistics, restarts, autocast, meta device."""

import copy

import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from robustscale import create_model
from robustscale.attacks import adversarial_loss, eval_fp32, frozen_bn, pgd, pgd_accuracy


def _model(seed=0):
    torch.manual_seed(seed)
    return create_model("wrn_10_1", num_classes=10, mean=(0.3,) * 3, std=(0.4,) * 3)


def _batch(n=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, 8, 8, generator=g), torch.randint(0, 10, (n,), generator=g)


def _buffers(model):
    return {k: v.clone() for k, v in model.named_buffers()}


def _same_buffers(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("loss", ["ce", "margin"])
def test_stays_in_the_ball_and_the_box(norm, loss):
    model, (x, y) = _model().eval(), _batch()
    eps = 0.1 if norm == "linf" else 0.5
    x_adv = pgd(model, x, y, eps=eps, step_size=eps / 2, steps=5, norm=norm, loss=loss,
                generator=torch.Generator().manual_seed(0))
    delta = (x_adv - x).flatten(1)
    size = delta.abs().amax(1) if norm == "linf" else delta.norm(dim=1)
    assert size.max() <= eps + 1e-5
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    assert not x_adv.requires_grad and size.max() > eps / 2  # it moved, and the result is detached


def test_attack_raises_the_loss():
    model, (x, y) = _model().eval(), _batch(64)
    x_adv = pgd(model, x, y, eps=0.1, step_size=0.025, steps=10, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert F.cross_entropy(model(x_adv), y) > F.cross_entropy(model(x), y) + 0.1


def test_zero_steps_returns_x_unchanged():
    model, (x, y) = _model().eval(), _batch()
    assert torch.equal(pgd(model, x, y, eps=0.1, step_size=0.1, steps=0, random_start=True), x)


def test_only_input_gradients_are_computed():
    model, (x, y) = _model().eval(), _batch()
    pgd(model, x, y, eps=0.1, step_size=0.05, steps=3)
    assert all(p.grad is None for p in model.parameters())
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    pgd(model, x, y, eps=0.1, step_size=0.05, steps=3)
    assert all(torch.equal(p.grad, torch.ones_like(p)) for p in model.parameters())


def test_mode_is_the_callers():
    model, (x, y) = _model(), _batch()
    for training in (True, False):
        model.train(training)
        with frozen_bn(model):
            pgd(model, x, y, eps=0.1, step_size=0.05, steps=2)
        assert model.training is training and all(m.training is training for m in model.modules())


def test_frozen_bn_keeps_running_statistics_bit_identical():
    model, (x, y) = _model().train(), _batch()
    before = _buffers(model)
    with frozen_bn(model):
        pgd(model, x, y, eps=0.1, step_size=0.05, steps=3, generator=torch.Generator().manual_seed(0))
        pgd(model, x, y, eps=0.1, step_size=0.05, steps=3, loss="kl", target_logits=model(x).detach())
    assert _same_buffers(before, _buffers(model))
    assert all(m.track_running_stats for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))
    pgd(model, x, y, eps=0.1, step_size=0.05, steps=1)  # without it, train mode moves the statistics
    assert not _same_buffers(before, _buffers(model))


def test_frozen_bn_uses_batch_statistics():
    model, (x, _) = _model().train(), _batch()
    reference = copy.deepcopy(model)(x)  # train mode: batch statistics (the copy's running stats move, not ours)
    with frozen_bn(model), torch.no_grad():
        assert torch.allclose(model(x), reference, atol=1e-6)


def test_frozen_bn_restores_on_error():
    model = _model()
    with pytest.raises(RuntimeError), frozen_bn(model):
        raise RuntimeError("boom")
    assert all(m.track_running_stats for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))


def test_eval_fp32_restores_each_modules_mode():
    model = _model().train()
    frozen = next(m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)).eval()
    with torch.autocast("cpu", dtype=torch.bfloat16), eval_fp32(model):
        assert not model.training
        assert model(_batch()[0]).dtype == torch.float32
    assert model.training and not frozen.training


def test_same_generator_same_examples_and_different_seed_differs():
    model, (x, y) = _model().eval(), _batch()
    runs = [pgd(model, x, y, eps=0.1, step_size=0.02, steps=2, generator=torch.Generator().manual_seed(s))
            for s in (1, 1, 2)]
    assert torch.equal(runs[0], runs[1]) and not torch.equal(runs[0], runs[2])


def test_restarts_keep_the_first_restart_that_fools():
    model, (x, y) = _model().eval(), _batch(64)
    kw = dict(eps=0.03, step_size=0.01, steps=2)
    got = pgd(model, x, y, restarts=3, generator=torch.Generator().manual_seed(0), **kw)
    g = torch.Generator().manual_seed(0)  # the same draws, one restart per call
    singles = [pgd(model, x, y, generator=g, **kw) for _ in range(3)]
    with torch.no_grad():
        fooled = torch.stack([model(s).argmax(1) != y for s in singles])
    first = torch.where(fooled.any(0), fooled.float().argmax(0), torch.zeros_like(y))
    expected = torch.stack(singles)[first, torch.arange(len(y))]
    assert 0 < fooled.any(0).sum() < len(y)  # the scenario exercises both cases
    assert torch.equal(got, expected)


def test_kl_loss_moves_away_from_the_clean_prediction():
    model, (x, y) = _model().eval(), _batch(32)
    target = model(x).detach()
    x_adv = pgd(model, x, y, eps=0.1, step_size=0.025, steps=5, loss="kl", target_logits=target)
    with torch.no_grad():
        kl = F.kl_div(F.log_softmax(model(x_adv), 1), F.softmax(target, 1), reduction="batchmean")
    assert kl > 1e-3
    with pytest.raises(ValueError, match="target_logits"):
        pgd(model, x, y, eps=0.1, step_size=0.025, steps=1, loss="kl")


def test_kl_random_start_is_trades_small_gaussian():
    model, (x, y) = _model().eval(), _batch()
    x_adv = pgd(model, x, y, eps=0.3, step_size=1e-9, steps=1, loss="kl", target_logits=model(x).detach(),
                generator=torch.Generator().manual_seed(0))
    inner = (x > 0.01) & (x < 0.99)  # away from the box, where clipping would shrink the noise
    assert (x_adv - x)[inner].std() == pytest.approx(0.001, rel=0.1)


def test_runs_under_bf16_autocast():
    model, (x, y) = _model().train(), _batch()
    with torch.autocast("cpu", dtype=torch.bfloat16), frozen_bn(model):
        x_adv = pgd(model, x, y, eps=0.1, step_size=0.05, steps=2)
    assert x_adv.dtype == torch.float32 and (x_adv - x).abs().max() <= 0.1 + 1e-6 and not torch.equal(x_adv, x)


def test_runs_on_the_meta_device_for_flop_counting():
    with torch.device("meta"):
        model = _model()
    x = torch.rand(4, 3, 8, 8, device="meta")
    y = torch.zeros(4, dtype=torch.long, device="meta")
    flops = {}
    for steps in (2, 4):
        with FlopCounterMode(display=False) as counter, frozen_bn(model):
            x_adv = pgd(model.train(), x, y, eps=0.1, step_size=0.05, steps=steps,
                        generator=torch.Generator().manual_seed(0))
        flops[steps] = counter.get_total_flops()
    assert x_adv.device.type == "meta"
    assert flops[4] == 2 * flops[2] > 0  # one forward and one input-backward per step


def test_pgd_accuracy_restores_mode_and_statistics_and_is_seeded():
    model, (x, y) = _model().train(), _batch(40)
    before = _buffers(model)
    a = pgd_accuracy(model, x, y, eps=0.05, steps=3, batch_size=16, seed=3)
    b = pgd_accuracy(model, x, y, eps=0.05, steps=3, batch_size=16, seed=3)
    assert model.training and _same_buffers(before, _buffers(model))
    assert a["robust_acc"] == b["robust_acc"] and 0 <= a["robust_acc"] <= a["clean_acc"] <= 1


def test_bad_norm_or_loss_is_rejected():
    model, (x, y) = _model().eval(), _batch()
    with pytest.raises(ValueError, match="norm"):
        pgd(model, x, y, eps=0.1, step_size=0.1, steps=1, norm="l1")
    with pytest.raises(ValueError, match="loss"):
        pgd(model, x, y, eps=0.1, step_size=0.1, steps=1, loss="dlr")


def test_adversarial_loss_is_the_clean_loss_at_zero_steps_and_rises_under_attack():
    """Issue 19: the N-D law's loss. PGD-0 gives the plain test loss and margin (checked against a direct
    computation); PGD-5 raises both, and the batch size does not change the means."""
    model, (x, y) = _model(), _batch(32)
    with torch.no_grad():
        z = model.eval()(x)
    true = z.gather(1, y[:, None]).squeeze(1)
    wrong = z.scatter(1, y[:, None], float("-inf")).amax(1)
    clean = adversarial_loss(model, x, y, eps=8 / 255, steps=0)
    assert clean["adv_loss"] == pytest.approx(F.cross_entropy(z, y).item(), rel=1e-5)
    assert clean["adv_margin"] == pytest.approx((wrong - true).mean().item(), rel=1e-5, abs=1e-6)
    attacked = adversarial_loss(model, x, y, eps=8 / 255, steps=5, seed=1)
    assert attacked["adv_loss"] > clean["adv_loss"] and attacked["adv_margin"] > clean["adv_margin"]
    batched = adversarial_loss(model, x, y, eps=8 / 255, steps=5, seed=1, batch_size=32)
    assert batched["adv_loss"] == pytest.approx(attacked["adv_loss"], rel=1e-6) and batched["n"] == 32
