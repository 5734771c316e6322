"""robustscale: scaling laws for adversarial robustness.

Train adversarially robust classifiers over the paper's knobs, evaluate them with PGD and AutoAttack, account for
every run's FLOPs, energy, cost and CO2, sweep whole grids, and fit the laws that say what more compute buys.
"""

__version__ = "0.1.0"

from robustscale.config import Config, load_config  # noqa: E402
from robustscale.data import load_data  # noqa: E402
from robustscale.models import create_model, load_model  # noqa: E402  (registers the WRNs into timm)

__all__ = ["__version__", "Config", "load_config", "load_data", "create_model", "load_model"]
