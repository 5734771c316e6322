"""Building models by name: ``wrn_D_W`` (ours, built here without importing timm) or any timm model (through
:mod:`robustscale.models.timm_models`), behind the normalisation that lets every attack work in [0, 1] pixel units;
and the checks that a name and its options build at all.

Nothing here knows the config: :mod:`robustscale.training.model_files` builds the model a config describes.
"""

from __future__ import annotations

import json
import re
from functools import lru_cache
from importlib import import_module

import torch

from robustscale.enums import Activation
from robustscale.errors import ConfigError, shown
from robustscale.models.normalize import NormalizedModel
from robustscale.models.sizes import check_wrn_size, parse_wrn_name
from robustscale.models.wideresnet import WideResNet

__all__ = ["create_model", "count_params", "check_model_name", "check_model_builds"]

_MODEL_NAME = re.compile(r"[A-Za-z0-9_]{1,100}(\.[A-Za-z0-9_]{1,100})?")  # timm: architecture[.pretrained_tag]


def _timm():
    return import_module("robustscale.models.timm_models")  # imports timm: only for a model that is not ours


def check_model_name(name: str) -> None:
    """Raise a one-line :class:`ConfigError` unless ``name`` is a valid ``wrn_D_W`` or a timm model.

    The whole name is checked, not just what timm looks at: timm stops at the first dot (a pretrained tag), so
    ``resnet18./../../x`` would pass its check and then name a run folder outside the sweep's output.
    """
    if not isinstance(name, str) or not _MODEL_NAME.fullmatch(name):
        raise ConfigError(f"model.name: '{shown(name)}' is not a model name (letters, digits and underscores, "
                          "optionally .tag; e.g. wrn_28_10, resnet18)")
    wrn = parse_wrn_name(name)
    if wrn is not None:
        try:
            check_wrn_size(*wrn)
        except ValueError as err:
            raise ConfigError(f"model.name: {err}") from None
    elif not _timm().is_model(name):
        raise ConfigError(f"model.name: '{name}' is not a timm model (try wrn_28_10, wrn_16_4, resnet18; "
                          "`python -c \"import timm; print(timm.list_models())\"` lists them)")


def create_model(name: str, *, num_classes: int = 10, in_chans: int = 3, act_layer: Activation | str | None = None,
                 mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), **kwargs) -> NormalizedModel:
    """Build ``name`` (``wrn_D_W`` here, any other model by timm) behind a :class:`Normalize`.

    ``act_layer`` is an :class:`~robustscale.enums.Activation` or any timm activation name; None keeps the model's.
    An option that is None is left out, as ``timm.create_model`` leaves it out.

    Raises:
        ConfigError: the model cannot be built with these options (a wrong type or value in ``model.kwargs``).
    """
    check_model_name(name)
    options = {"num_classes": num_classes, "in_chans": in_chans,
               "act_layer": None if act_layer is None else str(act_layer), **kwargs}
    options = {key: value for key, value in options.items() if value is not None}
    wrn = parse_wrn_name(name)
    try:
        net = WideResNet(*wrn, **options) if wrn is not None else _timm().create(name, **options)
    except TypeError as err:
        raise ConfigError(f"model: '{name}' rejected an option ({shown(err)}); set model.act_layer=null "
                          "or remove the model.kwargs it does not take") from None
    except Exception as err:  # third-party constructors fail every way on a bad value: the kwargs are user input
        raise ConfigError(f"model: could not build '{name}' with model.kwargs {shown(kwargs)} "
                          f"({type(err).__name__}: {shown(err)}); fix or remove those kwargs") from None
    return NormalizedModel(net, mean[:in_chans], std[:in_chans])


def check_model_builds(name: str, kwargs: dict, act_layer: Activation | str | None, *, in_chans: int,
                       image_size: int, num_classes: int) -> None:
    """Build the model on the meta device and run one forward at the dataset's image size, so a model that cannot
    take these images (``vit_tiny_patch16_224`` asserts 224x224 inputs) or its kwargs fails when the config is read,
    not in the middle of a run. No memory is allocated; results are cached per distinct model."""
    act = None if act_layer is None else str(act_layer)
    problem = _build_problem(name, json.dumps(kwargs, sort_keys=True), act, in_chans, image_size, num_classes)
    if problem:
        raise ConfigError(problem)


@lru_cache(maxsize=256)
def _build_problem(name: str, kwargs_json: str, act_layer: str | None, in_chans: int, image_size: int,
                   num_classes: int) -> str | None:
    try:
        with torch.device("meta"):
            model = create_model(name, num_classes=num_classes, in_chans=in_chans, act_layer=act_layer,
                                 **json.loads(kwargs_json))
    except ConfigError as err:
        return str(err)
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(2, in_chans, image_size, image_size, device="meta"))
    except NotImplementedError:  # an op with no meta kernel: nothing can be said here, the run will tell
        return None
    except Exception as err:
        options = f" with model.kwargs {shown(kwargs_json)}" if kwargs_json != "{}" else ""
        return (f"model.name: '{name}'{options} fails on {image_size}x{image_size} images ({type(err).__name__}: "
                f"{shown(err)}); check model.kwargs, or pass the image size in them (img_size: {image_size} for "
                "timm ViTs), or choose a convolutional model")
    return None


def count_params(name: str, num_classes: int = 10, **kwargs) -> int:
    """Parameter count of ``name`` (built on the meta device: WRN-70-16 costs no memory)."""
    with torch.device("meta"):
        model = create_model(name, num_classes=num_classes, **kwargs)
    return sum(p.numel() for p in model.parameters())
