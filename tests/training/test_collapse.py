"""The stop rules (training/collapse.py) as pure logic: metric rows in, alarms out, no training."""

import json

import pytest

from robustscale.enums import OnCollapse, StopReason
from robustscale.store.record import Alarm, RecordError
from robustscale.training.collapse import StopRules, Watch, describe

RULES = StopRules(n_val=200, epochs=20)


def _rows(pgd, adv):
    return [{"epoch": e, "val_pgd_acc": p, "train_adv_acc": a} for e, (p, a) in enumerate(zip(pgd, adv), start=1)]


def _run(rules, rows, best=None):
    """Feed rows to a fresh watch (improved = a new best PGD accuracy, as the loop's selection for AT); returns the
    watch and the alarms raised, each with the epoch it was raised at."""
    watch, raised, top = Watch(), [], -1.0
    for row in rows:
        improved = row.get("val_pgd_acc", -1.0) > top
        top = max(top, row.get("val_pgd_acc", -1.0))
        alarm = watch.observe(rules, row["epoch"], row, improved=improved)
        if alarm is not None:
            raised.append(alarm)
        if watch.stopped is not None:
            break
    return watch, raised


# PGD-40 validation accuracy rises, then collapses while the FGSM training accuracy climbs (the shape of Wong et al.'s
# Fig. 2 and of configs/collapse.yaml on digits)
COLLAPSE = _rows([0.10, 0.30, 0.45, 0.50, 0.04, 0.01, 0.00], [0.20, 0.40, 0.55, 0.60, 0.75, 0.85, 0.90])
# a healthy multi-step run: noisy, no collapse
HEALTHY = _rows([0.10, 0.30, 0.45, 0.40, 0.52, 0.47, 0.55], [0.20, 0.35, 0.45, 0.50, 0.52, 0.55, 0.57])


def test_collapse_stops_at_the_validation_where_it_happens():
    watch, raised = _run(RULES, COLLAPSE)
    assert [a.epoch for a in raised] == [5] and watch.stopped is raised[0]
    alarm = watch.stopped
    assert alarm.reason is StopReason.catastrophic_overfitting and alarm.best_epoch == 4
    assert (alarm.val_pgd_acc, alarm.best_val_pgd_acc) == (0.04, 0.50)
    assert (alarm.train_adv_acc, alarm.best_train_adv_acc) == (0.75, 0.60)
    assert watch.alarms == []
    assert "catastrophic overfitting at epoch 5" in describe(alarm, stops=True)


def test_healthy_run_never_fires():
    watch, raised = _run(RULES, HEALTHY)
    assert raised == [] and watch.stopped is None


def test_a_fall_of_both_accuracies_is_not_a_collapse():
    """Robust accuracy and training-attack accuracy falling together: an unstable run, not the attack fooled."""
    rows = _rows([0.30, 0.50, 0.05], [0.40, 0.60, 0.20])
    assert _run(RULES, rows)[1] == []
    # the training attack may fall a little (collapse_train_drop) and still count as holding
    rows = _rows([0.30, 0.50, 0.05], [0.40, 0.60, 0.55])
    assert [a.epoch for a in _run(RULES, rows)[1]] == [3]
    assert _run(StopRules(n_val=200, collapse_train_drop=0.0), rows)[1] == []


def test_relative_drop_not_absolute_level():
    """The same collapse measured by a weaker or a stronger PGD-40 (its accuracies scaled) fires at the same epoch;
    a fall smaller than collapse_drop of the best never does, at any level."""
    for scale in (0.5, 1.0, 1.6):
        rows = _rows([p * scale for p in (0.10, 0.30, 0.45, 0.50, 0.04)], [0.2, 0.4, 0.55, 0.6, 0.75])
        assert [a.epoch for a in _run(RULES, rows)[1]] == [5], scale
        rows = _rows([p * scale for p in (0.10, 0.30, 0.45, 0.50, 0.27)], [0.2, 0.4, 0.55, 0.6, 0.75])
        assert _run(RULES, rows)[1] == [], scale
    assert [a.epoch for a in _run(StopRules(n_val=200, collapse_drop=0.4), rows)[1]] == [5]


def test_noise_on_a_small_or_barely_robust_subset_does_not_fire():
    """A fall of a few points is noise: 0.06 -> 0.01 on 200 points (2.7 standard errors), or 0.5 -> 0.2 on 20 points;
    train.collapse_sigmas sets how many standard errors a fall must exceed."""
    rows = _rows([0.03, 0.06, 0.01], [0.3, 0.5, 0.7])
    assert _run(RULES, rows)[1] == []
    assert [a.epoch for a in _run(StopRules(n_val=200, collapse_sigmas=2.0), rows)[1]] == [3]
    rows = _rows([0.30, 0.50, 0.20], [0.4, 0.6, 0.7])
    assert _run(StopRules(n_val=20), rows)[1] == []
    assert [a.epoch for a in _run(StopRules(n_val=500), rows)[1]] == [3]


def test_warn_raises_once_per_collapse_and_trains_on():
    rules = StopRules(on_collapse=OnCollapse.warn, n_val=200, epochs=20)
    rows = COLLAPSE + [
        {"epoch": 8, "val_pgd_acc": 0.45, "train_adv_acc": 0.8},  # recovers ...
        {"epoch": 9, "val_pgd_acc": 0.02, "train_adv_acc": 0.9}]  # ... and collapses again
    watch, raised = _run(rules, rows)
    assert watch.stopped is None and [a.epoch for a in raised] == [5, 9] and watch.alarms == raised


def test_ignore_has_no_collapse_rule_and_standard_training_neither():
    assert _run(StopRules(on_collapse=OnCollapse.ignore, n_val=200), COLLAPSE)[1] == []
    assert _run(StopRules(n_val=200, attacked=False), COLLAPSE)[1] == []


def test_patience_counts_validations_without_a_better_checkpoint():
    rules = StopRules(on_collapse=OnCollapse.ignore, patience=3, n_val=200, epochs=20)
    rows = _rows([0.1, 0.3, 0.5, 0.48, 0.49, 0.47, 0.5], [0.2] * 7)
    watch, raised = _run(rules, rows)
    assert [a.epoch for a in raised] == [6] and watch.stopped.reason is StopReason.no_improvement
    assert watch.stopped.best_epoch == 3 and watch.stopped.validations_since_best == 3
    assert "no better checkpoint in 3 validations (best at epoch 3)" in describe(watch.stopped, stops=True)


def test_epochs_without_validation_are_skipped_and_the_last_epoch_ends_nothing_early():
    rules = StopRules(n_val=200, epochs=5, patience=1)
    rows = [{"epoch": 1, "train_adv_acc": 0.3}, {"epoch": 2, "val_pgd_acc": 0.3, "train_adv_acc": 0.4}, {"epoch": 3, "train_adv_acc": 0.5},
            {"epoch": 4, "val_pgd_acc": 0.5, "train_adv_acc": 0.6},
            {"epoch": 5, "val_pgd_acc": 0.02, "train_adv_acc": 0.9}]
    watch, raised = _run(rules, rows)
    assert [a.epoch for a in raised] == [5] and watch.stopped is None and watch.alarms == raised
    assert raised[0].best_epoch == 4


def test_state_round_trips_through_json_and_resumes_identically():
    """What the checkpoint keeps: a watch rebuilt from its JSON after every row decides as one that never left."""
    rules = StopRules(on_collapse=OnCollapse.warn, n_val=200, epochs=20)
    straight, _ = _run(rules, COLLAPSE)
    watch = Watch()
    for row in COLLAPSE:
        watch = Watch.from_dict(json.loads(json.dumps(watch.to_dict())))
        watch.observe(rules, row["epoch"], row, improved=row["epoch"] <= 4)
    assert watch == straight and watch.alarms[0].reason is StopReason.catastrophic_overfitting
    assert Watch.from_dict({}) == Watch() == Watch.from_dict(None)  # a checkpoint from before the rules


def test_alarm_json_is_checked():
    alarm = Alarm(StopReason.no_improvement, 3, best_epoch=1)
    assert Alarm.from_dict(json.loads(json.dumps(alarm.to_dict()))) == alarm
    with pytest.raises(RecordError, match="reason"):
        Alarm.from_dict({"reason": "bored", "epoch": 1})
    with pytest.raises(RecordError, match="epoch"):
        Alarm.from_dict({"reason": "no_improvement"})
    with pytest.raises(RecordError, match="not an object"):
        Alarm.from_dict([1])
