"""Models: pre-activation WideResNets registered into timm, any other timm model, normalisation inside the model.

``create_model`` returns a module that takes images in [0, 1]; ``save_model`` / ``load_model`` move it through
safetensors files that carry their own config, so loading never executes code from a file.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from robustscale.errors import ConfigError, UserError
from robustscale.models.normalize import Normalize, NormalizedModel
from robustscale.models.wideresnet import WideResNet, parse_wrn_name, register_wrn, wrn_params

__all__ = ["WideResNet", "Normalize", "NormalizedModel", "create_model", "create_from_config", "count_params",
           "save_model", "load_model", "register_wrn", "wrn_params"]


def check_model_name(name: str) -> None:
    """Raise a one-line :class:`ConfigError` unless ``name`` is a timm model (``wrn_D_W`` registered on demand)."""
    import timm

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
    """Build ``name`` from timm's registry (``wrn_D_W`` registered on demand) behind a :class:`Normalize`."""
    import timm

    check_model_name(name)
    try:
        net = timm.create_model(name, pretrained=False, num_classes=num_classes, in_chans=in_chans,
                                act_layer=act_layer, **kwargs)
    except TypeError as err:
        raise ConfigError(f"model: timm model '{name}' rejected an option ({err}); set model.act_layer=null or "
                          "remove the model.kwargs it does not take") from None
    return NormalizedModel(net, mean[:in_chans], std[:in_chans])


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
