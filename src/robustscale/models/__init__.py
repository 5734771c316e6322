"""Models: pre-activation WideResNets registered into timm, any other timm model, normalisation inside the model.

``create_model`` returns a module that takes images in [0, 1]; ``save_model`` / ``load_model`` move it through
safetensors files that carry their own config, so loading never executes code from a file.
"""

from __future__ import annotations

import json
import re
from functools import lru_cache
from pathlib import Path

import torch
from torch import nn

from robustscale.errors import ConfigError, UserError, shown
from robustscale.models.normalize import Normalize, NormalizedModel
from robustscale.models.wideresnet import WideResNet, parse_wrn_name, register_wrn, wrn_params

__all__ = ["WideResNet", "Normalize", "NormalizedModel", "create_model", "create_from_config", "count_params",
           "save_model", "load_model", "register_wrn", "wrn_params", "check_model_name", "check_model_builds"]


_MODEL_NAME = re.compile(r"[A-Za-z0-9_]{1,100}(\.[A-Za-z0-9_]{1,100})?")  # timm: architecture[.pretrained_tag]


def check_model_name(name: str) -> None:
    """Raise a one-line :class:`ConfigError` unless ``name`` is a timm model (``wrn_D_W`` registered on demand).

    The whole name is checked, not just what timm looks at: timm stops at the first dot (a pretrained tag), so
    ``resnet18./../../x`` would pass its check and then name a run folder outside the sweep's output.
    """
    import timm

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


def create_model(name: str, *, num_classes: int = 10, in_chans: int = 3, act_layer: str | None = None,
                 mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), **kwargs) -> NormalizedModel:
    """Build ``name`` from timm's registry (``wrn_D_W`` registered on demand) behind a :class:`Normalize`.

    Raises:
        ConfigError: timm cannot build the model with these options (a wrong type or value in ``model.kwargs``).
    """
    import timm

    check_model_name(name)
    try:
        net = timm.create_model(name, pretrained=False, num_classes=num_classes, in_chans=in_chans,
                                act_layer=act_layer, **kwargs)
    except TypeError as err:
        raise ConfigError(f"model: timm model '{name}' rejected an option ({shown(err)}); set model.act_layer=null "
                          "or remove the model.kwargs it does not take") from None
    except Exception as err:  # third-party constructors fail every way on a bad value: the kwargs are user input
        raise ConfigError(f"model: timm could not build '{name}' with model.kwargs {shown(kwargs)} "
                          f"({type(err).__name__}: {shown(err)}); fix or remove those kwargs") from None
    return NormalizedModel(net, mean[:in_chans], std[:in_chans])


def check_model_builds(name: str, kwargs: dict, act_layer: str | None, *, in_chans: int, image_size: int,
                       num_classes: int) -> None:
    """Build the model on the meta device and run one forward at the dataset's image size, so a model that cannot
    take these images (``vit_tiny_patch16_224`` asserts 224x224 inputs) or its kwargs fails when the config is read,
    not in the middle of a run. No memory is allocated; results are cached per distinct model."""
    problem = _build_problem(name, json.dumps(kwargs, sort_keys=True), act_layer, in_chans, image_size, num_classes)
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


def create_from_config(cfg) -> NormalizedModel:
    """The model a :class:`robustscale.config.Config` describes, for its dataset."""
    from robustscale.data.registry import dataset_info

    info = dataset_info(cfg.data.dataset)
    act = cfg.model.act_layer.value if cfg.model.act_layer is not None else None
    return create_model(cfg.model.name, num_classes=info.num_classes, in_chans=info.channels, act_layer=act,
                        mean=info.mean, std=info.std, **cfg.model.kwargs)


def count_params(name: str, num_classes: int = 10, **kwargs) -> int:
    """Parameter count of ``name`` (built on the meta device: WRN-70-16 costs no memory)."""
    with torch.device("meta"):
        model = create_model(name, num_classes=num_classes, **kwargs)
    return sum(p.numel() for p in model.parameters())


def _state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    model = getattr(model, "module", model)  # DDP
    model = getattr(model, "_orig_mod", model)  # torch.compile
    return {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}


def save_model(path: str | Path, model: nn.Module, cfg) -> Path:
    """Save weights (and BN buffers) as safetensors, with the resolved config in the file's metadata."""
    from safetensors.torch import save_file

    from robustscale import __version__
    from robustscale.config import config_to_dict
    from robustscale.store.atomic import atomic_path

    meta = {"config": json.dumps(config_to_dict(cfg)), "robustscale": __version__, "format": "robustscale-model-1"}
    with atomic_path(path, suffix=".safetensors") as tmp:
        save_file(_state_dict(model), str(tmp), metadata=meta)
    return Path(path)


def load_model(path: str | Path, device: torch.device | str = "cpu", which: str = "best") -> NormalizedModel:
    """An eval-mode model taking [0, 1] inputs, from a run folder (its ``best`` weights: the EMA ones when EMA was
    on) or a ``.safetensors`` checkpoint. Reads tensors and JSON only: nothing in the file is executed."""
    from safetensors import SafetensorError, safe_open
    from safetensors.torch import load_file

    from robustscale.config import config_from_dict

    path = Path(path)
    file = path / f"{which}.safetensors" if path.is_dir() else path
    if path.is_dir() and not file.exists():
        file = path / "last.safetensors"
    if not file.is_file():
        raise UserError(f"no model at '{path}': pass a run folder (with best.safetensors) or a .safetensors file")
    try:
        with safe_open(str(file), framework="pt") as fh:
            meta = fh.metadata() or {}
        if "config" not in meta:
            raise UserError(f"'{file}' has no robustscale config in its metadata: was it saved by robustscale?")
        cfg = config_from_dict(json.loads(meta["config"]))
        model = create_from_config(cfg)
        model.load_state_dict(load_file(str(file), device="cpu"))
    except (OSError, ValueError, RuntimeError, SafetensorError, json.JSONDecodeError) as err:
        if isinstance(err, UserError):
            raise
        raise UserError(f"cannot read model file '{file}': {str(err).splitlines()[0]}") from None
    model.config = cfg
    return model.to(device).eval()
