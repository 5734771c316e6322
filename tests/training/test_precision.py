"""``train.precision`` becomes a dtype and an autocast context in one place (the step and the benchmark use it)."""

import pytest
import torch

from robustscale.enums import Precision
from robustscale.errors import ParameterError
from robustscale.training.precision import autocast, dtype


def test_each_precision_is_its_dtype_and_autocast():
    assert [dtype(p) for p in Precision] == [torch.float32, torch.bfloat16, torch.float16]
    with autocast(Precision.fp32, "cpu"):
        assert not torch.is_autocast_enabled("cpu")
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.float32
    with autocast("bf16", torch.device("cpu")):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.bfloat16


def test_an_unknown_precision_names_the_parameter():
    with pytest.raises(ParameterError, match="precision must be one of fp32, bf16, fp16"):
        autocast("fp8", "cpu")
