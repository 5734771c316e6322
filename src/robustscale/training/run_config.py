"""The config a run can use: :mod:`robustscale.config`'s schema (types, ranges, cross-field limits, dataset
defaults), then the checks that need timm and torch: the model name exists and the model builds and runs one forward
at the dataset's image size (on the meta device: no memory).

``config.py`` stays a pure schema (pydantic and YAML, nothing heavier), so it sits at the bottom of the layers; every
caller that is about to train, plan or sweep loads configs through here (:func:`load_config`,
:func:`config_from_dict`), so a bad model is one line when the config is read, not a crash mid-run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from robustscale import config as schema
from robustscale.config import Config
from robustscale.datasets import dataset_info
from robustscale.models import check_model_builds, check_model_name

__all__ = ["load_config", "config_from_dict", "check_model"]


def check_model(cfg: Config) -> Config:
    """``cfg`` when its model is a timm model that builds and takes the dataset's images; else a one-line
    :class:`~robustscale.errors.ConfigError` naming ``model.name`` or ``model.kwargs``."""
    info = dataset_info(cfg.data.dataset)
    check_model_name(cfg.model.name)
    check_model_builds(cfg.model.name, cfg.model.kwargs, cfg.model.act_layer, in_chans=info.channels,
                       image_size=cfg.data.image_size, num_classes=info.num_classes)
    return cfg


def config_from_dict(raw: dict[str, Any]) -> Config:
    """:func:`robustscale.config.config_from_dict`, then :func:`check_model`."""
    return check_model(schema.config_from_dict(raw))


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """:func:`robustscale.config.load_config` (YAML and ``section.key=value`` overrides), then :func:`check_model`."""
    return check_model(schema.load_config(path, overrides))
