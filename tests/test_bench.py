"""``robustscale bench``: the real training step timed, its exact FLOPs, MFU, and the plain-path baseline."""

import json

import pytest
import torch

from robustscale.accounting import step_flops_for_config
from robustscale.bench import baseline_config, bench, bench_config, scaling_table, time_train_steps
from robustscale.cli import main
from robustscale.training.model_files import create_from_config

TINY = dict(loss="trades", steps=2, batch=16, dataset="digits")  # WRN-10-1 on 8x8: a step takes milliseconds


def test_cli_done_when_command_prints_every_key(capsys):
    code = main(["bench", "--model", "wrn_10_1", "--dataset", "digits", "--loss", "trades", "--steps", "2",
                 "--batch", "16", "--iters", "2", "--warmup", "1", "--baseline", "--device", "cpu", "--json"])
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    for key in ("img_per_s", "tflops", "baseline_img_per_s", "speedup", "peak_mem_gb"):
        assert out[key] > 0, key
    assert 0 < out["mfu"] < 1.5 and 0 < out["baseline_mfu"] < 1.5
    assert out["device"].startswith("cpu (") and f"{torch.get_num_threads()} threads" in out["device"]
    assert out["speedup"] == pytest.approx(out["img_per_s"] / out["baseline_img_per_s"])
    assert out["versions"]["torch"] == torch.__version__ and out["date"]


def test_flops_are_the_exact_count_times_the_images_timed():
    cfg = bench_config("wrn_10_1", **TINY)
    out = bench(cfg, iters=3, warmup=0, device="cpu")
    assert out["flops"] == step_flops_for_config(cfg).train * 16 * 3
    assert out["tflops"] == pytest.approx(out["flops_per_step"] / out["step_s"] / 1e12)
    assert out["mfu"] == pytest.approx(out["tflops"] / out["peak_tflops"])


def test_the_timed_step_trains_the_model():
    cfg = bench_config("wrn_10_1", **TINY)
    res = time_train_steps(cfg, "cpu", iters=2, warmup=0)
    torch.manual_seed(cfg.train.seed)
    fresh = create_from_config(cfg)  # the same initialisation the bench starts from
    trained = res["trained_model"].state_dict()
    changed = [k for k, v in fresh.state_dict().items() if v.is_floating_point() and not torch.equal(v, trained[k])]
    assert len(changed) > len(trained) // 2  # weights and BN running statistics moved
    assert res["loss"] > 0 and res["img_per_s"] > 0


def test_a_bf16_step_runs_on_cpu_in_bf16():
    seen = set()

    def record(module, args, output):
        if isinstance(module, torch.nn.Conv2d):
            seen.add(output.dtype)

    handle = torch.nn.modules.module.register_module_forward_hook(record)
    try:
        res = time_train_steps(bench_config("wrn_10_1", precision="bf16", **TINY), "cpu", iters=1, warmup=0)
    finally:
        handle.remove()
    assert seen == {torch.bfloat16}  # attack and update convolutions all ran under bf16 autocast
    assert torch.isfinite(torch.tensor(res["loss"]))
    assert all(p.dtype == torch.float32 for p in res["trained_model"].parameters())  # fp32 master weights


def test_baseline_is_the_plain_path():
    cfg = bench_config("wrn_10_1", precision="bf16", channels_last=True, compile=True, **TINY)
    base = baseline_config(cfg)
    assert (base.train.precision.value, base.train.channels_last, base.train.compile) == ("fp32", False, False)
    assert (base.model.name, base.attack.steps, base.data.batch_size) == ("wrn_10_1", 2, 16)


@pytest.mark.parametrize("interleave", [False, True])
def test_scaling_table_rows_grow_in_flops(interleave):
    rows = scaling_table(["wrn_10_1", "wrn_16_1"], iter([1, 3]), loss="at", batch=8, dataset="digits",
                         precision="fp32", channels_last=False, iters=1, warmup=0, interleave=interleave, device="cpu")
    assert [(r["model"], r["steps"]) for r in rows] == [("wrn_10_1", 1), ("wrn_10_1", 3), ("wrn_16_1", 1),
                                                         ("wrn_16_1", 3)]
    assert rows[0]["flops_per_step"] < rows[1]["flops_per_step"] < rows[3]["flops_per_step"]
    assert rows[0]["rel_time_per_flop"] == 1.0 and all(r["ps_per_flop"] > 0 for r in rows)


@pytest.mark.parametrize("args, word", [(["--iters", "0"], "--iters"), (["--batch", "0"], "--batch"),
                                        (["--device", "tpu"], "--device"), (["--model", "nosuchnet"], "model.name")])
def test_bad_input_exits_2_with_one_line(capsys, args, word):
    assert main(["bench", "--model", "wrn_10_1", "--dataset", "digits", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and word in err


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message shown where no GPU is visible")
def test_cuda_without_a_gpu_is_a_user_error(capsys):
    assert main(["bench", "--model", "wrn_10_1", "--dataset", "digits", "--device", "cuda"]) == 2
    assert "no CUDA GPU" in capsys.readouterr().err
