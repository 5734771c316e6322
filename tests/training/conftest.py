import pytest

from robustscale.config import load_config

TINY = ["model.name=wrn_10_1", "data.val_size=100", "eval.pgd_steps=5", "eval.autoattack=none", "train.epochs=3"]


@pytest.fixture
def tiny_cfg():
    """A digits config that trains in a few seconds (3 epochs of WRN-10-1, 2-step attack)."""

    def make(*overrides):
        return load_config("configs/digits.yaml", [*TINY, "attack.steps=2", "attack.step_size=0.1", *overrides])

    return make
