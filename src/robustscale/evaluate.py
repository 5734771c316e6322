"""Evaluate a trained model from disk: AutoAttack (the paper's number) or PGD, with the sanity checks in the same
result, as ``robustscale eval`` does.

:func:`evaluate` takes a run folder or a checkpoint; the evaluation itself (a model and data in memory) is
:func:`robustscale.attacks.evaluation.evaluate_model`, re-exported here. With a run folder the result is written to
``eval/<attack>-<eps>.json`` there, and AutoAttack keeps a state file beside it while it runs, so a killed evaluation
resumes where it stopped.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Sequence

import torch

from robustscale.attacks.evaluation import clean_accuracy, evaluate_model, result_path
from robustscale.data import load_data
from robustscale.enums import Attack, AutoAttackVersion, Norm, PGDLoss, Tracker
from robustscale.errors import DataError, UserError, shown
from robustscale.store.safe_paths import check_run_folder
from robustscale.tracking import End, open_trackers, require_installed
from robustscale.training.model_files import load_model

__all__ = ["evaluate", "evaluate_model", "clean_accuracy", "result_path"]


def evaluate(path: str | Path, *, attack: Attack | str = Attack.autoattack, eps: Optional[float] = None,
             norm: Optional[Norm | str] = None, steps: int = 20, loss: Optional[PGDLoss | str] = None,
             n: Optional[int] = None, version: AutoAttackVersion | str = AutoAttackVersion.standard,
             attacks: Optional[Sequence[str]] = None, batch_size: int = 500, seed: int = 0,
             device: Optional[str] = None, data_root: Optional[str | Path] = None,
             trackers: Sequence[Tracker] = ()) -> dict[str, Any]:
    """Evaluate the model at ``path`` (a run folder: its best weights; or a ``.safetensors`` checkpoint) on its
    dataset's test split. eps, norm and the PGD loss default to the ones the model was trained and validated with.

    The dataset is read from ``data_root`` (default: ``data`` in the working folder), never from the ``data.root``
    written in the model file: a downloaded run must not choose which files are read (the CIFAR batches are
    pickles). A run folder's ``eval`` output must not be a symbolic link.

    ``trackers``: also log the result (``eval/<attack>-<eps>/robust_acc``, ``clean_acc``) to the run's tracker runs
    (those its training logged to, or new ones named by its run id); a run folder only.
    """
    path = Path(path)
    if not path.exists():
        raise UserError(f"'{path}' does not exist: pass a run folder or a .safetensors checkpoint")
    if trackers and not path.is_dir():
        raise UserError(f"a tracker logs to a run's tracker runs: pass the run folder, not the checkpoint "
                        f"'{shown(path)}'")
    require_installed(trackers)
    if path.is_dir():
        check_run_folder(path, ("eval",))
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    model = load_model(path, device=device)
    cfg = model.config
    try:
        x, y = load_data(cfg.data.dataset, "test", root=data_root, image_size=cfg.data.image_size)
    except DataError as err:
        if cfg.data.root is None or data_root is not None:
            raise
        raise DataError(f"{err} (the model file names data.root '{cfg.data.root}': pass data_root to use it)",
                        "data_root") from None
    meta = {"path": str(path), "dataset": cfg.data.dataset.value, "model": cfg.model.name}
    eps = cfg.attack.eps if eps is None else eps
    res = evaluate_model(model, x, y, attack=attack, eps=eps, norm=norm or cfg.attack.norm, steps=steps,
                         loss=loss or cfg.eval.pgd_loss, n=n, version=version, attacks=attacks,
                         batch_size=batch_size, seed=seed, run_dir=path if path.is_dir() else None, meta=meta)
    if trackers:
        _track(cfg, path, trackers, result_path(path, attack, eps, suffix="").name, res)
    return res


def _track(cfg, run_dir: Path, trackers: Sequence[Tracker], name: str, res: dict[str, Any]) -> None:
    """The result to the run's tracker runs, whose state (finished or not) is left as it was."""
    opened = open_trackers(cfg, run_dir, resume=True, trackers=trackers)
    opened.log_evaluation(name, res)
    opened.close(End.kept)
