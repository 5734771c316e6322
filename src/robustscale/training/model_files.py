"""A run's model files: the model its config describes, saved as safetensors with the resolved config in the file's
metadata, and loaded back from a run folder or a file without executing anything in it.

``models/`` builds models by name and knows nothing of the config; this module turns a config into that call and a
model file back into its config and weights.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from robustscale._version import __version__
from robustscale.config import Config, config_from_dict, config_to_dict
from robustscale.datasets import dataset_info
from robustscale.errors import UserError
from robustscale.models import NormalizedModel, create_model
from robustscale.store.atomic import atomic_path
from robustscale.store.safe_json import loads

__all__ = ["create_from_config", "save_model", "load_model", "MODEL_FORMAT"]

MODEL_FORMAT = "robustscale-model-1"


def create_from_config(cfg: Config) -> NormalizedModel:
    """The model a :class:`~robustscale.config.Config` describes, for its dataset, normalised by ``data.mean`` /
    ``data.std`` or, where those are null, by the dataset's own statistics."""
    info = dataset_info(cfg.data.dataset)
    return create_model(cfg.model.name, num_classes=info.num_classes, in_chans=info.channels,
                        act_layer=cfg.model.act_layer, mean=tuple(cfg.data.mean or info.mean),
                        std=tuple(cfg.data.std or info.std), **cfg.model.kwargs)


def _state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    model = getattr(model, "module", model)  # DDP
    model = getattr(model, "_orig_mod", model)  # torch.compile
    return {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}


def save_model(path: str | Path, model: nn.Module, cfg: Config) -> Path:
    """Save weights (and BN buffers) as safetensors, with the resolved config in the file's metadata."""
    meta = {"config": json.dumps(config_to_dict(cfg)), "robustscale": __version__, "format": MODEL_FORMAT}
    with atomic_path(path, suffix=".safetensors") as tmp:
        save_file(_state_dict(model), str(tmp), metadata=meta)
    return Path(path)


def load_model(path: str | Path, device: torch.device | str = "cpu", which: str = "best") -> NormalizedModel:
    """An eval-mode model taking [0, 1] inputs, from a run folder (its ``best`` weights: the EMA ones when EMA was
    on) or a ``.safetensors`` checkpoint. Reads tensors and JSON only: nothing in the file is executed. The model
    carries its config as ``model.config``."""
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
        cfg = config_from_dict(loads(meta["config"], f"{file} (its config metadata)"))
        model = create_from_config(cfg)
        model.load_state_dict(load_file(str(file), device="cpu"))
    except (OSError, ValueError, RuntimeError, SafetensorError, json.JSONDecodeError) as err:
        if isinstance(err, UserError):
            raise
        raise UserError(f"cannot read model file '{file}': {str(err).splitlines()[0]}") from None
    model.config = cfg
    return model.to(device).eval()
