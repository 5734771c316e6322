"""Experiment trackers (TensorBoard, MLflow, Weights & Biases): windows on a run folder, each an optional extra.

:func:`open_trackers` gives the training loop a :class:`Trackers` (``log_epoch``, ``finish``); each tracker's module
imports its library and is itself imported only when a run asks for that tracker.
"""

from robustscale.tracking.base import End, RunInfo, TrackerRun, epoch_metrics, final_metrics, flat_params
from robustscale.tracking.trackers import EXTRAS, STATE, Trackers, open_trackers, require_installed

__all__ = ["open_trackers", "require_installed", "Trackers", "TrackerRun", "RunInfo", "End", "EXTRAS", "STATE",
           "epoch_metrics", "final_metrics", "flat_params"]
