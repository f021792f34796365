"""How close a minimum-norm attack comes to the per-input best known: AttackBench's optimality.

AttackBench (Cinà et al. 2024, "AttackBench: Evaluating Gradient-based Attacks for
Adversarial Examples") scores an attack by the area under its robust-accuracy curve
RA_a(ε) = share of inputs with d_a,i > ε, against the curve of the per-input best known
d*_i (the smallest verified perturbation any attack found), on ε ∈ [0, D] with
D = max_i d*_i:

    optimality_a = 1 − (A_a − A*) / (clean_acc · D − A*),     A = ∫₀ᴰ RA(ε) dε

1 for an attack that found the best known on every input, 0 for one that found nothing
inside D. The area under a step curve clipped at D is exact: A = (1/N) Σ_i min(d_i, D)
(misclassified inputs, d = 0, add nothing), so over the correct inputs I that some attack
flipped

    optimality_a = Σ_{i∈I} (D − min(d_a,i, D)) / Σ_{i∈I} (D − d*_i)

(AttackBench's code integrates the same curve with the trapezoid rule over the distinct
distances, which differs from the exact area by at most one step). An input no attack
flipped has no finite d* and is left out (counted in ``n_excluded``). Also reported: the
per-input ratio d*_i / d_a,i averaged over I (0 where the attack failed), a simpler reading
of the same question. The budget an attack spent (forward + backward passes per input,
measured by the ``attacks`` evaluator) is stored beside it: AttackBench compares attacks at
an equal budget (2,000 passes per input).
"""
from __future__ import annotations

import math

import numpy as np


def optimality(attack: np.ndarray, best: np.ndarray) -> dict:
    """Optimality of one attack's per-input norms ``attack`` (inf: failed, nan: not run or not
    counted) against the best known ``best`` (inf: nobody flipped it, nan: not counted)."""
    attack, best = np.asarray(attack, float), np.asarray(best, float)
    ran = ~np.isnan(attack) & ~np.isnan(best)
    use = ran & np.isfinite(best)
    n_excluded = int((ran & ~np.isfinite(best)).sum())
    if not use.any():
        return {"optimality": None, "ratio_mean": None, "n_inputs": 0, "n_excluded": n_excluded,
                "max_best_norm": None}
    a, b = attack[use], best[use]
    top = float(b.max())
    denom = float(np.sum(top - b))
    value = float(np.sum(top - np.minimum(a, top)) / denom) if denom > 0 else None
    with np.errstate(divide="ignore"):
        ratio = np.where(np.isfinite(a) & (a > 0), b / a, np.where(a == 0, 1.0, 0.0))
    return {"optimality": value, "ratio_mean": float(ratio.mean()), "n_inputs": int(use.sum()),
            "n_excluded": n_excluded, "n_failed": int((~np.isfinite(a)).sum()), "max_best_norm": top}


def _nan_unless_correct(values, correct: np.ndarray, n: int) -> np.ndarray:
    out = np.full(n, math.nan)
    for i in range(min(n, len(values))):
        if correct[i]:
            out[i] = math.inf if values[i] is None else float(values[i])
    return out


def attack_optimality(per_attack: dict, deepfool_norm: np.ndarray, best: dict[str, np.ndarray],
                      correct: np.ndarray) -> dict:
    """Per minimum-norm attack of the run (DeepFool included), its optimality in its own norm."""
    n = len(correct)
    out = {}
    df = np.where(correct, deepfool_norm[:n], math.nan)
    out["deepfool"] = {"norm": "L2", **optimality(df, np.where(correct, best["L2"], math.nan))}
    for name, entry in per_attack.items():
        if entry.get("kind") != "min_norm":
            continue
        norm = entry.get("norm", "L2")
        mine = _nan_unless_correct(entry.get("per_input_norm", []), correct, n)   # nan past its max_inputs
        out[name] = {"norm": norm, **optimality(mine, np.where(correct, best[norm], math.nan)),
                     "queries": entry.get("queries")}
    return out
