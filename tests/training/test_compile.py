"""``train.compile`` compiles the attack as well as the update, and changes nothing but the speed.

The compiled path goes through TorchDynamo and AOTAutograd with the ``aot_eager`` backend: the graph capture, guards
(``frozen_bn`` flips ``track_running_stats`` on the shared BatchNorm modules between the attack and the update) and
autograd are the real ones; only Inductor's C++ code generation, which takes minutes on a CPU, is left out.
"""

import functools

import pytest
import torch

from robustscale.data import step_generator
from robustscale.training.loop import build_step, train_step

BATCH = 32


def _run(cfg, steps: int = 3):
    torch.manual_seed(0)
    parts = build_step(cfg, torch.device("cpu"), steps_per_epoch=10)
    parts.model.train()
    g = torch.Generator().manual_seed(1)
    x, y = torch.rand(BATCH, 3, 8, 8, generator=g), torch.randint(0, 10, (BATCH,), generator=g)
    stats = sum(train_step(parts, x, y, cfg, step_generator(cfg.train.seed, t, "cpu")) for t in range(steps))
    return parts, stats


@pytest.mark.parametrize("loss, clean_forward, forwards_per_step", [("at", False, 1), ("at", True, 2),
                                                                     ("trades", False, 2)])
def test_compiled_step_matches_eager(tiny_cfg, monkeypatch, loss, clean_forward, forwards_per_step):
    """PGD-AT's BatchNorm statistics move once a step, or twice with the paper's clean forward; TRADES' twice."""
    cfg = tiny_cfg(f"train.loss={loss}", "train.ema=true", f"data.batch_size={BATCH}",
                   f"train.at_clean_forward={clean_forward}")
    eager, eager_stats = _run(cfg)
    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend="aot_eager"))
    torch._dynamo.reset()
    compiled, compiled_stats = _run(cfg.model_copy(update={"train": cfg.train.model_copy(update={"compile": True})}))
    graphs = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    torch._dynamo.reset()

    assert isinstance(compiled.attack_model, torch._dynamo.eval_frame.OptimizedModule)  # the attack is compiled too
    assert isinstance(compiled.train_model, torch._dynamo.eval_frame.OptimizedModule)
    assert compiled.attack_model._orig_mod is compiled.model
    assert graphs >= 2  # Dynamo really captured graphs: at least the attack's forward and the update's
    # only the training forwards move BatchNorm's statistics: the attack's (under frozen_bn) do not, compiled or not
    bn = [m for m in compiled.model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert all(int(m.num_batches_tracked) == 3 * forwards_per_step for m in bn)
    for (name, a), b in zip(eager.model.state_dict().items(), compiled.model.state_dict().values()):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5, msg=f"model {name}")
    for (name, a), b in zip(eager.ema.module.state_dict().items(), compiled.ema.module.state_dict().values()):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5, msg=f"ema {name}")
    torch.testing.assert_close(compiled_stats, eager_stats, rtol=1e-4, atol=1e-4)


def test_ema_follows_the_weights_after_a_resume(tiny_cfg):
    """The EMA's cached tensor pairs stay valid when the model is restored in place (``load_state_dict``)."""
    cfg = tiny_cfg("train.loss=at", "train.ema=true", f"data.batch_size={BATCH}")
    parts, _ = _run(cfg, steps=1)
    ema = parts.ema
    ema.decay, ema.updates = 0.0, 10**6  # d = 0: the EMA becomes a copy of the weights on the next update
    with torch.no_grad():
        parts.model.load_state_dict({k: torch.full_like(v, 0.5) if v.is_floating_point() else v
                                     for k, v in parts.model.state_dict().items()})
    ema.update(parts.model)
    assert all(torch.equal(v, torch.full_like(v, 0.5)) for v in ema.module.state_dict().values()
               if v.is_floating_point())
