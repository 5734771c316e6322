"""Stop rules beside early stopping: catastrophic overfitting caught while training, and patience.

Single-step adversarial training can collapse: within an epoch or two the model's accuracy against multi-step attacks
falls towards zero while its accuracy against the single-step training attack holds or rises (Wong, Rice & Kolter
2020, "Fast is better than free", Sec. 5 and Fig. 2; Andriushchenko & Flammarion 2020, "Understanding and improving
fast adversarial training", Sec. 3; Kim, Lee & Lee 2021, "Understanding catastrophic overfitting in single-step
adversarial training", Fig. 1). PGD-40 early stopping already keeps the best checkpoint from before the collapse, so
every epoch trained after it only costs; these rules say when to stop paying.

The collapse rule (:meth:`Watch.observe`), at each PGD-40 validation:

- the validation's PGD-40 accuracy has fallen to ``1 - train.collapse_drop`` of its best so far or below (default:
  half), and by more than ``train.collapse_sigmas`` standard errors of the difference of two accuracies on
  ``data.val_size`` points (so a few points of noise on a small subset, or on a model that is not robust yet, never
  fire it);
- while the training attack's accuracy on the epoch's batches is at least ``1 - train.collapse_train_drop`` of its
  value at that best (default: 90%): the training attack still finds the model robust. Without this half, a robust
  accuracy that falls together with the training attack's is an unstable run (a learning rate too large), not the
  single-step attack being fooled.

Both tests are relative to the run's own best, so they hold whatever the absolute strength of the PGD-40 attack (its
step size; #28 makes it stronger): a collapse is a fall to a fraction of what the same attack measured before. Wong
et al.'s own early stop (``--early-stop`` in locuslab/fast_adversarial, CIFAR10/train_fgsm.py) fires on a fall of
0.2 (absolute) in PGD-5 accuracy on one training batch from the previous epoch, at a robust accuracy of about 0.45
on CIFAR-10: a relative fall of about 45%. Collapses in all three papers fall to near 0 (a relative fall near 100%).
On 55 digits runs (BENCHMARKS.md, "Collapse on digits"; 53 of them single-step) the falls a detector must not flag
were of two kinds: from a best under 0.2 (a model not robust yet), relative falls of up to 92% but within 3.6
standard errors (noise); from a best of 0.2 or more, falls beyond 3 standard errors of at most 38% (beyond 4, at
most 28%). The two runs flagged fell by 61-65% at 4.3-5 standard errors. The defaults, half and 4 standard errors,
sit between. Robust overfitting (Rice, Wong & Kolter 2020) erodes the robust accuracy slowly, by about 15% relative
over a hundred epochs: that is ``train.patience``'s case, not this rule's.

A probe between validations (PGD on a fixed training batch every few steps) would catch a collapse within an epoch;
the loop validates every epoch on the paper's grid and the digits recipes (``eval.pgd_every: 1``), so a stop comes
at most one epoch after the collapse and a probe could save at most that epoch: it is not built.

Patience: with ``train.patience`` set, training stops after that many validations without a better checkpoint
(the loop's own selection: PGD-40 for adversarial training, clean accuracy for standard training).

Pure logic on the metrics the loop already logs (no torch). The state is a small JSON-able dict kept in the loop's
progress, so it is checkpointed with it and a resumed run decides exactly as an uninterrupted one; every rank sees
the same (all-reduced) metrics, so every rank decides alike.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from robustscale.config import Config
from robustscale.enums import Loss, OnCollapse, StopReason
from robustscale.store.record import Alarm

__all__ = ["StopRules", "Watch", "describe"]


@dataclass(frozen=True)
class StopRules:
    """The thresholds, from ``train.*`` (see :class:`robustscale.config.TrainConfig` for their sources)."""

    on_collapse: OnCollapse = OnCollapse.stop
    collapse_drop: float = 0.5
    collapse_train_drop: float = 0.1
    collapse_sigmas: float = 4.0
    patience: int | None = None
    epochs: int = 100  # planned: an alarm at the last epoch ends nothing early
    n_val: int = 1024  # validation points: the noise a fall must exceed
    attacked: bool = True  # trained against an attack (standard training has no training attack to compare)

    @classmethod
    def from_config(cls, cfg: Config) -> "StopRules":
        t = cfg.train
        return cls(t.on_collapse, t.collapse_drop, t.collapse_train_drop, t.collapse_sigmas, t.patience, t.epochs,
                   cfg.data.val_size, attacked=t.loss is not Loss.standard and cfg.attack.steps > 0)


@dataclass
class Watch:
    """What the rules remember between validations; :meth:`to_dict` is what the checkpoint keeps."""

    best_pgd_acc: float | None = None  # the best PGD-40 validation accuracy so far ...
    best_epoch: int | None = None  # ... its epoch ...
    best_train_adv_acc: float | None = None  # ... and the training attack's accuracy in that epoch
    improved_epoch: int | None = None  # the last validation that gave a better checkpoint
    since_improved: int = 0  # validations since then
    collapsed: bool = False  # the last validation was in a collapse: a warning is raised once per collapse
    alarms: list[Alarm] = field(default_factory=list)  # alarms that did not end training
    stopped: Alarm | None = None  # the alarm that ended it

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "alarms": [a.to_dict() for a in self.alarms],
                "stopped": self.stopped.to_dict() if self.stopped is not None else None}

    @classmethod
    def from_dict(cls, raw: dict[str, Any] | None) -> "Watch":
        """The state a checkpoint kept (empty for a checkpoint written before these rules: a fresh watch)."""
        raw = dict(raw or {})
        alarms = [Alarm.from_dict(a) for a in raw.pop("alarms", [])]
        stopped = raw.pop("stopped", None)
        return cls(**raw, alarms=alarms, stopped=Alarm.from_dict(stopped) if stopped is not None else None)

    def observe(self, rules: StopRules, epoch: int, row: dict[str, Any], *, improved: bool) -> Alarm | None:
        """Take one epoch's metrics (the loop's log row; validation epochs carry ``val_pgd_acc``) and return the
        alarm it raises, if any; an alarm that stops training is also kept as :attr:`stopped`."""
        if self.stopped is not None or "val_pgd_acc" not in row:
            return None
        self.since_improved = 0 if improved else self.since_improved + 1
        self.improved_epoch = epoch if improved else self.improved_epoch
        alarm = self._collapse(rules, epoch, row) or self._patience(rules, epoch, row)
        self._track_best(epoch, row)
        if alarm is None:
            return None
        if rules.on_collapse is OnCollapse.stop or alarm.reason is StopReason.no_improvement:
            if epoch < rules.epochs:
                self.stopped = alarm
                return alarm
        self.alarms.append(alarm)
        return alarm

    def _collapse(self, rules: StopRules, epoch: int, row: dict[str, Any]) -> Alarm | None:
        """A collapse alarm when one begins at this validation (None while it lasts: warned once)."""
        was, self.collapsed = self.collapsed, rules.on_collapse is not OnCollapse.ignore and rules.attacked \
            and self._has_collapsed(rules, row)
        if not self.collapsed or was:
            return None
        return self._alarm(StopReason.catastrophic_overfitting, epoch, row, self.best_epoch)

    def _has_collapsed(self, rules: StopRules, row: dict[str, Any]) -> bool:
        best, now = self.best_pgd_acc, row["val_pgd_acc"]
        if best is None or self.best_train_adv_acc is None or row.get("train_adv_acc") is None:
            return False
        noise = math.sqrt((best * (1 - best) + now * (1 - now)) / max(rules.n_val, 1))
        fell = now <= (1 - rules.collapse_drop) * best and best - now > rules.collapse_sigmas * noise
        return fell and row["train_adv_acc"] >= (1 - rules.collapse_train_drop) * self.best_train_adv_acc

    def _patience(self, rules: StopRules, epoch: int, row: dict[str, Any]) -> Alarm | None:
        if rules.patience is None or self.since_improved < rules.patience or epoch >= rules.epochs:
            return None
        return self._alarm(StopReason.no_improvement, epoch, row, self.improved_epoch)

    def _alarm(self, reason: StopReason, epoch: int, row: dict[str, Any], best_epoch: int | None) -> Alarm:
        return Alarm(reason, epoch, best_epoch, val_pgd_acc=row["val_pgd_acc"], best_val_pgd_acc=self.best_pgd_acc,
                     train_adv_acc=row.get("train_adv_acc"), best_train_adv_acc=self.best_train_adv_acc,
                     validations_since_best=self.since_improved)

    def _track_best(self, epoch: int, row: dict[str, Any]) -> None:
        if self.best_pgd_acc is None or row["val_pgd_acc"] > self.best_pgd_acc:
            self.best_pgd_acc, self.best_epoch = row["val_pgd_acc"], epoch
            self.best_train_adv_acc = row.get("train_adv_acc")


def describe(alarm: Alarm, stops: bool) -> str:
    """The alarm as one log line: what fell, from what, and what training does about it."""
    then = "training stops; the best checkpoint is evaluated" if stops else "training goes on"
    if alarm.reason is StopReason.no_improvement:
        return (f"no better checkpoint in {alarm.validations_since_best} validations (best at epoch "
                f"{alarm.best_epoch}): {then}")
    return (f"catastrophic overfitting at epoch {alarm.epoch}: PGD validation accuracy {alarm.val_pgd_acc:.1%} "
            f"(best {alarm.best_val_pgd_acc:.1%} at epoch {alarm.best_epoch}) while the training attack's accuracy "
            f"is {alarm.train_adv_acc:.1%} ({alarm.best_train_adv_acc:.1%} then): {then}")
