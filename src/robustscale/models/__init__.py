"""Models: pre-activation WideResNets (built without importing timm), any timm model, normalisation inside the model.

``create_model`` returns a module that takes images in [0, 1]. ``register_wrns()`` registers the paper's
WideResNets into timm (then ``timm.create_model("wrn_28_10")``). A run's model files (the model a config describes,
saved and loaded as safetensors) are :mod:`robustscale.training.model_files`.

Every name is imported on first use (PEP 562): the WideResNets' names and sizes (:mod:`~robustscale.models.sizes`)
without torch, which the analysis reads; ``register_wrn`` and ``register_wrns`` import timm.
"""

from robustscale._lazy import attribute

__all__ = ["WideResNet", "Normalize", "NormalizedModel", "create_model", "count_params", "register_wrn",
           "register_wrns", "wrn_params", "parse_wrn_name", "check_model_name", "check_model_builds", "PAPER_SIZES"]

_LAZY = {  # public name -> the module defining it
    **dict.fromkeys(["create_model", "count_params", "check_model_name", "check_model_builds"],
                    "robustscale.models.factory"),
    **dict.fromkeys(["Normalize", "NormalizedModel"], "robustscale.models.normalize"),
    **dict.fromkeys(["PAPER_SIZES", "parse_wrn_name", "wrn_params"], "robustscale.models.sizes"),
    "WideResNet": "robustscale.models.wideresnet",
    **dict.fromkeys(["register_wrn", "register_wrns"], "robustscale.models.timm_models"),
}


def __getattr__(name: str):
    return attribute(__name__, _LAZY, globals(), name)
