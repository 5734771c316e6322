"""robustscale: scaling laws for adversarial robustness.

Train adversarially robust classifiers over the paper's knobs, evaluate them with PGD and AutoAttack, account for
every run's FLOPs, energy, cost and CO2, sweep whole grids, and fit the laws that say what more compute buys.

``import robustscale`` is instant (the command line's ``--help`` must not wait for torch): the names below are
imported on first use (PEP 562). ``load_config`` is the one a run uses (schema and model checks).
"""

from robustscale._lazy import attribute
from robustscale._version import __version__

__all__ = ["__version__", "Config", "load_config", "load_data", "create_model", "load_model"]

_LAZY = {  # public name -> the module defining it
    "Config": "robustscale.config",
    "load_config": "robustscale.training.run_config",
    "load_data": "robustscale.data",
    "create_model": "robustscale.models",
    "load_model": "robustscale.training.model_files",
}


def __getattr__(name: str):
    return attribute(__name__, _LAZY, globals(), name)
