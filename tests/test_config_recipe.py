"""Config keys of the paper's recipe: what `null` means, and the combinations refused in one line naming the key."""

import pytest

from robustscale.cli import main
from robustscale.config import load_config
from robustscale.errors import ConfigError


def test_step_size_null_is_factor_times_eps_over_steps():
    madry = load_config("configs/digits.yaml", ["attack.eps=0.3", "attack.steps=3", "attack.step_size=null"])
    assert madry.attack.step_size == pytest.approx(2.5 * 0.3 / 3)
    paper = load_config("configs/digits.yaml", ["attack.eps=8/255", "attack.steps=1", "attack.step_size=null",
                                                "attack.step_size_factor=1.5"])
    assert paper.attack.step_size == pytest.approx(1.5 * 8 / 255)  # not a full-size FGSM step at K=1
    given = load_config("configs/digits.yaml", ["attack.step_size=0.01", "attack.step_size_factor=1.5"])
    assert given.attack.step_size == 0.01


@pytest.mark.parametrize("overrides, key", [
    (["train.loss=trades", "attack.random_start=false"], "attack.random_start"),
    (["train.epochs=10", "train.cooldown_epochs=10"], "train.cooldown_epochs"),
    (["train.epochs=10", "train.warmup_epochs=6", "train.cooldown_epochs=5"], "train.warmup_epochs"),
    (["train.epochs=10", "train.milestones=[3, 10]"], "train.milestones"),
    (["attack.bn_mode=frozen"], "attack.bn_mode"),
    (["train.cutmix=-1"], "train.cutmix"),
    (["data.val_source=val"], "data.val_source"),
    (["train.lr_base_size=0"], "train.lr_base_size"),
])
def test_refused_recipes_name_the_key(overrides, key, assert_one_line):
    with pytest.raises(ConfigError) as err:
        load_config("configs/digits.yaml", overrides)
    assert key in assert_one_line(err.value)


def test_trades_without_random_start_fails_at_the_cli_with_status_2(capsys, assert_one_line):
    assert main(["config", "configs/digits.yaml", "train.loss=trades", "attack.random_start=false"]) == 2
    assert "attack.random_start" in assert_one_line(capsys.readouterr().err)


def test_at_without_random_start_and_trades_with_it_are_fine():
    assert not load_config("configs/digits.yaml", ["attack.random_start=false"]).attack.random_start
    assert load_config("configs/digits.yaml", ["train.loss=trades"]).attack.random_start
