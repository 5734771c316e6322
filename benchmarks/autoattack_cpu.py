"""Where AutoAttack's time goes on a CPU, and what the convolution kernels cost on the demo's tiny models.

Two measurements, one thread, CPU seconds (``time.process_time``: less sensitive than wall time to a shared box):

    python benchmarks/autoattack_cpu.py kernels                 # forward / forward+input-gradient per call
    python benchmarks/autoattack_cpu.py attacks RUN [RUN ...]   # AutoAttack standard per attack on run folders
    python benchmarks/autoattack_cpu.py folded                  # the model vs its BatchNorm-folded copy per call

``kernels`` times the demo's WRN-10-1, WRN-16-1 and WRN-10-2 on 8x8 batches of 2 to 40 images with oneDNN (torch's
default), oneDNN on channels-last weights, and PyTorch's native kernels (NNPACK off) on channels-last weights: the
three choices :mod:`robustscale.attacks.autoattack` has. The points robust after APGD-CE (2 to 21 of the demo's 40)
are what FAB-T and Square iterate on, thousands of calls each. ``attacks`` runs ``run_autoattack`` exactly as a
run's final evaluation does (eps 0.15, 40 points, batch 500) and prints each attack's CPU seconds and points.
"""

from __future__ import annotations

import argparse
import contextlib
import time
from typing import Any, Iterator

import torch

MODELS = ("wrn_10_1", "wrn_16_1", "wrn_10_2")
BATCHES = (2, 8, 13, 16, 26, 40)


@contextlib.contextmanager
def kernels(mkldnn: bool, nnpack: bool) -> Iterator[None]:
    saved = torch._C._get_mkldnn_enabled(), torch._C._get_nnpack_enabled()
    torch._C._set_mkldnn_enabled(mkldnn)
    torch._C._set_nnpack_enabled(nnpack)
    try:
        yield
    finally:
        torch._C._set_mkldnn_enabled(saved[0])
        torch._C._set_nnpack_enabled(saved[1])


def per_call_ms(fn: Any, calls: int) -> float:
    fn()
    start = time.process_time()
    for _ in range(calls):
        fn()
    return (time.process_time() - start) / calls * 1e3


def forward(net: Any, x: torch.Tensor) -> None:
    with torch.no_grad():
        net(x)


def gradient(net: Any, x: torch.Tensor) -> None:
    """A forward pass and the input gradient, as the white-box attacks take it."""
    h = x.clone().requires_grad_()
    torch.autograd.grad(net(h).sum(), h)


def bench_kernels(repeats: int) -> None:
    import copy

    import timm

    from robustscale.models import register_wrns

    register_wrns()

    print("model     batch | forward ms: oneDNN  oneDNN+CL  native+CL | forward+grad ms: oneDNN  oneDNN+CL  native+CL")
    for name in MODELS:
        plain = timm.create_model(name, num_classes=10).eval()
        last = copy.deepcopy(plain).to(memory_format=torch.channels_last)
        for batch in BATCHES:
            x = torch.rand(batch, 3, 8, 8)
            cells = []
            for step, calls in ((forward, 30), (gradient, 15)):
                for model, mkldnn in ((plain, True), (last, True), (last, False)):
                    with kernels(mkldnn, nnpack=False):
                        cells.append(min(per_call_ms(lambda: step(model, x), calls) for _ in range(repeats)))
            print(f"{name:9} {batch:5} | " + "  ".join(f"{c:6.2f}" for c in cells[:3]) + "   |  "
                  + "  ".join(f"{c:6.2f}" for c in cells[3:]))


def bench_folded(repeats: int) -> None:
    """Per call on 2 and 13 digits: the channels-last model (with the kernels ``run_autoattack`` picks) against the
    copy :func:`robustscale.models.folded.fold_batchnorm` makes, with BatchNorm statistics away from the identity."""
    from robustscale.attacks.autoattack import _conv_kernels
    from robustscale.models import create_model
    from robustscale.models.folded import fold_batchnorm

    print("model     batch | forward ms: model  folded | forward+grad ms: model  folded")
    for name in MODELS:
        torch.manual_seed(0)
        model = create_model(name, mean=(0.5,) * 3, std=(0.25,) * 3).eval()
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_var.uniform_(0.5, 2.0)
        folded = fold_batchnorm(model)
        model = model.to(memory_format=torch.channels_last)
        for batch in (2, 13):
            x = torch.rand(batch, 3, 8, 8)
            with _conv_kernels(x, torch.device("cpu")):
                cells = [min(per_call_ms(lambda: step(net, x), calls) for _ in range(repeats))
                         for step, calls in ((forward, 100), (gradient, 50)) for net in (model, folded)]
            print(f"{name:9} {batch:5} | {cells[0]:6.2f} {cells[1]:6.2f}   | {cells[2]:6.2f} {cells[3]:6.2f}")


def bench_attacks(runs: list[str]) -> None:
    import robustscale.attacks.autoattack as aa
    from robustscale.data import load_data
    from robustscale.training.model_files import load_model

    x, y = load_data("digits", "test")
    original = aa._attack_batch
    for run in runs:
        times: dict[str, tuple[float, int]] = {}

        def timed(model: Any, attacked: Any, xb: Any, yb: Any, attack: str, **kw: Any) -> Any:
            start = time.process_time()
            out = original(model, attacked, xb, yb, attack, **kw)
            times[attack] = (round(time.process_time() - start, 1), len(yb))
            return out

        aa._attack_batch = timed
        start = time.process_time()
        result = aa.run_autoattack(load_model(run), x, y, eps=0.15, version="standard", n=40, seed=0, batch_size=500)
        aa._attack_batch = original
        print(f"{run}: {time.process_time() - start:.1f} CPU-s, robust {result['robust_acc']:.3f} (attacked: "
              f"{result['attacked']}); per attack "
              f"(CPU-s, points): {times}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="what", required=True)
    sub.add_parser("kernels").add_argument("--repeats", type=int, default=3)
    sub.add_parser("attacks").add_argument("runs", nargs="+")
    sub.add_parser("folded").add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.what == "attacks":
        bench_attacks(args.runs)
    else:
        (bench_kernels if args.what == "kernels" else bench_folded)(args.repeats)


if __name__ == "__main__":
    main()
