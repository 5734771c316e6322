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
from robustscale.attacks.autoattack import attack_list
from robustscale.config import Config
from robustscale.datasets import dataset_info
from robustscale.enums import AutoAttackVersion
from robustscale.errors import ConfigError, shown
from robustscale.models import check_model_builds, check_model_name

__all__ = ["load_config", "config_from_dict", "check_model", "check_autoattack"]


def check_model(cfg: Config) -> Config:
    """``cfg`` when its model is a timm model that builds and takes the dataset's images; else a one-line
    :class:`~robustscale.errors.ConfigError` naming ``model.name`` or ``model.kwargs``."""
    info = dataset_info(cfg.data.dataset)
    check_model_name(cfg.model.name)
    check_model_builds(cfg.model.name, cfg.model.kwargs, cfg.model.act_layer, in_chans=info.channels,
                       image_size=cfg.data.image_size, num_classes=info.num_classes)
    return cfg


def check_autoattack(cfg: Config) -> Config:
    """``cfg`` when ``eval.autoattack_attacks`` names distinct attacks of ``eval.autoattack``'s version (pyautoattack
    knows which), so the subset fails when the config is read, not after training."""
    only, version = cfg.eval.autoattack_attacks, cfg.eval.autoattack
    if only is None or version is AutoAttackVersion.none:
        return cfg
    full = attack_list(version, None, cfg.attack.norm)[1]
    names = [str(a) for a in only]
    if len(set(names)) != len(names) or not set(names) <= set(full):
        raise ConfigError(f"config key 'eval.autoattack_attacks': {version}'s attacks are {', '.join(full)}; name "
                          f"distinct ones of them (got {shown(', '.join(names))})")
    return cfg


def config_from_dict(raw: dict[str, Any]) -> Config:
    """:func:`robustscale.config.config_from_dict`, then :func:`check_model` and :func:`check_autoattack`."""
    return check_autoattack(check_model(schema.config_from_dict(raw)))


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """:func:`robustscale.config.load_config` (YAML and ``section.key=value`` overrides), then :func:`check_model`
    and :func:`check_autoattack`."""
    return check_autoattack(check_model(schema.load_config(path, overrides)))
