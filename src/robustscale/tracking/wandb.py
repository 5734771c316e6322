"""Weights & Biases: one W&B run per robustscale run, its files in the run folder's ``wandb/``.

The project is ``WANDB_PROJECT``, else ``robustscale``; the group is ``output.experiment`` (a sweep's name); the
run's name is the run id and its config the flattened config. The W&B run id is drawn once and kept in the run
folder, so a resumed run continues the same W&B run (``resume="allow"``). Offline (``WANDB_MODE=offline``) each
start writes its own ``offline-run-*`` folder under that id, and ``wandb sync`` uploads them in order as one run.
Imported only when a run asks for ``wandb`` (the ``robustscale[wandb]`` extra).
"""

from __future__ import annotations

import os
import re
import secrets
from typing import Any, Mapping

import wandb

from robustscale.tracking.base import End, RunInfo

__all__ = ["open_run", "WandbRun", "DEFAULT_PROJECT"]

DEFAULT_PROJECT = "robustscale"
_ID = re.compile(r"[a-z0-9]{1,64}")
_EXIT_CODE = {End.finished: 0, End.failed: 1, End.stopped: 1, End.kept: 0}


class WandbRun:
    """The W&B run of one robustscale run."""

    def __init__(self, info: RunInfo, saved: dict[str, Any] | None):
        saved_id = (saved or {}).get("id")
        self.new = not (isinstance(saved_id, str) and _ID.fullmatch(saved_id))
        self.id = secrets.token_hex(6) if self.new else saved_id
        self.run = wandb.init(project=os.environ.get("WANDB_PROJECT") or DEFAULT_PROJECT, group=info.experiment,
                              name=info.run_id, id=self.id, resume="allow", dir=str(info.run_dir),
                              config=info.params if self.new else None, reinit="create_new",
                              settings=wandb.Settings(console="off"))

    def saved(self) -> dict[str, Any]:
        return {"id": self.id}

    def last_epoch(self) -> int | None:
        return None  # offline there is no server to ask; online W&B itself drops a step logged twice

    def log_epoch(self, metrics: Mapping[str, float], epoch: int) -> None:
        self.run.log(dict(metrics), step=epoch, commit=True)

    def log_final(self, metrics: Mapping[str, float], epoch: int) -> None:
        self.run.summary.update(dict(metrics))

    def close(self, end: End) -> None:
        if end is End.stopped:
            self.run.mark_preempting()  # W&B shows it preempted, not crashed, until it resumes
        self.run.finish(exit_code=_EXIT_CODE[end])


def open_run(info: RunInfo, saved: dict[str, Any] | None, logged_epoch: int) -> WandbRun:
    return WandbRun(info, saved)
