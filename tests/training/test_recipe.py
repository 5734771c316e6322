"""The recipe knobs the paper's code used, each against what that code (or the library it called) does: timm's
cosine schedule with warm-up and cool-down, lr per N images, timm's CutMix and how its soft targets meet PGD-AT and
TRADES, the attack's BatchNorm mode, and EMA without warm-up."""

import copy
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from robustscale.attacks import frozen_bn, pgd
from robustscale.config import load_config
from robustscale.data import DataBundle, MixedBatchSampler, dataset_info, load_train_data
from robustscale.data.cutmix import cutmix
from robustscale.training.ema import ModelEMA
from robustscale.training.loop import BatchSource
from robustscale.training.losses import compute_loss
from robustscale.training.optim import effective_lr, make_optimizer, make_scheduler

PAPER = ["train.schedule=timm_cosine", "train.warmup_epochs=10", "train.warmup_lr=1e-6", "train.min_lr=1e-5",
         "train.cooldown_epochs=10", "train.epochs=110", "train.lr=0.1", "train.lr_base_size=256",
         "data.batch_size=512"]


def _lrs_per_epoch(cfg, steps_per_epoch=3):
    opt = make_optimizer(nn.Linear(2, 2), cfg.train, cfg.data.batch_size)
    sched = make_scheduler(opt, cfg.train, steps_per_epoch, cfg.data.batch_size)
    lrs = []
    for _ in range(cfg.train.epochs):
        within = set()
        for _ in range(steps_per_epoch):
            within.add(opt.param_groups[0]["lr"])
            opt.step()
            sched.step()
        assert len(within) == 1  # timm's scheduler steps per epoch (t_in_epochs): one lr per epoch
        lrs.append(within.pop())
    return lrs


def test_timm_cosine_is_timms_scheduler_as_the_paper_configured_it():
    from timm.scheduler import CosineLRScheduler

    cfg = load_config("configs/digits.yaml", PAPER)
    ours = _lrs_per_epoch(cfg)
    opt = torch.optim.SGD(nn.Linear(2, 2).parameters(), lr=0.2)  # 0.1 x 512 / 256
    # timm's create_scheduler: t_initial = --epochs (100), then --cooldown-epochs (10) at lr_min
    timm_sched = CosineLRScheduler(opt, t_initial=100, lr_min=1e-5, warmup_t=10, warmup_lr_init=1e-6)
    theirs = []
    for epoch in range(110):
        timm_sched.step(epoch)
        theirs.append(opt.param_groups[0]["lr"])
    assert ours == pytest.approx(theirs, rel=1e-12, abs=1e-15)
    assert ours[0] == pytest.approx(1e-6) and ours[10] == pytest.approx(1e-5 + 0.5 * (0.2 - 1e-5) * (1 + math.cos(
        math.pi / 10)))
    assert ours[100:] == [pytest.approx(1e-5)] * 10


def test_lr_per_base_size_follows_the_global_batch():
    cfg = load_config("configs/digits.yaml", ["train.lr=0.1", "train.lr_base_size=256", "data.batch_size=64"])
    assert effective_lr(cfg.train, 64) == pytest.approx(0.025)
    assert make_optimizer(nn.Linear(2, 2), cfg.train, 64).param_groups[0]["lr"] == pytest.approx(0.025)
    plain = load_config("configs/digits.yaml", ["train.lr=0.1", "data.batch_size=64"])
    assert effective_lr(plain.train, 64) == 0.1  # no base size: the lr as given


def test_cosine_cooldown_and_milestones():
    cfg = load_config("configs/digits.yaml", ["train.epochs=10", "train.cooldown_epochs=2", "train.min_lr=0.01",
                                              "train.lr=0.1", "train.warmup_epochs=0"])
    lrs = _lrs_per_epoch(cfg, steps_per_epoch=1)
    assert lrs[0] == pytest.approx(0.1) and lrs[8:] == [pytest.approx(0.01)] * 2
    assert all(a >= b for a, b in zip(lrs, lrs[1:])) and lrs[7] > 0.01
    zhang = load_config("configs/trades_wrn34_10.yaml")  # x0.1 from (1-based) epoch 75 of 76
    lrs = _lrs_per_epoch(zhang, steps_per_epoch=1)
    assert lrs[:74] == [pytest.approx(0.1)] * 74 and lrs[74:] == [pytest.approx(0.01)] * 2


# ---------------------------------------------------------------------------------------------- CutMix


def test_cutmix_is_timms_batch_cutmix():
    x = torch.arange(4, dtype=torch.float32).view(4, 1, 1, 1).expand(4, 3, 8, 8).clone()
    y = torch.tensor([0, 1, 2, 3])
    rng = np.random.default_rng(0)
    mixed, soft = cutmix(x, y, alpha=1.0, num_classes=5, rng=rng)
    replaced = mixed != x  # image i received image (3 - i)'s box
    assert torch.equal(mixed[replaced], x.flip(0)[replaced])
    kept = 1.0 - replaced[0, 0].float().mean().item()  # the corrected lam: share of pixels kept
    assert 0.0 <= kept < 1.0
    assert torch.allclose(soft.sum(1), torch.ones(4))
    assert torch.allclose(soft[0], torch.tensor([kept, 0, 0, 1 - kept, 0]))
    replay = np.random.default_rng(0)  # the draws: lam ~ Beta(1, 1), then the box centre
    lam = replay.beta(1.0, 1.0)
    side = int(8 * math.sqrt(1 - lam))
    cy, cx = replay.integers(0, 8), replay.integers(0, 8)
    rows = np.clip([cy - side // 2, cy + side // 2], 0, 8)
    cols = np.clip([cx - side // 2, cx + side // 2], 0, 8)
    assert kept == pytest.approx(1 - (rows[1] - rows[0]) * (cols[1] - cols[0]) / 64)


def _source(cfg, n=64, n_syn=32):
    info = dataset_info(cfg.data.dataset)
    rng = np.random.default_rng(1)
    x = rng.integers(0, 256, (n, 8, 8, 3), dtype=np.uint8)
    y = rng.integers(0, 10, n).astype(np.int64)
    data = DataBundle(info, x, y, x[:0], y[:0], x[:n_syn].copy(), y[:n_syn].copy())
    sampler = MixedBatchSampler(n, n_syn, cfg.data.batch_size, cfg.data.synthetic.fraction, cfg.train.seed)
    return BatchSource(data, sampler, cfg, torch.device("cpu"))


def test_training_batch_mixes_real_and_synthetic_apart_and_labels_by_argmax():
    cfg = load_config("configs/digits.yaml", ["train.cutmix=1.0", "data.batch_size=16", "data.augment=false",
                                              "data.synthetic.fraction=0.5"])
    source = _source(cfg)
    gen = torch.Generator().manual_seed(0)
    plain_x, plain_y = source.batch(3, gen)
    x, y, soft = source.training_batch(3, torch.Generator().manual_seed(0))
    assert soft.shape == (16, 10) and torch.allclose(soft.sum(1), torch.ones(16))
    assert torch.equal(y, soft.argmax(1))  # the label PGD-AT attacks (src/attacks.py: y.argmax(dim=-1))
    for part in (slice(0, 8), slice(8, 16)):  # each half mixed only with itself, in reverse order
        changed = x[part] != plain_x[part]
        assert torch.equal(x[part][changed], plain_x[part].flip(0)[changed])
        assert torch.isin(soft[part].nonzero()[:, 1], plain_y[part]).all()
    off = load_config("configs/digits.yaml", ["data.batch_size=16", "data.augment=false"])
    assert _source(off).training_batch(3, torch.Generator())[2] is None


class _Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.bn, self.fc = nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.Linear(4, 10)

    def forward(self, x):
        return self.fc(F.relu(self.bn(self.conv(x))).mean((2, 3)))


@pytest.mark.parametrize("loss", ["at", "trades"])
def test_soft_targets_meet_the_losses_as_in_the_papers_code(loss):
    torch.manual_seed(0)
    cfg = load_config("configs/digits.yaml", [f"train.loss={loss}", "train.label_smoothing=0.1", "attack.steps=2",
                                              "attack.bn_mode=eval", "train.beta=5"])
    model = _Tiny().train()
    x = torch.rand(6, 3, 8, 8)
    hard = torch.tensor([0, 1, 2, 3, 4, 5])
    soft = 0.7 * F.one_hot(hard, 10).float() + 0.3 * F.one_hot(hard.flip(0), 10).float()
    fresh = copy.deepcopy(model)  # the loss's own forward moves the BN running statistics
    out = compute_loss(loss, model, x, soft.argmax(1), cfg, generator=torch.Generator().manual_seed(1), soft=soft)
    # the same attack (hard labels / the KL to the clean prediction), then every CE term on the mixed target
    model = fresh
    model.eval()
    if loss == "at":
        x_adv = pgd(model, x, soft.argmax(1), eps=cfg.attack.eps, step_size=cfg.attack.step_size, steps=2,
                    generator=torch.Generator().manual_seed(1))
        model.train()
        want = F.cross_entropy(model(x_adv), soft, label_smoothing=0.1)
    else:
        with torch.no_grad():
            target = model(x)
        x_adv = pgd(model, x, hard, eps=cfg.attack.eps, step_size=cfg.attack.step_size, steps=2, loss="kl",
                    target_logits=target, generator=torch.Generator().manual_seed(1))
        model.train()
        clean, adv = model(x), model(x_adv)
        smoothed = soft * 0.9 + 0.01  # timm's mixup_target with smoothing 0.1: (1 - s) * mix + s / C
        natural = -(smoothed * F.log_softmax(clean, 1)).sum(1).mean()
        want = natural + 5 * F.kl_div(F.log_softmax(adv, 1), F.softmax(clean, 1), reduction="batchmean")
    assert out.loss.item() == pytest.approx(want.item(), rel=1e-5)
    hard_loss = compute_loss(loss, copy.deepcopy(fresh), x, soft.argmax(1), cfg,
                             generator=torch.Generator().manual_seed(1))
    assert hard_loss.loss.item() != pytest.approx(out.loss.item(), rel=1e-3)  # the soft targets matter


# ---------------------------------------------------------------------------------------------- BN mode, EMA


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_attack_bn_mode(mode):
    torch.manual_seed(0)
    cfg = load_config("configs/digits.yaml", [f"attack.bn_mode={mode}", "attack.steps=3"])
    model = _Tiny().train()
    model.bn.running_mean.fill_(0.3)  # running statistics far from any batch's: the two modes differ
    x, y = torch.rand(8, 3, 8, 8), torch.randint(0, 10, (8,))
    before = model.bn.running_mean.clone()
    out = compute_loss("at", model, x, y, cfg, generator=torch.Generator().manual_seed(2))
    assert model.training and model.bn.training  # the mode is restored for the update
    reference = _Tiny()
    reference.load_state_dict({**model.state_dict(), "bn.running_mean": before,
                               "bn.running_var": torch.ones(4), "bn.num_batches_tracked": torch.tensor(0)})
    if mode == "eval":
        reference.eval()
        context = torch.enable_grad()
    else:
        reference.train()
        context = frozen_bn(reference)
    with context:
        x_adv = pgd(reference, x, y, eps=cfg.attack.eps, step_size=cfg.attack.step_size, steps=3,
                    generator=torch.Generator().manual_seed(2))
    reference.train()
    with torch.no_grad():
        assert torch.allclose(out.adv_logits, reference(x_adv), atol=1e-5)
    other = "eval" if mode == "train" else "train"
    flipped = compute_loss("at", model, x, y, load_config("configs/digits.yaml", [f"attack.bn_mode={other}",
                                                                                  "attack.steps=3"]),
                           generator=torch.Generator().manual_seed(2))
    assert not torch.allclose(out.adv_logits, flipped.adv_logits, atol=1e-4)


def test_ema_without_warmup_uses_the_decay_from_the_first_step():
    model = nn.Linear(2, 2)
    assert ModelEMA(model, 0.995, warmup=False).current_decay() == 0.995  # timm's ModelEmaV2
    assert ModelEMA(model, 0.995).current_decay() == pytest.approx(0.1)  # (1 + 0) / (10 + 0)


def test_validation_from_the_test_split_takes_its_first_points():
    cfg = load_config("configs/digits.yaml", ["data.val_source=test", "data.val_size=100"])
    data = load_train_data(cfg.data)
    from robustscale.data import load_arrays

    test_x, test_y = load_arrays("digits", "test")
    assert len(data.train_x) == 1437  # nothing held out of training, as the paper trained on all 50k
    assert np.array_equal(data.val_x, test_x[:100]) and np.array_equal(data.val_y, test_y[:100])


def test_trades_start_uniform_fills_the_ball_normal_stays_near_x():
    torch.manual_seed(0)
    model = _Tiny().eval()
    x = torch.rand(16, 3, 8, 8) * 0.5 + 0.25  # away from the box edges, so the start is not clipped
    with torch.no_grad():
        target = model(x)
    starts = {}
    for kind in ("uniform", "normal"):  # one step of size 0: the attack returns its (projected) start
        starts[kind] = pgd(model, x, torch.zeros(16, dtype=torch.long), eps=0.1, step_size=0.0, steps=1, loss="kl",
                           target_logits=target, generator=torch.Generator().manual_seed(3), kl_start=kind) - x
    assert starts["uniform"].abs().max() > 0.09 and starts["uniform"].abs().max() <= 0.1 + 1e-6
    assert starts["normal"].abs().max() < 0.01  # 0.001 * N(0, I), Zhang et al.
