"""The trackers of one run, as the training loop sees them: :func:`open_trackers` at the start, ``log_epoch(row)``
beside each metrics.jsonl line, ``finish(record)`` at the end (rank 0 only; a no-op without trackers).

What the run folder keeps (``trackers.json``, written atomically after each epoch): the robustscale run id, and per
tracker the ids that reopen its run and the last epoch it was given. Each epoch is logged once:

- a resumed run reopens the same tracker runs and skips the epochs they were already given. A kill between an
  epoch's log and its checkpoint makes the resumed run train that epoch again; the tracker keeps its first logging
  of it (resume is exact, so the numbers are the same, timings aside) and the run folder's metrics.jsonl, trimmed
  to the checkpoint, its second.
- a kill between a tracker's log and the note in ``trackers.json``: TensorBoard's reader hides what was written
  past the note (``purge_step``), MLflow is asked which epochs it holds, and W&B online drops a repeated step;
  W&B offline has nothing to ask, and this window of one file rename is the one left open.
- a tracker added on resume, or one that failed for a while, first gets the epochs it missed, from metrics.jsonl.

A tracker that fails (its server gone, a full disk) is warned about once and dropped for the rest of this start:
a tracker never costs a run. A tracker asked for but not installed is a one-line :class:`UserError` naming the
extra, raised before anything is trained.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

from robustscale.config import Config, config_to_dict
from robustscale.enums import Tracker
from robustscale.errors import UserError, shown
from robustscale.store.atomic import write_json
from robustscale.store.record import RunRecord, Status, run_id
from robustscale.store.safe_json import read_json, read_json_lines
from robustscale.store.safe_paths import check_run_folder
from robustscale.tracking.base import End, RunInfo, TrackerRun, epoch_metrics, final_metrics, flat_params

__all__ = ["Trackers", "open_trackers", "require_installed", "STATE", "EXTRAS"]

log = logging.getLogger(__name__)

STATE = "trackers.json"
# the module each tracker needs (what `pip install 'robustscale[<tracker>]'` brings) and the folder it writes in
EXTRAS = {Tracker.tensorboard: "tensorboard", Tracker.mlflow: "mlflow", Tracker.wandb: "wandb"}
_FOLDERS = ("tensorboard", "wandb", STATE)


def _installed(module: str) -> bool:
    if module in sys.modules:  # None there: the import is blocked (as tests block one)
        return sys.modules[module] is not None
    return importlib.util.find_spec(module) is not None


def require_installed(trackers: Iterable[Tracker]) -> None:
    """Raise one line naming the extra to install when a tracker's library is missing (nothing is imported)."""
    missing = [t.value for t in dict.fromkeys(trackers) if not _installed(EXTRAS[t])]
    if missing:
        verb = "is" if len(missing) == 1 else "are"
        raise UserError(f"output.trackers: {', '.join(missing)} {verb} not installed: "
                        f"pip install 'robustscale[{','.join(missing)}]'")


@dataclass
class _Open:
    kind: Tracker
    run: TrackerRun
    epoch: int  # the last epoch this tracker run was given


class Trackers:
    """The open tracker runs of one robustscale run. Empty (``Trackers()``) it does nothing."""

    def __init__(self, run_dir: Path | None = None, info: RunInfo | None = None):
        self.run_dir, self.info = run_dir, info
        self.open: list[_Open] = []
        self.state: dict[str, Any] = {"run_id": info.run_id} if info else {}
        self.note_failed = False

    # -------------------------------------------------------------------------------------- the run's calls

    def log_epoch(self, row: Mapping[str, Any]) -> None:
        """One metrics.jsonl row (just appended), to every tracker that has not had its epoch."""
        if not self.open:
            return
        epoch = int(row["epoch"])
        for tracker in list(self.open):
            if tracker.epoch < epoch:
                self._catch_up(tracker, epoch - 1)
                self._call(tracker, lambda t: t.run.log_epoch(epoch_metrics(row), epoch), epoch)
        self._save()

    def finish(self, record: RunRecord | None) -> None:
        """The record's end figures to every tracker, then close them (finished, or failed as the record says)."""
        if record is None or not self.open:
            return
        figures = final_metrics(vars(record.metrics), vars(record.accounting), record.params)
        end = End.finished if record.status is Status.done else End.failed
        for tracker in list(self.open):
            self._catch_up(tracker, record.epochs_run)
            self._call(tracker, lambda t: t.run.log_final(figures, max(t.epoch, record.epochs_run)))
        self.close(end)

    def log_evaluation(self, name: str, result: Mapping[str, Any]) -> None:
        """A ``robustscale eval`` result (``eval/<name>/robust_acc``, ``clean_acc``) to the run's tracker runs."""
        figures = {f"eval/{name}/{k}": float(result[k]) for k in ("robust_acc", "clean_acc")
                   if isinstance(result.get(k), (int, float))}
        for tracker in list(self.open):
            self._catch_up(tracker, sys.maxsize)  # a tracker new to the run gets its epochs first
            self._call(tracker, lambda t: t.run.log_final(figures, t.epoch))

    def close(self, end: End) -> None:
        """Let go of every tracker run (``end`` says how it ended for now); the run folder's note is saved."""
        for tracker in list(self.open):
            self._call(tracker, lambda t: t.run.close(end))
        self._save()
        self.open.clear()

    # -------------------------------------------------------------------------------------- inside

    def _call(self, tracker: _Open, fn, epoch: int | None = None) -> bool:
        """Run ``fn(tracker)``; a failure is warned about once and drops the tracker. ``epoch``: what it logged."""
        try:
            fn(tracker)
        except Exception as err:  # noqa: BLE001 - whatever a tracker's library raises, the run goes on
            self._drop(tracker, err)
            return False
        if epoch is not None:
            tracker.epoch = epoch
            self.state[tracker.kind.value]["epoch"] = epoch
        return True

    def _drop(self, tracker: _Open, err: BaseException) -> None:
        log.warning("tracker %s failed (%s); it logs nothing more until the run is resumed, and training goes on: "
                    "the run folder has every number", tracker.kind, _first_line(err))
        self.open.remove(tracker)

    def _catch_up(self, tracker: _Open, upto: int) -> None:
        """The epochs ``tracker`` missed up to ``upto`` (it was added on resume, or failed at an earlier start)."""
        if tracker.epoch >= upto or self.run_dir is None:
            return
        for row in _rows(self.run_dir / "metrics.jsonl"):
            epoch = row.get("epoch")
            if isinstance(epoch, int) and tracker.epoch < epoch <= upto:
                if not self._call(tracker, lambda t: t.run.log_epoch(epoch_metrics(row), epoch), epoch):
                    return

    def _open(self, kind: Tracker, entry: Mapping[str, Any] | None) -> None:
        saved = entry.get("run") if isinstance(entry, Mapping) and isinstance(entry.get("run"), dict) else None
        noted = entry.get("epoch") if isinstance(entry, Mapping) and isinstance(entry.get("epoch"), int) else 0
        try:
            module = importlib.import_module(f"robustscale.tracking.{kind.value}")
        except ImportError as err:  # installed but broken: as a missing extra
            raise UserError(f"output.trackers: {kind} cannot be imported ({shown(err)}): pip install "
                            f"'robustscale[{kind}]'") from None
        try:
            run = module.open_run(self.info, saved, noted)
            epoch = 0 if run.new else max(noted, run.last_epoch() or 0)
        except Exception as err:  # noqa: BLE001 - a tracker that cannot start never stops the run
            log.warning("tracker %s could not start (%s); training goes on without it", kind, _first_line(err))
            return
        self.open.append(_Open(kind, run, epoch))
        self.state[kind.value] = {"run": run.saved(), "epoch": epoch}

    def _save(self) -> None:
        """The run folder's note of the tracker runs (atomic). A note that cannot be written (a full disk) is
        warned about once: the trackers go on, and a resume may then log the epochs since the last note again."""
        if self.run_dir is None or not self.state:
            return
        try:
            write_json(self.run_dir / STATE, self.state)
        except OSError as err:
            if not self.note_failed:
                log.warning("could not note the tracker runs in %s (%s); training goes on", self.run_dir / STATE, err)
            self.note_failed = True


def _first_line(err: BaseException) -> str:
    """``Type: the first line of the message``, escaped and cut (a library's message may be a page of HTML)."""
    text = str(err).strip()
    return f"{type(err).__name__}: {shown(text.splitlines()[0])}" if text else type(err).__name__


def _rows(path: Path) -> list[dict[str, Any]]:
    """metrics.jsonl's rows (a torn or foreign line left out; a file that cannot be read: none)."""
    try:
        return [row for row in read_json_lines(path, strict=False) if isinstance(row, dict)]
    except (OSError, ValueError):  # missing, or not a file to read (safe_json's JsonFileError is a ValueError)
        return []


def _read_state(run_dir: Path) -> dict[str, Any]:
    try:
        state = read_json(run_dir / STATE)
    except (OSError, ValueError):
        return {}
    return state if isinstance(state, dict) else {}


def open_trackers(cfg: Config, run_dir: str | Path, *, resume: bool, trackers: Iterable[Tracker] | None = None,
                  enabled: bool = True) -> Trackers:
    """Open the run's trackers (``cfg.output.trackers``, or ``trackers``): the run folder's own tracker runs when
    ``resume``, new ones otherwise. ``enabled=False`` (DDP ranks other than 0), or no tracker: an empty
    :class:`Trackers`, and no tracker library is imported."""
    kinds = list(dict.fromkeys(cfg.output.trackers if trackers is None else trackers))
    if not enabled or not kinds:
        return Trackers()
    require_installed(kinds)
    run_dir = check_run_folder(run_dir, _FOLDERS)
    run_dir.mkdir(parents=True, exist_ok=True)
    config = config_to_dict(cfg)
    info = RunInfo(run_dir, run_id(config), cfg.output.experiment, flat_params(config))
    state = _read_state(run_dir) if resume else {}
    out = Trackers(run_dir, info)
    if state.get("run_id") == info.run_id:  # keep the notes of trackers not asked for this time
        out.state.update({k: v for k, v in state.items() if k in {t.value for t in Tracker}})
    for kind in kinds:
        out._open(kind, out.state.get(kind.value))
    out._save()
    return out
