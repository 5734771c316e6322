"""Attacks: PGD as plain functions (training attack and PGD-40 metric), AutoAttack through the authors' code, the
sanity checks every evaluation carries, and one evaluation (an attack and its checks) of a model in memory."""

from robustscale.attacks.autoattack import ATTACKS, VERSIONS, attack_list, run_autoattack, subset_indices
from robustscale.attacks.checks import failed_checks, sanity_checks
from robustscale.attacks.evaluation import clean_accuracy, evaluate_model, result_path
from robustscale.attacks.pgd import adversarial_loss, eval_fp32, frozen_bn, pgd, pgd_accuracy
from robustscale.attacks.sharding import Shard

__all__ = ["pgd", "frozen_bn", "eval_fp32", "pgd_accuracy", "adversarial_loss", "run_autoattack", "subset_indices",
           "attack_list", "sanity_checks", "failed_checks", "evaluate_model", "clean_accuracy", "result_path", "ATTACKS",
           "VERSIONS", "Shard"]
