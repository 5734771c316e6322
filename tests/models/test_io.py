"""save_model / load_model: safetensors files carrying their own config; nothing in a file is executed."""

import pytest
import torch
from safetensors.torch import save_file

from robustscale.config import load_config
from robustscale.errors import UserError
from robustscale.training.model_files import create_from_config, load_model, save_model


@pytest.fixture
def trained(digits_yaml):
    """A digits WRN-10-1 whose BN statistics and normalisation buffers differ from a freshly built one."""
    cfg = load_config(digits_yaml, ["model.name=wrn_10_1", "model.act_layer=gelu"])
    torch.manual_seed(0)
    model = create_from_config(cfg)
    model.train()
    with torch.no_grad():
        model(torch.rand(16, 3, 8, 8))  # move BN running stats off their initial values
        model.normalize.mean.fill_(0.25)
        model.normalize.std.fill_(0.5)
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    return cfg, model.eval()


def _same_outputs(a, b):
    x = torch.rand(8, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        return torch.equal(a(x), b(x))


def test_round_trip_through_a_file(tmp_path, trained):
    cfg, model = trained
    path = save_model(tmp_path / "m.safetensors", model, cfg)
    assert path.is_file() and sorted(p.name for p in tmp_path.iterdir()) == ["m.safetensors"]
    loaded = load_model(path)
    assert not loaded.training
    assert loaded.config == cfg
    assert _same_outputs(model, loaded)
    assert torch.all(loaded.normalize.mean == 0.25) and torch.all(loaded.normalize.std == 0.5)
    for (k, v), (k2, v2) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert k == k2 and torch.equal(v, v2), k


def test_round_trip_through_a_run_folder(tmp_path, trained):
    cfg, model = trained
    save_model(tmp_path / "run" / "best.safetensors", model, cfg)
    loaded = load_model(tmp_path / "run")
    assert loaded.config == cfg and not loaded.training and _same_outputs(model, loaded)


def test_run_folder_prefers_best_and_falls_back_to_last(tmp_path, trained):
    cfg, model = trained
    other = create_from_config(cfg).eval()
    save_model(tmp_path / "run" / "last.safetensors", other, cfg)
    assert _same_outputs(other, load_model(tmp_path / "run"))
    save_model(tmp_path / "run" / "best.safetensors", model, cfg)
    assert _same_outputs(model, load_model(tmp_path / "run"))
    assert _same_outputs(other, load_model(tmp_path / "run", which="last"))


def test_missing_model_is_a_user_error(tmp_path, assert_one_line):
    with pytest.raises(UserError) as err:
        load_model(tmp_path / "nothing.safetensors")
    assert "nothing.safetensors" in assert_one_line(err.value)
    (tmp_path / "empty_run").mkdir()
    with pytest.raises(UserError):
        load_model(tmp_path / "empty_run")


def test_safetensors_without_robustscale_metadata(tmp_path, assert_one_line):
    path = tmp_path / "foreign.safetensors"
    save_file({"w": torch.zeros(3)}, str(path), metadata={"format": "pt"})
    with pytest.raises(UserError) as err:
        load_model(path)
    assert "foreign.safetensors" in assert_one_line(err.value)


def test_weights_that_do_not_fit_the_config(tmp_path, trained, assert_one_line):
    cfg, _ = trained
    wider = create_from_config(load_config(None, ["model.name=wrn_10_2"]))
    save_model(tmp_path / "mismatch.safetensors", wider, cfg)  # the config says wrn_10_1
    with pytest.raises(UserError) as err:
        load_model(tmp_path / "mismatch.safetensors")
    assert "mismatch.safetensors" in assert_one_line(err.value)


@pytest.mark.parametrize("content", [b"garbage!" * 8, b"", (10**6).to_bytes(8, "little") + b"{}"],
                         ids=["garbage", "empty", "truncated-header"])
def test_garbage_file_is_a_user_error(tmp_path, content):
    path = tmp_path / "garbage.safetensors"
    path.write_bytes(content)
    with pytest.raises(UserError) as err:
        load_model(path)
    assert len(str(err.value).splitlines()) == 1
