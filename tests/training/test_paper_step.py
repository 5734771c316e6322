"""PGD-AT's step as the paper's code ran it (dedeswim/timm-adv-training, ``src/attacks.py``, ``AdvTrainingLoss``):

    if self.eval_mode: model.eval()
    x_adv = self.attack(model, x, y, epoch)
    model.train()
    logits, logits_adv = model(x), model(x_adv)
    loss = self.criterion(logits_adv, y)

``train.at_clean_forward`` reproduces it: BatchNorm's running statistics are updated by the clean batch and then the
adversarial one, and the clean logits are the train-mode ones. Without it only the adversarial batch updates them."""

import copy
import json

import pytest
import torch

from robustscale.attacks.pgd import pgd
from robustscale.config import load_config
from robustscale.enums import AttackLoss
from robustscale.models import create_model
from robustscale.training.losses import compute_loss


def _buffers(model):
    return {k: v.clone() for k, v in model.state_dict().items() if "running" in k or "num_batches" in k}


@pytest.mark.parametrize("clean_forward", [True, False])
def test_batchnorm_statistics_follow_the_papers_two_forwards(digits_yaml, clean_forward):
    cfg = load_config(digits_yaml, ["attack.steps=2", "attack.step_size=0.05", "attack.bn_mode=eval",
                                    f"train.at_clean_forward={clean_forward}"])
    torch.manual_seed(0)
    ours = create_model("wrn_10_1").train()
    paper = copy.deepcopy(ours)
    x, y = torch.rand(16, 3, 8, 8), torch.randint(0, 10, (16,))

    out = compute_loss("at", ours, x, y, cfg, generator=torch.Generator().manual_seed(3))

    paper.eval()  # AdvTrainingLoss(eval_mode=True), the paper's PGD-AT
    x_adv = pgd(paper, x, y, eps=cfg.attack.eps, step_size=cfg.attack.step_size, steps=2, norm=cfg.attack.norm,
                loss=AttackLoss.ce, random_start=True, generator=torch.Generator().manual_seed(3))
    paper.train()
    logits, logits_adv = paper(x), paper(x_adv)

    assert torch.allclose(out.adv_logits, logits_adv, atol=1e-6)
    ref = _buffers(paper)
    same = all(torch.allclose(v, ref[k], atol=1e-7) for k, v in _buffers(ours).items())
    assert same is clean_forward  # only the clean forward makes the statistics the paper's
    if clean_forward:
        assert torch.allclose(out.clean_logits, logits, atol=1e-6)
    else:
        assert out.clean_logits is None


def test_paper_recipe_trains_with_the_clean_forward_and_reports_clean_train_accuracy(tmp_path, digits_yaml):
    from robustscale.training import train

    cfg = load_config(digits_yaml, ["train.epochs=1", "train.max_steps=3", "data.val_size=20", "eval.pgd_steps=2",
                                    "eval.autoattack=none", "train.at_clean_forward=true"])
    record = train(cfg, tmp_path / "run", progress=False)
    row = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[0])
    assert record.status.value == "done" and row["train_clean_acc"] > 0  # PGD-AT alone reports 0: no clean logits
