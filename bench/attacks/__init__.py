"""The attack harness: our batched, verified L2 DeepFool, the standard attacks of torchattacks
and foolbox, and the gradient-masking cross-check.

Importing this package registers the attack methods (``ATTACKS``; ``bench list attacks``)
and three evaluators a suite can list, in this order:

    evaluation:
      evaluators: [deepfool, attacks, masking]
      settings:
        deepfool: {overshoot: 0.02, max_iter: 50}          # all classes, true label as reference
        attacks: {eps_l2: [36/255, 0.5, 1.0], eps_linf: [2/255, 8/255], params: {pgd-l2: {steps: 10}}}
        masking: {margin: 0.1, threshold: 0.25}

``python -m bench attack --runs DIR [--attacks deepfool pgd-l2 ddn-l2 masking]`` runs them on
finished runs without retraining.
"""
from bench.attacks.methods import ATTACKS, AttackMethod, attack_guard, get_attack, register_attack
from bench.attacks import library  # noqa: F401  (registers the torchattacks/foolbox methods)
from bench.attacks.deepfool import DeepFoolOptions, DeepFoolResult, deepfool
from bench.attacks.attack_evaluators import AttacksOptions, attacks_evaluator, deepfool_evaluator
from bench.attacks.masking import MaskingOptions, masking_check, masking_evaluator

__all__ = [
    "ATTACKS", "AttackMethod", "AttacksOptions", "DeepFoolOptions", "DeepFoolResult", "MaskingOptions",
    "attack_guard", "attacks_evaluator", "deepfool", "deepfool_evaluator", "get_attack", "masking_check",
    "masking_evaluator", "register_attack",
]
