"""Adversarial training: losses (standard, PGD-AT, TRADES), EMA, the loop, checkpoints, DDP, and a run's config
and model files."""

from robustscale.training.loop import Run, StepParts, build_step, train, train_step
from robustscale.training.model_files import create_from_config, load_model, save_model
from robustscale.training.run_config import config_from_dict, load_config

__all__ = ["train", "train_step", "build_step", "Run", "StepParts", "create_from_config", "load_model", "save_model",
           "config_from_dict", "load_config"]
