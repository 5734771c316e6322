"""TensorBoard: event files in the run folder's ``tensorboard/``, written by PyTorch's own ``SummaryWriter``.

``tensorboard --logdir runs/my_sweep`` then shows every run of a sweep by its folder name, the run id. A resumed run
appends a new event file in the same folder, opened with ``purge_step`` one past the last epoch the run folder notes
as logged: whatever a killed attempt wrote beyond that note is hidden by TensorBoard's reader, so each epoch shows
once. Imported only when a run asks for ``tensorboard`` (the ``robustscale[tensorboard]`` extra).
"""

from __future__ import annotations

from typing import Any, Mapping

from torch.utils.tensorboard import SummaryWriter

from robustscale.tracking.base import End, RunInfo

__all__ = ["open_run", "TensorBoardRun", "LOG_DIR"]

LOG_DIR = "tensorboard"


class TensorBoardRun:
    """The run's event files; a new run's config is its ``config`` text at step 0."""

    def __init__(self, info: RunInfo, saved: dict[str, Any] | None, logged_epoch: int):
        self.new = saved is None
        # a new run hides every event an earlier start in this folder wrote; a resumed one those past its last note
        self.writer = SummaryWriter(str(info.run_dir / LOG_DIR), purge_step=0 if self.new else logged_epoch + 1)
        if self.new:
            table = "\n".join(f"| {k} | {v} |" for k, v in info.params.items())
            self.writer.add_text("config", f"run id: {info.run_id}\n\n| key | value |\n|---|---|\n{table}", 0)
            self.writer.flush()

    def saved(self) -> dict[str, Any]:
        return {}

    def last_epoch(self) -> int | None:
        return None  # the purge step above makes the folder's note the truth

    def log_epoch(self, metrics: Mapping[str, float], epoch: int) -> None:
        for name, value in metrics.items():
            self.writer.add_scalar(name, value, epoch)
        self.writer.flush()  # an epoch is minutes: on disk now, not after SummaryWriter's 2-minute flush

    def log_final(self, metrics: Mapping[str, float], epoch: int) -> None:
        self.log_epoch(metrics, epoch)

    def close(self, end: End) -> None:
        self.writer.close()


def open_run(info: RunInfo, saved: dict[str, Any] | None, logged_epoch: int) -> TensorBoardRun:
    return TensorBoardRun(info, saved, logged_epoch)
