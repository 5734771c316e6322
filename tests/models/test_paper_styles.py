"""The two WideResNet implementations of the paper's grid (``model.kwargs.style``), pinned against the paper's code
(dedeswim/timm-adv-training at 7dc497a): its ReLU arm is ``src/models/wide_resnet.py`` (TRADES/RobustBench), its SiLU
arm ``src/models/wide_resnet_deepmind.py`` (Gowal et al.)."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from robustscale.models import create_model
from robustscale.models.folded import fold_batchnorm


def _convs(model):
    return [m for m in model.modules() if isinstance(m, nn.Conv2d)]


def test_robustbench_style_initialises_as_the_relu_arm():
    """``wide_resnet.py``, ``WideResNet.__init__``: ``n = kernel_size[0] * kernel_size[1] * out_channels;
    m.weight.data.normal_(0, math.sqrt(2. / n))``, BN weight 1 / bias 0, the classifier's bias 0 (weight left at
    PyTorch's default)."""
    torch.manual_seed(0)
    net = create_model("wrn_16_4", style="robustbench").model
    for conv in _convs(net):
        k, out = conv.kernel_size[0] * conv.kernel_size[1], conv.out_channels
        w = conv.weight.detach()
        assert w.mean().abs() < 0.1 * math.sqrt(2.0 / (k * out))
        assert w.std().item() == pytest.approx(math.sqrt(2.0 / (k * out)), rel=0.1)
    assert torch.count_nonzero(net.head.bias) == 0
    bound = 1 / math.sqrt(net.head.in_features)  # nn.Linear's default: U(-1/sqrt(fan_in), 1/sqrt(fan_in))
    assert 0 < net.head.weight.abs().max() <= bound


def test_deepmind_style_initialises_as_the_silu_arm_actually_ran():
    """``wide_resnet_deepmind.py``, ``DMWideResNet._init_weights``: ``nn.init.zeros_(self.logits.weight)``,
    ``nn.init.zeros_(self.logits.bias)``, then ``init_modules(self)``, which acts only on a module that *is* a Conv2d
    or BatchNorm2d: the root is neither, so the convolutions keep PyTorch's default, kaiming_uniform(a=sqrt(5)), i.e.
    U(-1/sqrt(fan_in), 1/sqrt(fan_in)) with std 1/sqrt(3 fan_in), never trunc_normal's std 1."""
    torch.manual_seed(0)
    net = create_model("wrn_16_4", style="deepmind").model
    for conv in _convs(net):
        fan_in = conv.in_channels * conv.kernel_size[0] * conv.kernel_size[1]
        w = conv.weight.detach()
        assert w.abs().max() <= 1 / math.sqrt(fan_in)
        if w.numel() >= 1000:
            assert w.std().item() == pytest.approx(1 / math.sqrt(3 * fan_in), rel=0.1)
    assert torch.count_nonzero(net.head.weight) == 0 and torch.count_nonzero(net.head.bias) == 0
    norms = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    assert all(torch.all(m.weight == 1) and torch.all(m.bias == 0) for m in norms)


def test_deepmind_style_pads_strided_convolutions_on_the_right_and_bottom():
    """``_Block.forward``: ``F.pad(v, (0, 1, 0, 1))`` before a stride-2 conv built with ``padding=0``; stride 1 pads
    (1, 1, 1, 1). Same weights, two styles: different functions, and the deepmind one is that computation."""
    torch.manual_seed(1)
    rb = create_model("wrn_10_1", style="robustbench").eval()
    dm = create_model("wrn_10_1", style="deepmind").eval()
    dm.load_state_dict(rb.state_dict())  # the same parameters and buffers, module for module
    x = torch.rand(4, 3, 32, 32)
    assert not torch.allclose(rb(x), dm(x), atol=1e-4)

    block = dm.model.blocks[1]  # the first block of the second group: stride 2
    assert block.conv1.stride == (2, 2) and block.conv1.padding == (0, 0)
    o = block.act1(block.bn1(torch.rand(2, 16, 32, 32)))
    expected = F.conv2d(F.pad(o, (0, 1, 0, 1)), block.conv1.weight, None, 2, 0)
    assert torch.equal(block.conv1(F.pad(o, block.pad)), expected)
    assert expected.shape[-1] == 16  # the same output size as the symmetric padding: FLOPs are unchanged


def test_folded_copy_of_the_deepmind_style_is_the_same_function():
    torch.manual_seed(2)
    model = create_model("wrn_10_1", style="deepmind", act_layer="silu").eval()
    with torch.no_grad():  # a trained-looking model: a non-zero classifier and non-trivial BN statistics
        model.model.head.weight.normal_()
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    folded = fold_batchnorm(model)
    x = torch.rand(3, 3, 32, 32)
    assert folded is not None
    assert torch.allclose(folded(x), model(x), atol=1e-4)


def test_unknown_style_is_a_config_error(assert_one_line):
    from robustscale.errors import ConfigError

    with pytest.raises(ConfigError) as err:
        create_model("wrn_10_1", style="tf")
    assert "style" in assert_one_line(err.value)
