"""The BatchNorm-folded inference copy of a WideResNet: the model's function (logits and input gradients), or None."""

import pytest
import torch
from torch import nn

from robustscale.models import NormalizedModel, create_model
from robustscale.models.folded import fold_batchnorm


def _trained_like(name, act="relu"):
    """A WRN in eval mode whose BatchNorms hold the statistics and affines of a trained one, not the identity."""
    torch.manual_seed(0)
    model = create_model(name, act_layer=act, mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.3))
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.3, 3.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.3, 0.3)
    return model.eval()


@pytest.mark.parametrize("name, act", [("wrn_10_1", "relu"), ("wrn_16_2", "silu")])  # 16-2: identity + 1x1 shortcuts
def test_folded_copy_computes_the_models_logits_and_input_gradients(name, act):
    model = _trained_like(name, act)
    folded = fold_batchnorm(model)
    assert folded is not None and not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    x = torch.rand(5, 3, 8, 8)
    torch.testing.assert_close(folded(x), model(x), rtol=1e-5, atol=1e-5)
    grads = []
    for net in (model, folded):
        xi = x.clone().requires_grad_(True)
        nn.functional.cross_entropy(net(xi), torch.arange(5)).backward()
        grads.append(xi.grad)
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-4, atol=1e-6)


def test_only_what_it_knows_exactly_is_folded():
    model = _trained_like("wrn_10_1")
    assert fold_batchnorm(model.train()) is None  # batch statistics: not a fixed affine map
    assert fold_batchnorm(model.eval().to(torch.bfloat16)) is None
    other = NormalizedModel(nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.LazyLinear(10)),
                            (0.5,) * 3, (0.2,) * 3).eval()
    assert fold_batchnorm(other) is None
    assert fold_batchnorm(_trained_like("wrn_10_1").model) is None  # no Normalize in front: not the model we know


def test_the_copy_does_not_follow_later_changes_to_the_model():
    """It is a snapshot for one evaluation: the caller builds it after the model is final."""
    model = _trained_like("wrn_10_1")
    folded = fold_batchnorm(model)
    x = torch.rand(3, 3, 8, 8)
    before = folded(x)
    with torch.no_grad():
        model.model.head.bias.add_(1.0)
    torch.testing.assert_close(folded(x), before)
