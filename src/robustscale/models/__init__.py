"""Models: pre-activation WideResNets (built without importing timm), any timm model, normalisation inside the model.

``create_model`` returns a module that takes images in [0, 1]. ``register_wrns()`` registers the paper's
WideResNets into timm (then ``timm.create_model("wrn_28_10")``); it and ``register_wrn`` are imported on first use
(PEP 562), as they import timm. A run's model files (the model a config describes, saved and loaded as safetensors)
are :mod:`robustscale.training.model_files`.
"""

from importlib import import_module

from robustscale.models.factory import check_model_builds, check_model_name, count_params, create_model
from robustscale.models.normalize import Normalize, NormalizedModel
from robustscale.models.wideresnet import PAPER_SIZES, WideResNet, parse_wrn_name, wrn_params

__all__ = ["WideResNet", "Normalize", "NormalizedModel", "create_model", "count_params", "register_wrn", "register_wrns",
           "wrn_params", "parse_wrn_name", "check_model_name", "check_model_builds", "PAPER_SIZES"]

_LAZY = {"register_wrn": "robustscale.models.timm_models", "register_wrns": "robustscale.models.timm_models"}


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'robustscale.models' has no attribute {name!r}")
    return getattr(import_module(_LAZY[name]), name)
