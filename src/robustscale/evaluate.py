"""Evaluate a trained model from disk: AutoAttack (the paper's number) or PGD, with the sanity checks in the same
result, as ``robustscale eval`` does.

:func:`evaluate` takes a run folder or a checkpoint; the evaluation itself (a model and data in memory) is
:func:`robustscale.attacks.evaluation.evaluate_model`, re-exported here. With a run folder the result is written to
``eval/<attack>-<eps>.json`` there, and AutoAttack keeps a state file beside it while it runs, so a killed evaluation
resumes where it stopped. Settings left out are the run's own: its threat model, PGD loss, AutoAttack points
(``eval.autoattack_n``), seed (``train.seed``) and batch size (``eval.batch_size``), so ``robustscale eval RUN
--attack autoattack`` is the final evaluation training would have run.

Run on every rank of a process group (``torchrun ... -m robustscale eval``, ``robustscale eval --procs-per-node``, a
Slurm job of several tasks), :func:`evaluate` splits the evaluation over the ranks
(:mod:`robustscale.attacks.sharding`): the same result as one process, counted once. A done run whose record has no
AutoAttack number yet gets this one (:func:`record_evaluation`): ``robustscale results`` then shows it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Optional, Sequence

from robustscale.accounting.run import RunAccounting
from robustscale.attacks.evaluation import clean_accuracy, evaluate_model, result_path
from robustscale.attacks.sharding import Shard
from robustscale.config import Config, config_from_dict
from robustscale.data import load_data
from robustscale.enums import Attack, AutoAttackVersion, Norm, PGDLoss, Status, Tracker, choice
from robustscale.errors import DataError, UserError, shown
from robustscale.store.atomic import write_json
from robustscale.store.record import read_record, write_record
from robustscale.store.safe_json import read_json
from robustscale.store.safe_paths import check_run_folder
from robustscale.tracking import End, open_trackers, require_installed
from robustscale.training.distributed import DistInfo, cleanup, device_for, init_distributed
from robustscale.training.model_files import load_model

__all__ = ["evaluate", "evaluate_model", "clean_accuracy", "result_path", "EvalRequest", "record_evaluation",
           "existing_evaluation", "check_trackers", "track_evaluation"]

MAX_RESULT_BYTES = 16 * 2**20  # an evaluation result is a few kB; a bigger file in a run folder is not one


@dataclass(frozen=True)
class EvalRequest:
    """One evaluation asked of a model; None: the run's own setting (:meth:`for_config`)."""

    attack: Attack = Attack.autoattack
    eps: Optional[float] = None
    norm: Optional[Norm] = None
    steps: int = 20  # PGD steps
    loss: Optional[PGDLoss] = None  # PGD loss
    n: Optional[int] = None  # test points: a seeded subset (all of them when n >= the test set)
    version: str = "standard"  # AutoAttack version
    attacks: Optional[tuple[str, ...]] = None  # a custom AutoAttack list
    batch_size: Optional[int] = None
    seed: Optional[int] = None
    data_root: Optional[str] = None
    device: Optional[str] = None

    def for_config(self, cfg: Config) -> "EvalRequest":
        """Every None filled in from the run's config: eps, norm, PGD loss, AutoAttack's points, seed, batch size."""
        own = {"eps": cfg.attack.eps, "norm": cfg.attack.norm, "loss": cfg.eval.pgd_loss,
               "n": cfg.eval.autoattack_n, "seed": cfg.train.seed, "batch_size": cfg.eval.batch_size}
        return replace(self, **{k: v for k, v in own.items() if getattr(self, k) is None},
                       attack=choice(Attack, self.attack, "attack"))

    def as_kwargs(self) -> dict[str, Any]:
        return asdict(self)


def evaluate(path: str | Path, *, attack: Attack | str = Attack.autoattack, eps: Optional[float] = None,
             norm: Optional[Norm | str] = None, steps: int = 20, loss: Optional[PGDLoss | str] = None,
             n: Optional[int] = None, version: AutoAttackVersion | str = AutoAttackVersion.standard,
             attacks: Optional[Sequence[str]] = None, batch_size: Optional[int] = None, seed: Optional[int] = None,
             device: Optional[str] = None, data_root: Optional[str | Path] = None,
             trackers: Sequence[Tracker] = ()) -> dict[str, Any]:
    """Evaluate the model at ``path`` (a run folder: its best weights; or a ``.safetensors`` checkpoint) on its
    dataset's test split. eps, norm, the PGD loss, the points (``n``), ``seed`` and ``batch_size`` default to the
    run's own (its config's ``eval.autoattack_n``, ``train.seed``, ``eval.batch_size``).

    The dataset is read from ``data_root`` (default: ``data`` in the working folder), never from the ``data.root``
    written in the model file: a downloaded run must not choose which files are read (the CIFAR batches are
    pickles). A run folder's ``eval`` output must not be a symbolic link.

    Under a process group (torchrun's environment) every rank calls this and gets the same result; the ranks split
    the work and rank 0 writes. The result adds ``eval_flops`` and ``eval_samples``: the model's calls over all ranks
    (:meth:`~robustscale.accounting.run.RunAccounting.final_eval`), the same for any world size.

    ``trackers``: also log the result (``eval/<attack>-<eps>/robust_acc``, ``clean_acc``) to the run's tracker runs
    (those its training logged to, or new ones named by its run id); a run folder only.
    """
    check_trackers(path, trackers)
    request = EvalRequest(attack=choice(Attack, attack, "attack"), eps=eps,
                          norm=choice(Norm, norm, "norm") if norm is not None else None, steps=steps,
                          loss=choice(PGDLoss, loss, "loss") if loss is not None else None, n=n, version=str(version),
                          attacks=tuple(attacks) if attacks is not None else None, batch_size=batch_size, seed=seed,
                          data_root=str(data_root) if data_root is not None else None, device=device)
    info = init_distributed()
    try:
        res = _evaluate(Path(path), request, info)
    finally:
        if info.owns_group:
            cleanup()
    if trackers and info.is_main:
        track_evaluation(path, trackers, res)
    return res


def _test_set(cfg: Config, data_root: Optional[str]):
    try:
        return load_data(cfg.data.dataset, "test", root=data_root, image_size=cfg.data.image_size)
    except DataError as err:
        if cfg.data.root is None or data_root is not None:
            raise
        raise DataError(f"{err} (the model file names data.root '{cfg.data.root}': pass data_root to use it)",
                        "data_root") from None


def check_trackers(path: str | Path, trackers: Sequence[Tracker]) -> None:
    """Before any work: trackers log to a run's tracker runs (a run folder, not a checkpoint file), and each one
    asked for is installed (a one-line :class:`UserError` naming the extra otherwise)."""
    if trackers and not Path(path).is_dir():
        raise UserError(f"a tracker logs to a run's tracker runs: pass the run folder, not the checkpoint "
                        f"'{shown(path)}'")
    require_installed(trackers)


def track_evaluation(run_dir: str | Path, trackers: Sequence[Tracker], res: dict[str, Any]) -> None:
    """An evaluation's result to the run's tracker runs, whose state (finished or not) is left as it was."""
    run_dir = Path(run_dir)
    record = read_record(run_dir)
    cfg = config_from_dict(record.config) if record is not None else load_model(run_dir).config
    opened = open_trackers(cfg, run_dir, resume=True, trackers=trackers)
    opened.log_evaluation(result_path(run_dir, res["attack"], res["eps"], suffix="").name, res)
    opened.close(End.kept)


def _evaluate(path: Path, request: EvalRequest, info: DistInfo) -> dict[str, Any]:
    if not path.exists():
        raise UserError(f"'{path}' does not exist: pass a run folder or a .safetensors checkpoint")
    if path.is_dir():
        check_run_folder(path, ("eval",))
    device = request.device or device_for(info)
    model = load_model(path, device=device)
    cfg = model.config
    r = request.for_config(cfg)
    x, y = _test_set(cfg, r.data_root)
    meta = {"path": str(path), "dataset": cfg.data.dataset.value, "model": cfg.model.name, "test_points": len(y),
            "ranks": info.world_size}
    run_dir = path if path.is_dir() else None
    accounting = RunAccounting.from_config(cfg, info.world_size, info.local_rank, device, nodes=info.nodes)
    with accounting.final_eval(model):
        res = evaluate_model(model, x, y, attack=r.attack, eps=r.eps, norm=r.norm, steps=r.steps, loss=r.loss,
                             n=r.n, version=r.version, attacks=r.attacks, batch_size=r.batch_size, seed=r.seed,
                             run_dir=run_dir, meta=meta, shard=Shard(info.rank, info.world_size))
    res["eval_flops"], res["eval_samples"] = accounting.flops.final_eval_flops, accounting.flops.eval_samples
    if run_dir is not None and info.is_main:  # again, with its cost
        write_json(result_path(run_dir, r.attack, r.eps), res)
    return res


# ---------------------------------------------------------------------------------------------- a run's evaluations


def existing_evaluation(run_dir: str | Path, request: EvalRequest) -> Optional[dict[str, Any]]:
    """The result of ``request`` (resolved: :meth:`EvalRequest.for_config`) already in the run folder, or None. The
    same evaluation is the same attack and threat model on the same points with the same seed (AutoAttack: version
    and attack list; PGD: steps and loss); the batch size is not compared."""
    path = result_path(run_dir, request.attack, request.eps)
    try:
        res = read_json(path, max_bytes=MAX_RESULT_BYTES)  # a regular file, bounded (store/safe_json.py)
    except (OSError, ValueError):  # missing, or not a result (JsonFileError is a ValueError): evaluate again
        return None
    return res if isinstance(res, dict) and _same(res, request) else None


def _same(res: dict[str, Any], r: EvalRequest) -> bool:
    points = min(r.n, res["test_points"]) if isinstance(res.get("test_points"), int) else r.n
    same = (res.get("attack") == r.attack.value and res.get("norm") == r.norm.value and res.get("n") == points
            and res.get("seed") == r.seed)
    if r.attack is Attack.autoattack:
        wanted = list(r.attacks) if r.attacks is not None else None
        return same and (res.get("attacks") == wanted if wanted else res.get("version") == r.version)
    return same and res.get("steps") == r.steps and res.get("loss") == r.loss.value


def record_evaluation(run_dir: str | Path, res: dict[str, Any]) -> bool:
    """Put an AutoAttack result into a done run's record when it is at the run's own threat model and the record has
    no AutoAttack number yet (a run trained with ``eval.autoattack: none``): ``metrics.autoattack_acc`` and
    ``autoattack_clean_acc``, ``evaluations.autoattack``, and its FLOPs added to ``accounting.eval_flops`` /
    ``final_eval_flops``. A number already there (training's own, on its points) is never replaced. Returns whether
    the record changed."""
    record = read_record(run_dir)
    if record is None or record.status is not Status.done or res.get("attack") != Attack.autoattack.value:
        return False
    try:
        cfg = config_from_dict(record.config)
    except (UserError, ValueError, TypeError):
        return False
    if record.metrics.autoattack_acc is not None or f"{res['eps']:.6g}" != f"{cfg.attack.eps:.6g}" \
            or res["norm"] != cfg.attack.norm.value:
        return False
    record.metrics.autoattack_acc, record.metrics.autoattack_clean_acc = res["robust_acc"], res["clean_acc"]
    record.evaluations = {**record.evaluations, "autoattack": res}
    acc, flops = record.accounting, int(res.get("eval_flops") or 0)
    acc.eval_flops, acc.final_eval_flops = (acc.eval_flops or 0) + flops, (acc.final_eval_flops or 0) + flops
    acc.eval_samples = (acc.eval_samples or 0) + int(res.get("eval_samples") or 0)
    write_record(run_dir, record)
    return True
