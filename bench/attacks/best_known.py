"""The ``best_known`` evaluator: per input, the smallest verified perturbation any attack of the run found.

Every verified adversarial is an upper bound on an input's minimal perturbation, so for each
clean-correct input i of the attack subset (RobustBench's "best known" per input):

    r_best,i = min( ‖r‖₂ of DeepFool (``deepfool`` evaluator),
                    ‖r‖₂ of each minimum-norm attack (``attacks``: DDN, FMN, C&W, HopSkipJump, …),
                    ‖r‖₂ of each fixed-ε attack's verified adversarial, at every ε of either norm )
    ρ_best,i = r_best,i / ‖x_i‖₂

Also reported, per minimum-norm attack (DeepFool included): its optimality against these
best-known norms as AttackBench defines it (``bench.attacks.optimality``), with the
forward + backward passes per input it spent.

Reported: mean and median of ρ_best and r_best over the inputs some attack flipped, with
``n_unflipped`` (correct inputs no attack flipped; they are never dropped silently: the
medians over all correct inputs, counting them as +∞, are reported too). Best-known robust
accuracy at ε, per norm: the share of the n inputs that are classified correctly and have
no verified adversarial within ε in that norm, from any attack (an L2 attack's adversarial
that lies inside the L∞ ball is an L∞ witness too); the same budget tolerance as the
``attacks`` evaluator. It can only be lower than (or equal to) ``attacks``' worst case.

The inputs covered are the first n = min(DeepFool's, the attacks evaluator's) of the
subset; attacks restricted to fewer inputs (``max_inputs``) count where they ran.
Needs ``deepfool`` and ``attacks`` earlier in the suite's list (``attacks`` from this
version, which stores per-input successes).
"""
from __future__ import annotations

import math
from collections import Counter

import numpy as np
import torch

from bench.attacks.attack_evaluators import within_budget
from bench.attacks.optimality import attack_optimality
from bench.attacks.outcomes import FLIPPED, MISCLASSIFIED, NOT_FLIPPED, canonical_all
from bench.attacks.methods import eps_key
from bench.core.errors import BenchError
from bench.evaluation.columns import RANK_HEADLINE, Column
from bench.evaluation.hook import EvalContext, NoOptions, register_evaluator



def _num(value) -> float:
    return math.inf if value is None else float(value)


def _stat(fn, values: np.ndarray) -> float | None:
    if not values.size:
        return None
    out = float(fn(values))
    return out if math.isfinite(out) else None


def best_known(deepfool_result: dict, attacks_result: dict, x_norm: np.ndarray) -> dict:
    """The evaluator's result from the two stored results and ‖x_i‖₂ of the subset's inputs."""
    status = canonical_all(deepfool_result["per_input"]["status"])
    df_norm = deepfool_result["per_input"]["norm"]
    per_attack = attacks_result.get("per_attack", {})
    stale = [name for name, e in per_attack.items() if e.get("kind") == "fixed_eps" and "successes" not in e]
    if stale or "eps" not in attacks_result:
        raise BenchError("best_known needs per-input results of the attacks evaluator (this version stores "
                         "them): rerun `attacks` before it")
    n = min(len(status), int(attacks_result["n_inputs"]), len(x_norm))
    misclassified = set(attacks_result.get("misclassified", []))
    correct = np.array([status[i] != MISCLASSIFIED and i not in misclassified for i in range(n)], bool)
    n_disagree = sum((status[i] == MISCLASSIFIED) != (i in misclassified) for i in range(n))

    best = {"L2": np.full(n, math.inf), "Linf": np.full(n, math.inf)}
    source: list[str | None] = [None] * n

    def offer(i: int, l2: float, linf: float, name: str) -> None:
        if i >= n or not correct[i]:
            return
        if l2 < best["L2"][i]:
            best["L2"][i], source[i] = l2, name
        best["Linf"][i] = min(best["Linf"][i], linf)

    deepfool_norm = np.array([_num(df_norm[i]) for i in range(n)])
    for i in range(n):
        offer(i, deepfool_norm[i], math.inf, "deepfool")
    for name, entry in per_attack.items():
        if entry.get("kind") == "min_norm":
            l2s, linfs = entry.get("per_input_norm", []), entry.get("per_input_linf", [])
            if entry.get("norm") != "L2":  # a min-norm L∞ attack's norm list is its L∞ size
                l2s, linfs = [None] * len(l2s), l2s
            for i in range(len(l2s)):
                offer(i, _num(l2s[i]), _num(linfs[i]) if i < len(linfs) else math.inf, name)
        else:
            for key, hits in entry["successes"].items():
                for i, l2, linf in zip(hits["index"], hits["l2"], hits["linf"]):
                    offer(i, float(l2), float(linf), f"{name}@{key}")

    flipped = correct & np.isfinite(best["L2"])
    with np.errstate(divide="ignore", invalid="ignore"):
        rho = np.where(flipped & (x_norm[:n] > 0), best["L2"] / x_norm[:n], math.nan)
    robust = {}
    for norm, grid in attacks_result["eps"].items():
        robust[norm] = {eps_key(eps): float(np.mean(correct & ~within_budget(torch.from_numpy(best[norm]),
                                                                                  eps).numpy())) if n else None
                        for eps in grid}
    all_correct = np.where(flipped, best["L2"], math.inf)[correct]
    all_rho = np.where(flipped, rho, math.inf)[correct]
    states = [MISCLASSIFIED if not correct[i] else (FLIPPED if flipped[i] else NOT_FLIPPED) for i in range(n)]

    def listed(values: np.ndarray) -> list[float | None]:
        return [float(v) if s == FLIPPED and math.isfinite(v) else None for v, s in zip(values, states)]

    return {
        # AttackBench's optimality of each minimum-norm attack against these best-known norms
        "optimality": attack_optimality(per_attack, deepfool_norm, best, correct),
        "rho_best_mean": _stat(np.mean, rho[flipped]), "rho_best_median": _stat(np.median, rho[flipped]),
        "norm_best_mean": _stat(np.mean, best["L2"][flipped]),
        "norm_best_median": _stat(np.median, best["L2"][flipped]),
        # over every correct input, an unflipped one counting as +∞ (null when those are half or more)
        "rho_best_median_all": _stat(np.median, all_rho), "norm_best_median_all": _stat(np.median, all_correct),
        "n_inputs": n, "n_correct": int(correct.sum()), "n_flipped": int(flipped.sum()),
        "n_unflipped": int((correct & ~flipped).sum()), "n_prediction_disagreements": int(n_disagree),
        "robust_accuracy": robust,
        "source_counts": dict(Counter(s.partition("@")[0] for s in source if s is not None)),
        "per_input": {
            "norm_best": listed(best["L2"]), "rho_best": listed(rho),
            "source": [source[i] if states[i] == FLIPPED else None for i in range(n)],
            "norm_deepfool": [float(v) if correct[i] and math.isfinite(v) else None for i, v in enumerate(deepfool_norm)],
            "norm_best_linf": [float(v) if correct[i] and math.isfinite(v) else None for i, v in enumerate(best["Linf"])],
            "x_norm": [float(v) for v in x_norm[:n]],
            "status": states,
        },
        "reference": "true label; verified adversarials of every attack of the run (deepfool and attacks evaluators)",
    }


def _best_adversarials(ctx: EvalContext, result: dict, x: torch.Tensor) -> None:
    """Hand the adversarial at r_best of each input to later evaluators (ctx.artifacts)."""
    attacks, df = ctx.artifacts.get("attacks"), ctx.artifacts.get("deepfool")
    if attacks is None or df is None:
        return  # results read from disk: attack_collapse will say it needs this session's attacks
    n = result["n_inputs"]
    x = x[:n]
    norm = attacks["best_l2"][:n].clone()
    adv = attacks["best_l2_adv"][:n].clone()
    df_adv = df["x_adv"][:n]
    df_norm = torch.tensor([math.inf if v is None else v for v in result["per_input"]["norm_deepfool"]],
                           dtype=torch.float64)
    take = df_norm < norm
    adv[take], norm[take] = df_adv[take], df_norm[take]
    flipped = torch.tensor([s == FLIPPED for s in result["per_input"]["status"]])
    norm[~flipped] = math.inf
    adv[~flipped] = x[~flipped]
    ctx.artifacts["best_known"] = {"adv": adv, "norm": norm, "flipped": flipped}


@register_evaluator("best_known", kind="attack", requires=("deepfool", "attacks"), columns=(
    Column("rho_best", "ρ best-known", ("rho_best_mean",), atol=1e-4, section="perturbation", rank=RANK_HEADLINE),
    Column("rho_best_median", "ρ best-known (median)", ("rho_best_median",), atol=1e-4, section="headline",
           rank=RANK_HEADLINE),
    Column("n_unflipped", "inputs no attack flipped", ("n_unflipped",), fmt="count", atol=1, rtol=0,
           section="perturbation", rank=RANK_HEADLINE),
    Column("ra_best:{0}:{1}", "RA best-known {0} ε={1} (%)", ("robust_accuracy", "*", "*"), fmt="pct", atol=0.01,
           rtol=0, section="robustness", rank=RANK_HEADLINE + 1),
    Column("optimality:{0}", "{0} optimality", ("optimality", "*", "optimality"), atol=0.02, rtol=0,
           section="detail", rank=RANK_HEADLINE + 2),
))
def best_known_evaluator(ctx: EvalContext, opts: NoOptions) -> dict:
    """Best-known minimal L2 perturbation per input over every attack of the run (ρ_best), and best-known robust accuracy."""
    missing = [name for name in ("deepfool", "attacks") if name not in ctx.results]
    if missing:
        raise BenchError(f"best_known needs the {' and '.join(missing)} evaluator(s) listed before it "
                         f"in evaluation.evaluators")
    x, _ = ctx.test_inputs()
    x_norm = x.flatten(1).double().norm(dim=1).numpy()
    result = best_known(ctx.results["deepfool"], ctx.results["attacks"], x_norm)
    _best_adversarials(ctx, result, x)
    return result
