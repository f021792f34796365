"""The attack harness: our batched, verified L2 DeepFool, the standard attacks of torchattacks,
foolbox and the authors' AutoAttack, and the checks that a robustness number can be trusted.

Importing this package registers the attack methods (``ATTACKS``; ``bench list attacks``)
and the evaluators a suite can list, in this order (each needs the ones before it):

    evaluation:
      evaluators: [deepfool, attacks, best_known, attack_unit_test, reliability, attack_collapse]
      settings:
        deepfool: {overshoot: 0.02, max_iter: 50}          # all classes, true label as reference
        attacks: {eps_l2: [36/255, 0.5, 1.0], eps_linf: [2/255, 8/255], params: {pgd-l2: {steps: 10}}}
        reliability: {ce_margin_gap: 0.05, overstatement_share: 0.25}
        attack_collapse: {eps_l2: 0.5}

* ``best_known``: per input the smallest verified perturbation over every attack (ρ_best),
  best-known robust accuracy per ε;
* ``reliability``: attack-failure checks (loss consistency, unbounded sanity, convergence,
  DeepFool overstatement, AutoAttack's own flags, trimmed budgets), each finding naming the
  numbers it doubts;
* ``attack_collapse``: latent leaps, R and NC1 under attack and under equal-norm noise;
* ``attack_unit_test``: the suite's attacks on a model with a planted adversarial within ε of
  each input (Zimmermann et al. 2022): the share they find (``suite_pass_rate``, ``passed``);
* ``layerwise``: NC1, CDNV, GNC2, effective rank and nearest-centre accuracy at every layer,
  on the training split, clean, best-known adversarial and equal-norm noisy inputs;

``python -m bench attack --runs DIR [--attacks deepfool pgd-l2 ddn-l2 reliability]`` runs them
on finished runs without retraining (the evaluators a requested one needs are added).
"""
from bench.attacks.methods import ATTACKS, AttackMethod, attack_guard, get_attack, register_attack
from bench.attacks import library  # noqa: F401  (registers the torchattacks/foolbox methods)
from bench.attacks import autoattack  # noqa: F401  (registers autoattack-l2/-linf)
from bench.attacks.deepfool import DeepFoolOptions, DeepFoolResult, deepfool
from bench.attacks.attack_evaluators import AttacksOptions, attacks_evaluator, deepfool_evaluator
from bench.attacks.best_known import best_known, best_known_evaluator
# registered before reliability, which may read its verdict (run order follows registration)
from bench.attacks.attack_unit_test import AttackUnitTestOptions, attack_unit_test_evaluator
from bench.attacks.reliability import ReliabilityOptions, reliability_evaluator
from bench.attacks.collapse import CollapseOptions, attack_collapse_evaluator, leap_share
from bench.attacks.layer_collapse import LayerwiseOptions, layerwise_evaluator

__all__ = [
    "ATTACKS", "AttackMethod", "AttackUnitTestOptions", "AttacksOptions", "CollapseOptions", "DeepFoolOptions", "DeepFoolResult",
    "LayerwiseOptions", "ReliabilityOptions", "attack_collapse_evaluator", "attack_guard", "attack_unit_test_evaluator",
    "attacks_evaluator", "best_known", "best_known_evaluator", "deepfool", "deepfool_evaluator", "get_attack",
    "layerwise_evaluator", "leap_share", "register_attack", "reliability_evaluator",
]
