"""AutoAttack (Croce & Hein) through ``pyautoattack``, the authors' code: a thin, resumable, honest wrapper.

The wrapper never reimplements an attack. It runs ``AutoAttack.run_standard_evaluation`` once per attack and per
batch of still-robust points, which is exactly what one full call does internally (each batch is attacked on its
own, with the seed reset), and records after every batch, atomically, which points are still robust. That gives

- resumption: ``pyautoattack`` 0.2.0's own state file cannot be restored (it stores the attack set as a string, so
  the restore always reports "a different set of attacks", and its restore path leaves ``y_adv`` undefined); our
  state file loses at most one batch when the job is killed;
- exact per-attack robust accuracy from the counts, not from rounded log lines;
- warnings (randomised defence, outputs that are not logits, Square beating the white-box attacks = possible
  gradient masking) captured into the result instead of a log nobody reads.

The model runs in eval mode and fp32 (autocast off; TF32 as configured) and comes back in its previous mode; the
global torch RNG, which the attacks reseed, is restored too.

Split over the ranks of a process group (``shard``), each attack's batches are still the ones a single call forms (the
points robust before it, in order), dealt out to the ranks; since pyautoattack reseeds every call with the same seed,
a batch is attacked identically on any rank, and the ranks' flags are ANDed after each attack: the result is the
one-process result, bit for bit, on the same kernels (:mod:`robustscale.attacks.sharding`). Each rank resumes from its
own signed state.

On a CPU the attacks run with the model's 4-D weights in channels-last layout, and on few points with PyTorch's
native convolutions instead of oneDNN's (or NNPACK's). After APGD-CE only the still-robust points are attacked (2 to
21 of the demo's 40 digits), through FAB-T's 9 x 100 iterations and Square's 5,000 queries, and on batches that
small oneDNN's fixed cost of ~0.15 ms per convolution call (aligned buffer allocation and layout reorders, profiled)
is most of a forward pass. The kernels compute the same convolution of the same weights, equal up to float
rounding, and the choice depends on the number of points alone, never on timing (BENCHMARKS.md, "AutoAttack on a
CPU"). A WideResNet is attacked through a copy with its BatchNorms folded (:mod:`robustscale.models.folded`: the same
function in fewer calls, used only when its logits match the model's on the points), and every adversarial point
the attacks return is scored on the model itself: a point counts as broken only when the model misclassifies it.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import time
import warnings
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

import torch
from pyautoattack import AutoAttack, checks
from torch import Tensor, nn

from robustscale.attacks.pgd import eval_fp32, model_device
from robustscale.attacks.sharding import Shard, n_batches
from robustscale.enums import AutoAttackName, AutoAttackVersion, Norm, choice
from robustscale.errors import ParameterError, UserError, shown
from robustscale.models.folded import fold_batchnorm
from robustscale.store.atomic import write_json
from robustscale.store.local_key import sign, signature_holds
from robustscale.store.safe_json import JsonFileError, read_json

__all__ = ["run_autoattack", "subset_indices", "attack_list", "ATTACKS", "VERSIONS"]

ATTACKS = tuple(a.value for a in AutoAttackName)  # pyautoattack's names
VERSIONS = ("standard", "plus", "rand", "custom")  # pyautoattack's versions; custom: an attack list
_AA_NORM = {Norm.linf: "Linf", Norm.l2: "L2"}
_STATE_FORMAT = "robustscale-autoattack-state-1"
# Attack calls on at most this many pixel positions (points x height x width) use PyTorch's native convolutions on
# a CPU, NNPACK off: 16 digits of 8x8. Measured on the demo's WRN-10-1, WRN-16-1 and WRN-10-2 (BENCHMARKS.md): on
# channels-last weights they are 1.4-2.3x faster than oneDNN from 2 to 12 points, level at 16-26 and slower at 40;
# NNPACK, which PyTorch picks from 16 images on, is 2-3x slower than both.
CPU_NATIVE_MAX_PIXELS = 16 * 8 * 8
_log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------- inputs


def attack_list(version: AutoAttackVersion | str, attacks: Optional[Sequence[str]], norm: Norm = Norm.linf,
                only: Optional[Sequence[str]] = None) -> tuple[str, list[str]]:
    """``(version, attacks in run order)``. A custom list implies version ``custom``; each name is checked. ``only``
    keeps those of the version's attacks (with the version's settings: ``custom`` would give APGD-CE 5 restarts
    where ``standard`` gives it 1)."""
    version = str(version)
    if only is not None:
        return version, _only(attack_list(version, attacks, norm)[1], [str(a) for a in only], attacks)
    if attacks is not None:
        if version not in ("standard", "custom"):
            raise ParameterError(f"an attack list (attacks) needs version 'custom', not '{shown(version)}'",
                                 "attacks", "version")
        bad = [a for a in attacks if a not in ATTACKS]
        if bad or not attacks or len(set(attacks)) != len(attacks):
            raise ParameterError(f"attacks must be distinct names from {', '.join(ATTACKS)}; got "
                                 f"{shown(', '.join(attacks))}", "attacks")
        return "custom", list(attacks)
    if version not in VERSIONS or version == "custom":
        raise ParameterError(f"version must be standard, plus or rand (or custom with a list of attacks), "
                             f"got '{shown(version)}'", "version")
    return version, list(AutoAttack(nn.Identity(), norm=_AA_NORM[norm], version=version).attacks_to_run)


def _only(full: list[str], only: list[str], custom: Optional[Sequence[str]]) -> list[str]:
    if custom is not None:
        raise ParameterError("give either a custom attack list (attacks) or a subset of a version's (only)", "only")
    if not only or len(set(only)) != len(only) or not set(only) <= set(full):
        raise ParameterError(f"only must name distinct attacks of the version ({', '.join(full)}); got "
                             f"{shown(', '.join(only))}", "only")
    return [a for a in full if a in only]


def subset_indices(total: int, n: Optional[int], seed: int = 0) -> Tensor:
    """Sorted indices of ``n`` points drawn without replacement with a torch generator seeded by ``seed`` (all points
    when ``n`` is None or not smaller than ``total``): the same subset for every model evaluated with that seed."""
    if n is not None and n < 1:
        raise ParameterError(f"n must be a positive number of points, got {n}", "n")
    if n is None or n >= total:
        return torch.arange(total)
    perm = torch.randperm(total, generator=torch.Generator().manual_seed(seed))
    return perm[:n].sort().values


def _check_fp32(model: nn.Module) -> None:
    bad = sorted({str(p.dtype) for p in model.parameters() if p.is_floating_point() and p.dtype != torch.float32})
    if bad:
        raise ValueError(f"AutoAttack runs in fp32 but the model holds {', '.join(bad)} weights: evaluate a float32 "
                         "copy (autocast is switched off for you)")


# ---------------------------------------------------------------------------------------------- state on disk


def _fingerprint(model: nn.Module, indices: Tensor) -> str:
    """Hash of the weights, buffers and evaluated points: a state file is only resumed for the same evaluation."""
    h = hashlib.sha256(indices.numpy().tobytes())
    for name, t in model.state_dict().items():
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _new_state(key: dict[str, Any], robust: list[bool]) -> dict[str, Any]:
    return {"format": _STATE_FORMAT, "key": key, "clean": sum(robust), "robust": robust, "done": {},
            "current": None, "todo": [], "seconds": 0.0, "warnings": []}


def _load_state(path: Optional[Path], key: dict[str, Any]) -> tuple[Optional[dict[str, Any]], list[str]]:
    """The saved state for exactly this evaluation, or None (and a note when a file was there but not usable)."""
    if path is None:
        return None, []
    try:
        state = read_json(path)  # a regular file only, bounded in size and depth (store/safe_json.py)
    except FileNotFoundError:
        return None, []
    except (OSError, ValueError) as err:  # JsonFileError is a ValueError
        why = f" ({err})" if isinstance(err, JsonFileError) else ""
        return None, [f"state file '{shown(path)}' was unreadable{why}: started over"]
    if not isinstance(state, dict) or state.get("format") != _STATE_FORMAT or state.get("key") != key:
        return None, [f"state file '{shown(path)}' belongs to another evaluation (model, points or settings): "
                      "started over"]
    if not signature_holds({k: v for k, v in state.items() if k != "signature"}, state.get("signature")):
        return None, [f"state file '{shown(path)}' was not written by this user on this machine, or was edited: "
                      "started over (a resume state decides which points count as robust)"]
    problem = _state_problem(state, key["n"], key["attacks"])
    if problem:
        return None, [f"state file '{shown(path)}' is malformed ({problem}): started over"]
    return state, []


def _state_problem(state: dict[str, Any], n: int, attacks: Sequence[str]) -> Optional[str]:
    """What makes a signed state unusable (a bug, or a key shared with a writer of another format), or None."""
    robust, done, todo = state.get("robust"), state.get("done"), state.get("todo")
    if not (isinstance(robust, list) and len(robust) == n and all(isinstance(r, bool) for r in robust)):
        return f"'robust' is not {n} true/false flags"
    if not (isinstance(state.get("clean"), int) and 0 <= state["clean"] <= n):
        return "'clean' is not a count of points"
    if not (isinstance(done, dict) and all(a in attacks and isinstance(c, int) and 0 <= c <= n
                                           for a, c in done.items())):
        return "'done' is not a count per attack"
    if not (isinstance(todo, list) and all(isinstance(i, int) and 0 <= i < n for i in todo)):
        return "'todo' is not a list of point indices"
    if state.get("current") is not None and state["current"] not in attacks:
        return "'current' is not one of the attacks"
    if not (isinstance(state.get("seconds"), (int, float)) and state["seconds"] >= 0):
        return "'seconds' is not a duration"
    if not (isinstance(state.get("warnings"), list) and all(isinstance(w, str) for w in state["warnings"])):
        return "'warnings' is not a list of messages"
    return None


def _save_state(path: Optional[Path], state: dict[str, Any]) -> None:
    if path is not None:
        state.pop("signature", None)
        write_json(path, {**state, "signature": sign(state)})


# ---------------------------------------------------------------------------------------------- capture


class _Collect(logging.Handler):
    """Keeps the messages of WARNING and above; forwards the rest (progress) to our own logger."""

    def __init__(self, sink: list[str]):
        super().__init__(logging.DEBUG)
        self.sink = sink

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno >= logging.WARNING:
            self.sink.append(record.getMessage())
        else:
            _log.debug("auto-attack: %s", record.getMessage())


@contextlib.contextmanager
def _captured(sink: list[str]) -> Iterator[None]:
    """Route pyautoattack's logger warnings and ``warnings.warn`` calls into ``sink`` for the duration.

    The 'auto-attack' logger stops propagating meanwhile (its checks run once per batch, and the deduplicated
    messages are logged once at the end instead); its level and propagation are restored after.
    """
    logger = logging.getLogger("auto-attack")
    handler, level, propagate = _Collect(sink), logger.level, logger.propagate
    logger.addHandler(handler)
    logger.propagate = False
    if not logger.isEnabledFor(logging.WARNING):
        logger.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield
        sink.extend(f"{w.category.__name__}: {w.message}" for w in caught)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        logger.propagate = propagate


# ---------------------------------------------------------------------------------------------- the run


def _clean_flags(model: nn.Module, x: Tensor, y: Tensor, batch_size: int, device: torch.device,
                 shard: Shard) -> list[bool]:
    """Whether each point is classified correctly: this rank's batches forwarded, the others' filled in (AND)."""
    flags = [True] * len(y)
    with torch.no_grad():
        for b in shard.mine(range(n_batches(len(y), batch_size))):
            rows = slice(b * batch_size, (b + 1) * batch_size)
            flags[rows] = (model(x[rows].to(device)).argmax(1).cpu() == y[rows]).tolist()
    return shard.all_and(flags)


@contextlib.contextmanager
def _channels_last(model: nn.Module, device: torch.device) -> Iterator[None]:
    """On a CPU, the model's 4-D weights in channels-last layout for the duration (oneDNN and the native kernels both
    skip a layout reorder per call). The same parameters keep their values; their original tensors are put back
    after, so the caller's model (a wrapper that counts calls, an optimizer holding the parameters) is untouched."""
    saved = [(p, p.data) for p in model.parameters() if p.dim() == 4] if device.type == "cpu" else []
    try:
        for param, data in saved:
            param.data = data.contiguous(memory_format=torch.channels_last)
        yield
    finally:
        for param, data in saved:
            param.data = data


@contextlib.contextmanager
def _conv_kernels(x: Tensor, device: torch.device) -> Iterator[None]:
    """PyTorch's native convolutions (neither oneDNN nor NNPACK) for an attack call on a CPU batch of at most
    :data:`CPU_NATIVE_MAX_PIXELS` pixel positions; both flags are restored after. They are set directly: the
    ``flags`` context managers warn about Intel GPUs, and the warning would land in the result."""
    native = device.type == "cpu" and x.dim() == 4 and len(x) * x.shape[-2] * x.shape[-1] <= CPU_NATIVE_MAX_PIXELS
    mkldnn, nnpack = torch._C._get_mkldnn_enabled(), torch._C._get_nnpack_enabled()
    if native:
        torch._C._set_mkldnn_enabled(False)
        torch._C._set_nnpack_enabled(False)
    try:
        yield
    finally:
        torch._C._set_mkldnn_enabled(mkldnn)
        torch._C._set_nnpack_enabled(nnpack)


def _attack_batch(model: nn.Module, attacked: nn.Module, x: Tensor, y: Tensor, attack: str, *, key: dict[str, Any],
                  device: torch.device) -> Tensor:
    """One ``run_standard_evaluation`` call with a single attack on one batch of robust points, run on ``attacked``
    (the model or its folded copy): the model's own predictions on the adversarial points it returns (equal to ``y``
    where the point is still robust)."""
    custom = key["version"] == "custom"
    aa = AutoAttack(attacked, device=device, eps=key["eps"], norm=_AA_NORM[key["norm"]], seed=key["seed"],
                    version=key["version"], attacks=key["attacks"] if custom else None)
    aa.attacks_to_run = [attack]  # a fresh object, configured by its version, restricted to the one attack
    with _conv_kernels(x, device):
        x_adv, _ = aa.run_standard_evaluation(x, y, batch_size=key["batch_size"])
        with torch.no_grad():
            return model(x_adv.to(device)).argmax(1).cpu()


def _attacked_model(model: nn.Module, x: Tensor, device: torch.device, batch_size: int, shard: Shard) -> nn.Module:
    """The folded copy of a WideResNet on a CPU when its logits match the model's on the first batch of points
    (to 1e-4), else the model. Rank 0 compares and every rank follows, so the ranks attack through the same function
    and the comparison's forwards are counted once."""
    folded = fold_batchnorm(model) if device.type == "cpu" else None
    if folded is None:
        return model
    same = None
    if shard.rank == 0:
        xb = x[:batch_size].to(device)
        with torch.no_grad(), _conv_kernels(xb, device):
            same = torch.allclose(folded(xb), model(xb), rtol=1e-4, atol=1e-4)
    return folded if shard.broadcast(same) else model


def _run_attack(model, attacked, x, y, attack, state, *, key, device, path, clock, sink, shard) -> None:
    """Attack this rank's batches of the points still robust before ``attack``, one batch at a time, saving the state
    (and the warnings so far) after each. The batches are those of the whole evaluation (the robust points in order,
    ``batch_size`` each, as one ``run_standard_evaluation`` call forms them); rank ``r`` of ``P`` takes every P-th."""
    if state["current"] != attack:
        robust = [i for i, r in enumerate(state["robust"]) if r]
        batches = [robust[k:k + key["batch_size"]] for k in range(0, len(robust), key["batch_size"])]
        state["current"], state["todo"] = attack, [i for batch in shard.mine(batches) for i in batch]
    while state["todo"]:  # this rank's batches in order: only the last global batch is short, and it comes last
        batch = state["todo"][:key["batch_size"]]
        y_adv = _attack_batch(model, attacked, x[batch], y[batch], attack, key=key, device=device)
        for i, still_robust in zip(batch, (y_adv == y[batch]).tolist()):
            state["robust"][i] = still_robust
        state["todo"], state["seconds"] = state["todo"][len(batch):], clock()
        state["warnings"] = _unique(state["warnings"] + sink)
        _save_state(path, state)


def _end_attack(attack: str, state: dict[str, Any], path: Optional[Path], shard: Shard) -> None:
    """Combine the ranks' flags after ``attack`` (a point is robust when no rank broke it), count, save; then wait
    for every rank to have saved, so that no rank starts the next attack while another could still resume this one.

    Idempotent, which is what makes a resume of ranks that stopped at different places agree: a rank that had
    already ended ``attack`` holds the combined flags, and combining them again changes nothing."""
    state["robust"] = shard.all_and(state["robust"])
    state["done"][attack], state["current"], state["todo"] = sum(state["robust"]), None, []
    _save_state(path, state)
    shard.barrier()


def _square_check(state: dict[str, Any], n: int) -> None:
    """pyautoattack's own 'Square beat the white-box attacks' check, on the whole run's per-attack accuracies."""
    accs = {"clean": state["clean"] / n, **{a: c / n for a, c in state["done"].items()}}
    checks.check_square_sr(accs, logger=logging.getLogger("auto-attack"))


def _rng_devices(device: torch.device) -> list[int]:
    return [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else []


def _unique(items: list[str]) -> list[str]:
    return list(dict.fromkeys(items))


def run_autoattack(model: nn.Module, x: Tensor, y: Tensor, *, eps: float, norm: Norm | str = Norm.linf,
                   version: AutoAttackVersion | str = AutoAttackVersion.standard,
                   attacks: Optional[Sequence[str]] = None, only: Optional[Sequence[str]] = None,
                   n: Optional[int] = None, seed: int = 0, batch_size: int = 500,
                   state_path: Optional[str | Path] = None, shard: Optional[Shard] = None) -> dict[str, Any]:
    """Robust accuracy under AutoAttack, the number the paper (and RobustBench) reports.

    Args:
        model: maps images in [0, 1] to logits; run in eval mode and fp32, restored after.
        x, y: the test points (``x`` float in [0, 1]); ``n`` picks a seeded subset of them (:func:`subset_indices`).
        eps, norm: the threat model (``linf`` or ``l2``), eps in pixel units.
        version: ``standard`` (APGD-CE, APGD-T, FAB-T, Square), ``plus``, ``rand``; ``attacks`` runs a custom list.
        only: run only these of the version's attacks, with its settings and in its order (the demo: standard's
            ``apgd-ce`` and ``apgd-t``); the result lists the ones left out in ``skipped``.
        seed: seeds the attacks and the subset.
        batch_size: points per attack batch (results depend on it through the per-batch seeding).
        state_path: JSON file resumed when it holds this same evaluation (model, points, settings, rank and world
            size), written after every batch; a file from another evaluation is overwritten (and said so in
            ``warnings``). Under a ``shard``, each rank's own file.
        shard: this process's part of an evaluation split over the ranks of a process group (every rank calls this
            function): each attack's batches are formed as in one process and dealt out to the ranks, and the
            ranks' flags are combined after every attack, so the result is the one-process result, bit for bit
            (README "Evaluation at scale"). Default: all of it in this process.

    Returns:
        ``clean_acc``, ``robust_acc``, ``per_attack`` (attack -> robust accuracy after it, in run order), ``n``,
        ``seconds`` and ``points_per_s`` (over all sessions of a resumed run; the slowest rank's), ``warnings`` (all
        ranks'), ``version``, ``attacks`` (those run), ``skipped`` (the version's attacks ``only`` left out), ``eps``,
        ``norm``, ``seed``, ``resumed``, ``attacked`` (``"folded copy"`` when the attacks ran on the BatchNorm-folded
        copy, else ``"model"``; the points are scored on the model either way). The same on every rank.
    """
    norm, shard = choice(Norm, norm, "norm"), shard or Shard()
    version, to_run = attack_list(version, attacks, norm, only)
    skipped = [a for a in attack_list(version, attacks, norm)[1] if a not in to_run] if only is not None else []
    _check_fp32(model)
    if len(y) == 0:
        raise UserError("AutoAttack needs at least one test point")
    idx = subset_indices(len(y), n, seed)
    path = Path(state_path) if state_path is not None else None
    key = {"eps": float(eps), "norm": norm, "version": version, "attacks": to_run, "seed": seed,
           "batch_size": batch_size, "n": len(idx), "fingerprint": _fingerprint(model, idx) if path else None,
           "rank": shard.rank, "world_size": shard.world_size}
    sink: list[str] = []
    device = model_device(model)
    with eval_fp32(model), torch.random.fork_rng(devices=_rng_devices(device)), _captured(sink):
        state, notes = _load_state(path, key)
        if not all(shard.gather(state is not None)):  # resume together or not at all
            notes += ["another rank had no state to resume: started over"] if state is not None else []
            state = None
        resumed = state is not None
        state, folded = _attack_points(model, x[idx], y[idx], state, key=key, path=path, sink=sink, shard=shard)
    state["warnings"] = _unique(state["warnings"] + notes + sink)
    _save_state(path, state)
    every = _unique([w for warnings in shard.gather(state["warnings"]) for w in warnings])
    for message in every if shard.rank == 0 else []:
        _log.warning("AutoAttack: %s", message)
    return _result(state, key, resumed, folded=folded, warnings=every, skipped=skipped,
                   seconds=max(shard.gather(state["seconds"])))


def _attack_points(model: nn.Module, x: Tensor, y: Tensor, state: Optional[dict[str, Any]], *, key: dict[str, Any],
                   path: Optional[Path], sink: list[str], shard: Shard) -> tuple[dict[str, Any], bool]:
    """Run every attack not done yet on the evaluated points (the clean pass first, for a new state); returns the
    final state and whether the attacks ran on the folded copy."""
    device, t0 = model_device(model), time.perf_counter()
    if state is None:  # saved at once: once the clean pass (a collective) is over, every rank has a state to resume
        state = _new_state(key, _clean_flags(model, x, y, key["batch_size"], device, shard))
        _save_state(path, state)
    before = state["seconds"]  # time spent by earlier sessions of a resumed run

    def clock() -> float:
        return before + time.perf_counter() - t0

    with _channels_last(model, device):
        attacked = _attacked_model(model, x, device, key["batch_size"], shard)
        for attack in key["attacks"]:
            if attack not in state["done"]:
                _run_attack(model, attacked, x, y, attack, state, key=key, device=device, path=path, clock=clock,
                            sink=sink, shard=shard)
            _end_attack(attack, state, path, shard)
    _square_check(state, key["n"])
    state["seconds"] = clock()
    return state, attacked is not model


def _result(state: dict[str, Any], key: dict[str, Any], resumed: bool, *, folded: bool, warnings: list[str],
            skipped: list[str], seconds: float) -> dict[str, Any]:
    n = key["n"]
    return {"attack": "autoattack", "version": key["version"], "attacks": key["attacks"], "skipped": skipped,
            "eps": key["eps"], "norm": key["norm"], "n": n, "seed": key["seed"], "clean_acc": state["clean"] / n,
            "robust_acc": sum(state["robust"]) / n, "per_attack": {a: state["done"][a] / n for a in key["attacks"]},
            "seconds": seconds, "points_per_s": n / seconds if seconds > 0 else None,
            "warnings": list(warnings), "resumed": resumed, "attacked": "folded copy" if folded else "model"}
