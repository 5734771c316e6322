"""Building models by name: any timm model, ``wrn_D_W`` registered on demand, behind the normalisation that lets
every attack work in [0, 1] pixel units; and the checks that a name and its options build at all.

Nothing here knows the config: :mod:`robustscale.training.model_files` builds the model a config describes.
"""

from __future__ import annotations

import json
import re
from functools import lru_cache

import timm
import torch

from robustscale.enums import Activation
from robustscale.errors import ConfigError, shown
from robustscale.models.normalize import NormalizedModel
from robustscale.models.wideresnet import parse_wrn_name, register_wrn

__all__ = ["create_model", "count_params", "check_model_name", "check_model_builds"]

_MODEL_NAME = re.compile(r"[A-Za-z0-9_]{1,100}(\.[A-Za-z0-9_]{1,100})?")  # timm: architecture[.pretrained_tag]


def check_model_name(name: str) -> None:
    """Raise a one-line :class:`ConfigError` unless ``name`` is a timm model (``wrn_D_W`` registered on demand).

    The whole name is checked, not just what timm looks at: timm stops at the first dot (a pretrained tag), so
    ``resnet18./../../x`` would pass its check and then name a run folder outside the sweep's output.
    """
    if not isinstance(name, str) or not _MODEL_NAME.fullmatch(name):
        raise ConfigError(f"model.name: '{shown(name)}' is not a model name (letters, digits and underscores, "
                          "optionally .tag; e.g. wrn_28_10, resnet18)")
    wrn = parse_wrn_name(name)
    if wrn is not None:
        try:
            register_wrn(*wrn)
        except ValueError as err:
            raise ConfigError(f"model.name: {err}") from None
    if not timm.is_model(name):
        raise ConfigError(f"model.name: '{name}' is not a timm model (try wrn_28_10, wrn_16_4, resnet18; "
                          "`python -c \"import timm; print(timm.list_models())\"` lists them)")


def create_model(name: str, *, num_classes: int = 10, in_chans: int = 3, act_layer: Activation | str | None = None,
                 mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), **kwargs) -> NormalizedModel:
    """Build ``name`` from timm's registry (``wrn_D_W`` registered on demand) behind a :class:`Normalize`.

    ``act_layer`` is an :class:`~robustscale.enums.Activation` or any timm activation name; None keeps the model's.

    Raises:
        ConfigError: timm cannot build the model with these options (a wrong type or value in ``model.kwargs``).
    """
    check_model_name(name)
    try:
        net = timm.create_model(name, pretrained=False, num_classes=num_classes, in_chans=in_chans,
                                act_layer=None if act_layer is None else str(act_layer), **kwargs)
    except TypeError as err:
        raise ConfigError(f"model: timm model '{name}' rejected an option ({shown(err)}); set model.act_layer=null "
                          "or remove the model.kwargs it does not take") from None
    except Exception as err:  # third-party constructors fail every way on a bad value: the kwargs are user input
        raise ConfigError(f"model: timm could not build '{name}' with model.kwargs {shown(kwargs)} "
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
