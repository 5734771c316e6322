"""TensorBoard: the event files a run writes, read back with TensorBoard's own reader."""

import json

import pytest

from robustscale.training import train

pytest.importorskip("tensorboard", reason="TensorBoard is not installed (pip install -e '.[test]' brings it)")
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402

PER_EPOCH = {"train/loss": "loss", "train/clean_acc": "train_clean_acc", "train/robust_acc": "train_adv_acc",
             "val/pgd_acc": "val_pgd_acc", "val/clean_acc": "val_clean_acc", "train/lr": "lr",
             "speed/img_per_s": "img_per_s", "cost/train_flops": "train_flops", "cost/energy_kwh": "energy_kwh"}


def events(run_dir):
    acc = EventAccumulator(str(run_dir / "tensorboard"))
    acc.Reload()
    return acc


def test_the_event_files_hold_every_epoch_and_the_end(tiny_cfg, tmp_path):
    record = train(tiny_cfg("output.trackers=[tensorboard]"), tmp_path / "run", progress=False)
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    acc = events(tmp_path / "run")
    for tag, key in PER_EPOCH.items():
        scalars = acc.Scalars(tag)
        assert [s.step for s in scalars] == [1, 2, 3], tag
        assert [s.value for s in scalars] == pytest.approx([r[key] for r in rows], rel=1e-6), tag  # float32 in TB
    assert rows[-1]["train_flops"] == record.accounting.train_flops and rows[-1]["energy_kwh"] > 0
    final = {tag: acc.Scalars(tag) for tag in ("final/clean_acc", "final/pgd40_acc", "final/co2_kg", "final/wall_s")}
    assert {tag: [s.step for s in v] for tag, v in final.items()} == {tag: [3] for tag in final}
    assert final["final/clean_acc"][0].value == pytest.approx(record.metrics.clean_acc, rel=1e-6)
    assert final["final/co2_kg"][0].value == pytest.approx(record.accounting.co2_kg, rel=1e-6)
    assert "config/text_summary" in acc.Tags()["tensors"]  # the config, as text


@pytest.mark.slow
def test_only_rank_0_writes_events(tmp_path, digits_yaml):
    """Two gloo processes (robustscale's own launcher, started from this process: the ranks fork from its
    forkserver): one event file, each epoch once."""
    from robustscale.cli import main

    run = tmp_path / "run"
    assert main(["train", str(digits_yaml), "--out", str(run), "--quiet", "--procs-per-node", "2", "--tracker",
                 "tensorboard", "model.name=wrn_10_1", "train.epochs=2", "data.val_size=20", "eval.pgd_steps=1",
                 "eval.autoattack=none", "eval.autoattack_n=20", "attack.steps=1", "data.batch_size=512"]) == 0
    assert len(list((run / "tensorboard").iterdir())) == 1
    assert [s.step for s in events(run).Scalars("train/loss")] == [1, 2]
