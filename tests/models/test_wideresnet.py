"""WideResNets built without timm and registered into it on request, any timm model behind Normalize, parameter
counts on the meta device. (That a WideResNet's run imports neither timm nor torchvision: tests/tracking.)"""

import pytest
import timm
import torch
from torch import nn

from robustscale.errors import ConfigError
from robustscale.models import WideResNet, count_params, create_model, register_wrn, register_wrns, wrn_params

REGISTERED = register_wrns()
ACT_NAMES = {"GELU", "ReLU", "SiLU", "GELUTanh", "QuickGELU"}  # torch's or timm's own classes, by name


def _acts(model):
    return [type(m).__name__ for m in model.modules() if type(m).__name__ in ACT_NAMES]


def _wrn_params(depth, width, num_classes=10, in_chans=3):
    """Parameter count of a pre-activation WRN, from its definition (not from the code under test)."""
    n = (depth - 4) // 6
    widths = [16, 16 * width, 32 * width, 64 * width]
    total = in_chans * 16 * 9
    for g in range(3):
        for i in range(n):
            cin, cout = (widths[g] if i == 0 else widths[g + 1]), widths[g + 1]
            total += 2 * cin + cin * cout * 9 + 2 * cout + cout * cout * 9
            if cin != cout or (i == 0 and g > 0):
                total += cin * cout
    return total + 2 * widths[3] + widths[3] * num_classes + num_classes


def test_paper_model_sizes():
    assert count_params("wrn_28_10") == 36_479_194
    assert count_params("wrn_70_16") == 266_796_506
    assert count_params("wrn_28_10", num_classes=100) == 36_479_194 + 640 * 90 + 90


def test_registry_holds_the_paper_sizes():
    assert {"wrn_28_10", "wrn_34_10", "wrn_34_20", "wrn_70_16", "wrn_16_4", "wrn_10_1"} <= set(REGISTERED)
    assert set(REGISTERED) <= set(timm.list_models("wrn_*"))


@pytest.mark.parametrize("act, style", [("relu", "robustbench"), ("gelu", "robustbench"), ("silu", "deepmind")])
def test_ours_and_timms_build_the_same_network(act, style):
    """Built here or by ``timm.create_model`` after registration: the same modules, the same weights from a seed."""
    torch.manual_seed(0)
    ours = create_model("wrn_16_2", num_classes=7, act_layer=act, style=style).model
    torch.manual_seed(0)
    theirs = timm.create_model("wrn_16_2", num_classes=7, act_layer=act, style=style)
    assert [type(m).__name__ for m in ours.modules()] == [type(m).__name__ for m in theirs.modules()]
    a, b = ours.state_dict(), theirs.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    x = torch.rand(2, 3, 8, 8)
    assert torch.equal(ours.eval()(x), theirs.eval()(x))


@pytest.mark.parametrize("name", REGISTERED)
def test_every_registered_wrn_builds_on_meta(name):
    depth, width = (int(p) for p in name.split("_")[1:])
    with torch.device("meta"):
        model = timm.create_model(name, num_classes=7, act_layer="gelu")
    assert isinstance(model, WideResNet)
    blocks = [m for m in model.modules() if type(m).__name__ == "_Block"]
    assert len(blocks) == 3 * (depth - 4) // 6
    assert model.head.in_features == 64 * width and model.head.out_features == 7
    assert sum(p.numel() for p in model.parameters()) == _wrn_params(depth, width, num_classes=7)
    acts = _acts(model)
    assert len(acts) == 2 * len(blocks) + 1 and set(acts) == {"GELU"}


def test_timm_create_model_act_layer_gelu():
    with torch.device("meta"):
        gelu = timm.create_model("wrn_28_10", num_classes=10, act_layer="gelu")
        relu = timm.create_model("wrn_28_10", num_classes=10)
    assert _acts(gelu) == ["GELU"] * (2 * 12 + 1)  # two per block, one before the head
    assert _acts(relu) == ["ReLU"] * (2 * 12 + 1)


def _train_step(model, size):
    model.train()
    x = torch.rand(4, 3, size, size, generator=torch.Generator().manual_seed(0))
    y = torch.tensor([0, 1, 2, 3])
    logits = model(x)
    assert logits.shape == (4, 10) and torch.isfinite(logits).all()
    nn.functional.cross_entropy(logits, y).backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert sum(g.abs().sum() for g in grads) > 0


@pytest.mark.parametrize("name,size,act", [("wrn_10_1", 8, "gelu"), ("wrn_16_4", 8, "gelu"), ("wrn_10_1", 32, "relu"),
                                           ("resnet18", 32, "gelu")])
def test_forward_backward_on_cpu(name, size, act):
    model = create_model(name, num_classes=10, act_layer=act)
    assert set(_acts(model)) == {"GELU" if act == "gelu" else "ReLU"}
    _train_step(model, size)


def test_any_valid_wrn_builds_and_registers_on_request():
    model = create_model("wrn_40_2", num_classes=10)
    assert not timm.is_model("wrn_40_2")
    assert register_wrn(40, 2) == "wrn_40_2" and timm.is_model("wrn_40_2")
    assert len(model.model.blocks) == 18 and model.model.head.in_features == 128
    assert count_params("wrn_40_2") == _wrn_params(40, 2)
    model.eval()
    assert model(torch.rand(2, 3, 8, 8)).shape == (2, 10)


@pytest.mark.parametrize("name", ["wrn_11_2", "wrn_4_1", "wrn_28_0", "not_a_model"])
def test_invalid_names_are_config_errors(name, assert_one_line):
    with pytest.raises(ConfigError) as err:
        create_model(name)
    assert name in assert_one_line(err.value)
    assert not timm.is_model(name)


def test_normalisation_is_inside_the_model():
    mean, std = (0.5, 0.25, 0.125), (0.5, 0.5, 0.25)
    model = create_model("wrn_10_1", mean=mean, std=std)
    x = torch.rand(2, 3, 8, 8)
    expected = (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    assert torch.allclose(model.normalize(x), expected)
    model.eval()
    assert torch.allclose(model(x), model.model(expected), atol=1e-6)
    state = model.state_dict()
    assert "normalize.mean" in state and "normalize.std" in state
    assert not any(n.startswith("normalize") for n, _ in model.named_parameters())  # buffers, not trained


def test_in_chans_slices_the_statistics():
    model = create_model("wrn_10_1", in_chans=1, mean=(0.3, 0.3, 0.3), std=(0.4, 0.4, 0.4))
    assert model.normalize.mean.shape == (1, 1, 1, 1)
    model.eval()
    assert model(torch.rand(2, 1, 8, 8)).shape == (2, 10)


@pytest.mark.parametrize("depth, width, classes", [(10, 1, 10), (16, 4, 10), (28, 10, 100), (70, 16, 10)])
def test_wrn_params_counts_what_the_built_model_holds(depth, width, classes):
    assert wrn_params(depth, width, num_classes=classes) == count_params(f"wrn_{depth}_{width}", num_classes=classes)
