"""Models: pre-activation WideResNets registered into timm, any other timm model, normalisation inside the model.

``create_model`` returns a module that takes images in [0, 1]. Importing this package registers the paper's
WideResNets into timm (``timm.create_model("wrn_28_10")``). A run's model files (the model a config describes,
saved and loaded as safetensors) are :mod:`robustscale.training.model_files`.
"""

from robustscale.models.factory import check_model_builds, check_model_name, count_params, create_model
from robustscale.models.normalize import Normalize, NormalizedModel
from robustscale.models.wideresnet import WideResNet, parse_wrn_name, register_wrn, wrn_params

__all__ = ["WideResNet", "Normalize", "NormalizedModel", "create_model", "count_params", "register_wrn", "wrn_params",
           "parse_wrn_name", "check_model_name", "check_model_builds"]
