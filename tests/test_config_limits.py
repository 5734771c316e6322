"""Values the types allow but a run crashed on are refused when the config is read, in one line naming the key.

Items 2 (model names validated in full), 12 (values that crashed a run) and 13 (eps blamed on step_size) of issue 20.
Each case crashed the landed code with a traceback (or, for model names, escaped the sweep's output folder).
"""

import pytest

from robustscale.errors import ConfigError
from robustscale.training.run_config import load_config  # the schema, then the model checks a run needs


@pytest.mark.parametrize("overrides, key", [
    (["train.seed=4294967296"], "train.seed"),  # numpy: "Seed must be between 0 and 2**32 - 1"
    (["data.val_size=0"], "data.val_size"),  # pgd_accuracy needs at least one example
    (["data.batch_size=1099511627776"], "data.batch_size"),  # tried to allocate 8.8 TB
    (["train.warmup_epochs=1e308"], "train.warmup_epochs"),  # OverflowError in the schedule
    (["eval.batch_size=100000000000000000000"], "eval.batch_size"),
    (["attack.eps=1.0e+308"], "attack.eps"),  # blamed 'step_size', without its section
    (["attack.norm=l2", "attack.eps=1000"], "attack.eps"),
    (["attack.step_size=1e300"], "attack.step_size"),
    (["model.kwargs={drop_rate: {a: 1}}"], "model.kwargs"),  # unhashable dict in the FLOP counter's cache
    (["model.kwargs={num_classes: 3}"], "model.kwargs"),  # create_model() got multiple values for num_classes
    (["model.kwargs={checkpoint_path: /etc/passwd}"], "model.kwargs"),  # timm would torch.load (unpickle) it
    (["model.kwargs={drop_rate: abc}"], "model.kwargs"),  # '<' not supported between str and float
    (["model.name=vit_tiny_patch16_224"], "model.name"),  # AssertionError at the first 8x8 batch
    (["model.name=resnet18./../../../escaped"], "model.name"),  # passed timm's check, escaped --out
    (["model.name=a\nb"], "model.name"),
])
def test_values_that_crashed_a_run_are_one_line_config_errors(overrides, key, assert_one_line):
    with pytest.raises(ConfigError) as err:
        load_config("configs/digits.yaml", overrides)
    message = assert_one_line(err.value)
    assert key in message, message


def test_eps_message_names_its_section(assert_one_line):
    with pytest.raises(ConfigError) as err:
        load_config(None, ["attack.eps=1.0e+308"])
    assert "'attack.eps'" in assert_one_line(err.value) and "step_size" not in str(err.value)


RESERVED = ["act_layer", "cache_dir", "checkpoint_path", "features_only", "in_chans", "num_classes", "pretrained",
            "pretrained_cfg", "pretrained_cfg_overlay"]


def test_the_reserved_list_is_the_one_the_config_enforces():
    from robustscale.config_checks import RESERVED_MODEL_KWARGS

    assert sorted(RESERVED_MODEL_KWARGS) == RESERVED


@pytest.mark.parametrize("key", RESERVED)
def test_every_reserved_model_kwarg_is_refused(key):
    with pytest.raises(ConfigError, match=key):
        load_config(None, [f"model.kwargs={{{key}: 1}}"])


def test_limits_leave_the_paper_values_alone():
    cfg = load_config("configs/gowal2020_wrn70_16.yaml")
    assert cfg.attack.eps == pytest.approx(8 / 255)
    cfg = load_config(None, ["attack.norm=l2", "attack.eps=0.5", "train.seed=4294967295", "data.batch_size=65536",
                             "train.warmup_epochs=100", "train.epochs=100", "model.kwargs={drop_rate: 0.1}"])
    assert cfg.train.seed == 2**32 - 1 and cfg.attack.eps == 0.5


def test_a_vit_at_its_own_size_is_accepted():
    """The meta-device forward refuses what cannot run, not what is unusual."""
    cfg = load_config(None, ["data.dataset=cifar10", "model.name=vit_tiny_patch16_224", "model.act_layer=null",
                             "model.kwargs={img_size: 32, patch_size: 4}"])
    assert cfg.model.kwargs["img_size"] == 32
