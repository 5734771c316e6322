"""EMA update cost: the tensor pairs matched once (ModelEMA.update) vs two state_dicts built every step (the
previous implementation). `python benchmarks/ema_update.py [--model wrn_28_10] [--iters 50]` (CPU)."""

import argparse
import time

import torch

from robustscale.models import create_model
from robustscale.training.ema import ModelEMA


def state_dict_update(ema: ModelEMA, model: torch.nn.Module, d: float) -> None:
    ema_state, floats_ema, floats_model = ema.module.state_dict(), [], []
    for name, value in model.state_dict().items():
        if value.dtype.is_floating_point:
            floats_ema.append(ema_state[name])
            floats_model.append(value.detach())
        else:
            ema_state[name].copy_(value)
    torch._foreach_lerp_(floats_ema, floats_model, 1.0 - d)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="wrn_28_10")
    ap.add_argument("--iters", type=int, default=50)
    args = ap.parse_args()
    torch.set_num_threads(1)
    model = create_model(args.model, num_classes=10)
    ema = ModelEMA(model, 0.995)
    with torch.no_grad():
        for name, fn in (("state_dict per step", lambda: state_dict_update(ema, model, 0.995)),
                         ("pairs matched once", lambda: ema.update(model))):
            fn()
            t0 = time.perf_counter()
            for _ in range(args.iters):
                fn()
            print(f"{args.model} {name}: {(time.perf_counter() - t0) / args.iters * 1e3:.2f} ms/update")


if __name__ == "__main__":
    main()
