"""A run killed and resumed is one tracker run holding each epoch once, wherever the kill fell around epoch 2's log.

The kill is a BaseException raised at a chosen point (nothing handles it, as nothing handles SIGKILL): after the
trackers logged epoch 2 and the run folder noted it, before the checkpoint (the resumed run trains epoch 2 again);
or between a tracker's log and the note (the run folder says epoch 1, the tracker holds epoch 2).
"""

import json

import pytest

import robustscale.training.loop as loop
from robustscale.tracking import Trackers
from robustscale.training import train
from tests.tracking.wandb_files import wandb_history


class Killed(BaseException):
    pass


def _kill_before_the_checkpoint(monkeypatch):
    real = loop._save

    def save(run):
        if run.progress.epoch == 2:
            raise Killed
        real(run)

    monkeypatch.setattr(loop, "_save", save)


def _kill_before_the_note(monkeypatch):
    real = Trackers._save

    def save(self):
        if any(isinstance(v, dict) and v.get("epoch") == 2 for v in self.state.values()):
            raise Killed
        real(self)

    monkeypatch.setattr(Trackers, "_save", save)


KILLS = {"before the checkpoint": _kill_before_the_checkpoint, "before the note": _kill_before_the_note}


def _epochs_tensorboard(run_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir / "tensorboard"))
    acc.Reload()
    assert len(list((run_dir / "tensorboard").iterdir())) == 2  # one event file per start
    return 1, [s.step for s in acc.Scalars("train/loss")]


def _epochs_mlflow(run_dir):
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    runs = client.search_runs([client.get_experiment_by_name("robustscale").experiment_id])
    assert all(r.info.status == "FINISHED" for r in runs)
    history = client.get_metric_history(runs[0].info.run_id, "train/loss") if runs else []
    return len(runs), sorted(m.step for m in history)


def _epochs_wandb(run_dir):
    runs, history, _ = wandb_history(run_dir)
    assert len(runs) == 2  # one offline folder per start, both of the one W&B run
    return len({r.run_id for r in runs}), [h["_step"] for h in history]


@pytest.fixture
def tracker_env(request):
    """The tracker's library and an offline store (a test needing a missing library skips, saying which)."""
    name = request.param
    if name == "tensorboard":
        pytest.importorskip("tensorboard", reason="TensorBoard is not installed (pip install -e '.[test]')")
    else:
        request.getfixturevalue("mlflow_store" if name == "mlflow" else "wandb_offline")
    return name


def _kill_train_and_resume(tracker, kill, tiny_cfg, run_dir, monkeypatch):
    """Train until ``kill``, check what the run folder noted of ``tracker``, resume to the end."""
    cfg = tiny_cfg(f"output.trackers=[{tracker}]")
    with monkeypatch.context() as patch:
        KILLS[kill](patch)
        with pytest.raises(Killed):
            train(cfg, run_dir, progress=False)
    if tracker == "wandb":  # the killed process's end: W&B's service writes out what it was given
        import wandb

        wandb.teardown()
    noted = json.loads((run_dir / "trackers.json").read_text())[tracker]["epoch"]
    assert noted == (2 if kill == "before the checkpoint" else 1)
    record = train(cfg, run_dir, resume=True, progress=False)
    assert record.status == "done"
    assert [json.loads(line)["epoch"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3]
    return globals()[f"_epochs_{tracker}"](run_dir)


EVERY_CASE = [(t, k) for t in ("tensorboard", "mlflow", "wandb") for k in KILLS]


@pytest.mark.parametrize(("tracker_env", "kill"), [c for c in EVERY_CASE if c != ("wandb", "before the note")],
                         indirect=["tracker_env"])
def test_a_killed_and_resumed_run_is_one_tracker_run_with_each_epoch_once(tracker_env, kill, tiny_cfg, tmp_path,
                                                                           monkeypatch):
    assert _kill_train_and_resume(tracker_env, kill, tiny_cfg, tmp_path / "run", monkeypatch) == (1, [1, 2, 3])


@pytest.mark.parametrize("tracker_env", ["wandb"], indirect=True)
def test_wandb_offline_logs_epoch_2_again_when_killed_between_its_log_and_the_note(tracker_env, tiny_cfg, tmp_path,
                                                                                    monkeypatch):
    """The one window left (README, trackers): W&B offline has no store to ask which epochs it holds, so a kill
    between its log of epoch 2 and the run folder's note (one file rename) logs epoch 2 again on resume, still in
    one W&B run; `wandb sync` then drops the repeated step (W&B steps only increase)."""
    runs, epochs = _kill_train_and_resume(tracker_env, "before the note", tiny_cfg, tmp_path / "run", monkeypatch)
    assert runs == 1 and epochs == [1, 2, 2, 3]


def test_a_preempted_run_pauses_its_tracker_runs_and_resumes_them(mlflow_store, wandb_offline, tiny_cfg, tmp_path):
    """The scheduler's stop (here before the first step): MLflow shows the run killed, W&B preempted; the resumed
    run continues both, and ends them finished."""
    import robustscale.training.preemption as preemption
    from mlflow.tracking import MlflowClient

    cfg, run_dir = tiny_cfg("output.trackers=[mlflow,wandb]"), tmp_path / "run"
    preemption.reset()
    try:
        with preemption.armed():
            preemption.request()
            with pytest.raises(preemption.Preempted):
                train(cfg, run_dir, progress=False)
    finally:
        preemption.reset()
    client = MlflowClient()
    (run,) = client.search_runs([client.get_experiment_by_name("robustscale").experiment_id])
    assert run.info.status == "KILLED"
    assert train(cfg, run_dir, resume=True, progress=False).status == "done"
    assert _epochs_mlflow(run_dir) == (1, [1, 2, 3])
    assert _epochs_wandb(run_dir) == (1, [1, 2, 3])
