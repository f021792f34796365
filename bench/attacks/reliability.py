"""The ``reliability`` evaluator: attack-failure checks on every run.

After Carlini et al. 2019 ("On Evaluating Adversarial Robustness", arXiv 1902.06705) and
Pintor et al. 2022 ("Indicators of Attack Failure", NeurIPS). Each check records its
numbers and a ``flag``; a run with any flag is marked *potentially unreliable*
(RobustBench's words) with the reasons. Defaults in brackets.

* **loss_consistency**: at each ε where a cross-entropy attack (FGSM, PGD, APGD-CE) and a
  margin-loss attack (APGD-DLR, APGD-T, Square) both ran, the per-input worst case over
  each group on the inputs both covered: RA_CE − RA_margin > ``ce_margin_gap`` [5 points]
  flags a masked cross-entropy (a saturated softmax has vanishing CE gradients; DLR is
  scale-invariant).
* **unbounded_sanity**: (a) each minimum-norm attack, DeepFool included, flips at least
  ``min_success`` [98 %] of the correct inputs it attacked (``exempt`` lists attacks not
  held to it); (b) at ε = ‖x_i‖₂, per input, the best-known robust accuracy is at most
  ``large_eps_robust`` [2 %]; (c) no fixed-ε attack's robust accuracy rises with ε by more
  than ``rise_tolerance`` [1 point].
* **convergence**: the minimum-norm attack that most often gave the best-known
  perturbation (among those with a ``steps`` setting) is rerun with ``convergence_factor``
  [2] × its steps (on the first ``convergence_inputs`` correct inputs [all]); the median
  best-known norm over those inputs (unflipped = +∞) may fall by at most
  ``convergence_tolerance`` [5 %], relative.
* **deepfool_overstatement** (formerly the ``masking`` evaluator): per input the ratio
  ‖r_DeepFool‖/‖r_best‖ (≥ 1; +∞ where DeepFool failed and another attack did not); flag
  when the share above ``overstatement_ratio`` [1.1] exceeds ``overstatement_share`` [25 %,
  the former masking check's threshold; on digits NoPen/LinPen sit near 1 %, the LPC family at 13–43 %].
* **library_flags**: AutoAttack's own checks (randomised or dynamic model, probabilities
  instead of logits, zero gradients, Square beating the white-box attacks, target count),
  and our own probabilities-instead-of-logits test of the clean outputs.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import torch

from bench.attacks.attack_evaluators import _run_method, verify_inputs
from bench.attacks.library import AttackInfo
from bench.attacks.methods import get_attack
from bench.attacks.outcomes import FLIPPED, MISCLASSIFIED, NOT_FLIPPED, canonical_all
from bench.core.errors import BenchError
from bench.core.typed import from_dict
from bench.evaluation.columns import RANK_DEEPFOOL, Column
from bench.evaluation.hook import EvalContext, register_evaluator

VERDICT_UNRELIABLE = "potentially unreliable"
VERDICT_OK = "no attack-failure indicator"


@dataclass(frozen=True)
class ReliabilityOptions:
    ce_margin_gap: float = 0.05
    min_success: float = 0.98
    exempt: tuple[str, ...] = ()
    large_eps_robust: float = 0.02
    rise_tolerance: float = 0.01
    convergence: bool = True
    convergence_factor: float = 2.0
    convergence_tolerance: float = 0.05
    convergence_attack: str | None = None    # None: the min-norm attack most often best (with a `steps` setting)
    convergence_inputs: int | None = None    # rerun on the first N correct inputs only (None: all it attacked)
    overstatement_ratio: float = 1.1
    overstatement_share: float = 0.25        # the former masking check's threshold

    def __post_init__(self) -> None:
        for name in ("ce_margin_gap", "min_success", "large_eps_robust", "rise_tolerance", "overstatement_share"):
            value = getattr(self, name)
            if not 0 <= value <= 1:
                raise ValueError(f"{name} must be in [0, 1], got {value}")
        if not self.convergence_factor > 1:
            raise ValueError(f"convergence_factor must be > 1, got {self.convergence_factor}")
        if self.convergence_inputs is not None and self.convergence_inputs < 1:
            raise ValueError(f"convergence_inputs must be >= 1, got {self.convergence_inputs}")
        if not self.convergence_tolerance >= 0 or not self.overstatement_ratio >= 1:
            raise ValueError("convergence_tolerance must be >= 0 and overstatement_ratio >= 1")


def _finite(x) -> float | None:
    x = float(x)
    return x if math.isfinite(x) else None


def _pct(x: float) -> str:
    return f"{100 * x:.1f} %"


# ----- the checks (pure functions of stored results) ------------------------------------

def _broken_by(entry: dict, key: str, m: int) -> np.ndarray:
    out = np.zeros(m, dtype=bool)
    hits = entry.get("successes", {}).get(key)
    if hits:
        idx = np.asarray([i for i in hits["index"] if i < m], dtype=int)
        out[idx] = True
    return out


def loss_consistency(attacks: dict, opts: ReliabilityOptions) -> dict:
    per_attack = attacks.get("per_attack", {})
    misclassified = set(attacks.get("misclassified", []))
    comparisons = []
    for norm, grid in attacks.get("eps", {}).items():
        for eps in grid:
            key = f"{eps:g}"
            groups = {loss: [name for name, e in per_attack.items()
                             if e.get("kind") == "fixed_eps" and e.get("norm") == norm and e.get("loss") == loss
                             and key in e.get("successes", {})] for loss in ("ce", "margin")}
            if not groups["ce"] or not groups["margin"]:
                continue
            m = min(per_attack[name]["n_inputs"] for name in groups["ce"] + groups["margin"])
            correct = np.array([i not in misclassified for i in range(m)], dtype=bool)
            ra = {}
            for loss, names in groups.items():
                broken = np.zeros(m, dtype=bool)
                for name in names:
                    broken |= _broken_by(per_attack[name], key, m)
                ra[loss] = float(np.mean(correct & ~broken)) if m else math.nan
            gap = ra["ce"] - ra["margin"]
            comparisons.append({"norm": norm, "eps": eps, "ce": groups["ce"], "margin": groups["margin"],
                                "n_inputs": m, "robust_accuracy_ce": ra["ce"], "robust_accuracy_margin": ra["margin"],
                                "gap": gap, "flag": bool(gap > opts.ce_margin_gap)})
    if not comparisons:
        return {"ran": False, "flag": False, "threshold": opts.ce_margin_gap,
                "reason": "no ε at which both a cross-entropy and a margin-loss fixed-ε attack ran"}
    worst = max(comparisons, key=lambda c: c["gap"])
    return {"ran": True, "flag": any(c["flag"] for c in comparisons), "threshold": opts.ce_margin_gap,
            "max_gap": worst["gap"], "worst": {k: worst[k] for k in ("norm", "eps", "robust_accuracy_ce",
                                                                      "robust_accuracy_margin")},
            "comparisons": comparisons}


def unbounded_sanity(deepfool: dict, attacks: dict, best: dict, opts: ReliabilityOptions) -> dict:
    per_attack = attacks.get("per_attack", {})
    success = {"deepfool": {"n_attacked": deepfool["n_flipped"] + deepfool["n_not_flipped"],
                            "n_success": deepfool["n_flipped"]}}
    for name, e in per_attack.items():
        if e.get("kind") == "min_norm":
            success[name] = {"n_attacked": e["n_attacked"], "n_success": e["n_success"]}
    failing = []
    for name, s in success.items():
        s["success_rate"] = s["n_success"] / s["n_attacked"] if s["n_attacked"] else None
        s["exempt"] = name in opts.exempt
        s["flag"] = bool(s["success_rate"] is not None and s["success_rate"] < opts.min_success and not s["exempt"])
        if s["flag"]:
            failing.append(name)

    per = best["per_input"]
    beyond = [st == NOT_FLIPPED or (st == FLIPPED and nb > xn)
              for st, nb, xn in zip(canonical_all(per["status"]), [v if v is not None else math.inf for v in per["norm_best"]],
                                    per["x_norm"]) if st != MISCLASSIFIED]
    large = float(np.mean(beyond)) if beyond else None
    large_flag = bool(large is not None and large > opts.large_eps_robust)

    rises = []
    for name, e in per_attack.items():
        if e.get("kind") != "fixed_eps":
            continue
        grid = sorted((eps for eps in attacks["eps"].get(e["norm"], []) if f"{eps:g}" in e["robust_accuracy"]))
        values = [e["robust_accuracy"][f"{eps:g}"] for eps in grid]
        for (e0, a0), (e1, a1) in zip(zip(grid, values), zip(grid[1:], values[1:])):
            if a1 - a0 > opts.rise_tolerance:
                rises.append({"attack": name, "norm": e["norm"], "from_eps": e0, "to_eps": e1,
                              "robust_accuracy": [a0, a1]})
    return {"flag": bool(failing or large_flag or rises),
            "min_norm_success": success, "min_success": opts.min_success, "failing_attacks": failing,
            "robust_at_x_norm": large, "large_eps_threshold": opts.large_eps_robust, "large_eps_flag": large_flag,
            "large_eps": "per input ε = ‖x_i‖₂ (L2), best-known perturbations",
            "rises": rises, "rise_tolerance": opts.rise_tolerance}


def deepfool_overstatement(best: dict, opts: ReliabilityOptions) -> dict:
    per = best["per_input"]
    ratios = []
    df_failed = 0
    for st, df, nb in zip(canonical_all(per["status"]), per["norm_deepfool"], per["norm_best"]):
        if st != FLIPPED:
            continue  # misclassified, or no attack found anything: nothing to compare
        if df is None:
            ratios.append(math.inf)
            df_failed += 1
        else:
            ratios.append(df / nb if nb > 0 else 1.0)
    r = np.asarray(ratios, dtype=float)
    finite = r[np.isfinite(r)]
    share = float(np.mean(r > opts.overstatement_ratio)) if r.size else None
    return {"n_compared": int(r.size), "share_above_1_1": float(np.mean(r > 1.1)) if r.size else None,
            "share_above_threshold": share, "ratio_threshold": opts.overstatement_ratio,
            "share_threshold": opts.overstatement_share,
            # order statistics (no interpolation between an infinite and a finite ratio); null when infinite
            "ratio_median": _finite(np.quantile(r, 0.5, method="lower")) if r.size else None,
            "ratio_mean_finite": float(finite.mean()) if finite.size else None,
            "ratio_p90": _finite(np.quantile(r, 0.9, method="higher")) if r.size else None,
            "n_deepfool_failed_other_found": df_failed,
            "flag": bool(share is not None and share > opts.overstatement_share)}


def library_flags(attacks: dict) -> dict:
    raised = {}
    for name, e in attacks.get("per_attack", {}).items():
        for key, notes in e.get("notes", {}).items():
            on = sorted(flag for flag, value in notes.get("flags", {}).items() if value)
            if on:
                raised[f"{name}@{key}"] = on
    probabilities = bool(attacks.get("outputs_are_probabilities", False))
    return {"flag": bool(raised or probabilities), "autoattack": raised, "outputs_are_probabilities": probabilities}


# ----- convergence (reruns one attack) --------------------------------------------------

def _convergence(ctx: EvalContext, attacks: dict, best: dict, opts: ReliabilityOptions) -> dict:
    per_attack = attacks.get("per_attack", {})
    candidates = [name for name, e in per_attack.items()
                  if e.get("kind") == "min_norm" and not e.get("linearisation") and "steps" in e.get("settings", {})]
    if opts.convergence_attack is not None:
        if opts.convergence_attack not in candidates:
            raise BenchError(f"reliability.convergence_attack {opts.convergence_attack!r} is not a minimum-norm "
                             f"attack with a `steps` setting that the attacks evaluator ran ({candidates})")
        name = opts.convergence_attack
    elif not candidates:
        return {"ran": False, "flag": False,
                "reason": "no minimum-norm attack with a `steps` setting ran (e.g. ddn-l2, fmn-l2)"}
    else:
        counts = best.get("source_counts", {})
        name = max(candidates, key=lambda c: (counts.get(c, 0), -candidates.index(c)))
    entry = per_attack[name]
    spec = get_attack(name)
    settings = dict(entry["settings"])
    steps = int(settings["steps"])
    settings["steps"] = int(math.ceil(steps * opts.convergence_factor))
    mopts = from_dict(spec.options, settings, f"reliability convergence rerun of {name}")

    started = time.perf_counter()
    per = best["per_input"]
    n = best["n_inputs"]
    m = min(entry["n_inputs"], n)
    x, y = ctx.test_inputs()
    x, y = x[:n], y[:n]
    status = canonical_all(per["status"])
    targets = torch.tensor([i for i in range(m) if status[i] != MISCLASSIFIED], dtype=torch.long)
    if opts.convergence_inputs is not None:
        targets = targets[:opts.convergence_inputs]
    info = AttackInfo(num_classes=int(attacks["num_classes"]), seed=int(attacks["seed"]), device=ctx.device)
    batch = int(attacks.get("batch_size", 500))
    adv = _run_method(spec, ctx.model, x, y, targets, None, mopts, info, batch)
    v = verify_inputs(ctx.model, x[targets], y[targets], adv, spec.norm, None, ctx.device, batch)
    before = np.array([math.inf if v_ is None else v_ for v_ in per["norm_best"]])
    after = before.copy()
    rerun = v.l2.numpy()
    rows = targets.numpy()
    after[rows] = np.where(v.success.numpy(), np.minimum(before[rows], rerun), before[rows])
    # the medians over the inputs the rerun attacked (all correct ones unless convergence_inputs)
    rows_all = rows if opts.convergence_inputs is not None else \
        np.array([i for i, s in enumerate(status) if s != MISCLASSIFIED], dtype=int)
    med_before = float(np.median(before[rows_all])) if rows_all.size else math.inf
    med_after = float(np.median(after[rows_all])) if rows_all.size else math.inf
    if math.isfinite(med_before) and med_before > 0:
        change = (med_before - med_after) / med_before
        flag = change > opts.convergence_tolerance
    else:
        change, flag = None, True
    return {"ran": True, "attack": name, "steps": steps, "steps_rerun": settings["steps"],
            "median_norm_before": med_before if math.isfinite(med_before) else None,
            "median_norm_after": med_after if math.isfinite(med_after) else None,
            "relative_change": change, "tolerance": opts.convergence_tolerance,
            "n_inputs": int(rows_all.size),
            "n_improved": int(np.sum(after[rows_all] < before[rows_all] * (1 - 1e-3))),
            "n_rerun_success": int(v.success.sum()), "n_rerun": int(targets.numel()),
            "flag": bool(flag), "wall_s": time.perf_counter() - started}


# ----- the evaluator --------------------------------------------------------------------

def _reasons(checks: dict) -> list[str]:
    out = []
    lc = checks["loss_consistency"]
    if lc.get("flag"):
        w = lc["worst"]
        out.append(f"loss consistency: at {w['norm']} ε = {w['eps']:g} the cross-entropy attacks leave "
                   f"{_pct(w['robust_accuracy_ce'])} robust, the margin-loss attacks {_pct(w['robust_accuracy_margin'])} "
                   f"(gap {100 * lc['max_gap']:.1f} points > {100 * lc['threshold']:g}): cross-entropy may be masked")
    us = checks["unbounded_sanity"]
    for name in us["failing_attacks"]:
        rate = us["min_norm_success"][name]["success_rate"]
        out.append(f"unbounded sanity: {name} flipped only {_pct(rate)} of the correct inputs it attacked "
                   f"(need {_pct(us['min_success'])})")
    if us["large_eps_flag"]:
        out.append(f"unbounded sanity: {_pct(us['robust_at_x_norm'])} of the correct inputs resist every attack "
                   f"at ε = ‖x‖₂ (need ≤ {_pct(us['large_eps_threshold'])})")
    for rise in us["rises"]:
        a0, a1 = rise["robust_accuracy"]
        out.append(f"unbounded sanity: {rise['attack']}'s robust accuracy rises from {_pct(a0)} at ε = "
                   f"{rise['from_eps']:g} to {_pct(a1)} at ε = {rise['to_eps']:g}")
    cv = checks["convergence"]
    if cv.get("flag"):
        if cv.get("relative_change") is None:
            out.append("convergence: the median best-known norm is unbounded (half or more of the correct "
                       "inputs unflipped)")
        else:
            out.append(f"convergence: {cv['steps_rerun']} steps of {cv['attack']} (instead of {cv['steps']}) lower "
                       f"the median best-known norm by {_pct(cv['relative_change'])} "
                       f"(tolerance {_pct(cv['tolerance'])})")
    ov = checks["deepfool_overstatement"]
    if ov["flag"]:
        share = ov["share_above_threshold"]
        out.append(f"DeepFool overstatement: on {_pct(share)} of the flipped inputs DeepFool's perturbation is more "
                   f"than {ov['ratio_threshold']:g}× the best-known one (threshold {_pct(ov['share_threshold'])})")
    lf = checks["library_flags"]
    for where, flags in lf["autoattack"].items():
        out.append(f"AutoAttack's own checks ({where}): {', '.join(flags)}")
    if lf["outputs_are_probabilities"]:
        out.append("the model's outputs look like probabilities (rows in [0, 1] summing to 1), not logits")
    return out


@register_evaluator("reliability", options=ReliabilityOptions, kind="attack",
                    requires=("deepfool", "attacks", "best_known"), columns=(
    Column("n_flags", "attack-failure flags", ("n_flags",), atol=0.5, rtol=0, section="detail", rank=RANK_DEEPFOOL),
    Column("df_overstatement", "DeepFool > 1.1× best (%)", ("checks", "deepfool_overstatement", "share_above_1_1"),
           fmt="pct", atol=0.02, rtol=0, rank=RANK_DEEPFOOL + 1),
    Column("ce_margin_gap", "CE − margin RA gap (max)", ("checks", "loss_consistency", "max_gap"), fmt="pct",
           atol=0.02, rtol=0, section="detail", rank=RANK_DEEPFOOL + 1),
))
def reliability_evaluator(ctx: EvalContext, opts: ReliabilityOptions) -> dict:
    """Attack-failure checks (Carlini et al. 2019; Pintor et al. 2022): loss consistency, unbounded sanity, convergence, DeepFool overstatement."""
    missing = [name for name in ("deepfool", "attacks", "best_known") if name not in ctx.results]
    if missing:
        raise BenchError(f"reliability needs the {', '.join(missing)} evaluator(s) listed before it "
                         f"in evaluation.evaluators")
    deepfool, attacks, best = (ctx.results[k] for k in ("deepfool", "attacks", "best_known"))
    checks = {
        "loss_consistency": loss_consistency(attacks, opts),
        "unbounded_sanity": unbounded_sanity(deepfool, attacks, best, opts),
        "convergence": _convergence(ctx, attacks, best, opts) if opts.convergence else
        {"ran": False, "flag": False, "reason": "switched off (reliability.convergence: false)"},
        "deepfool_overstatement": deepfool_overstatement(best, opts),
        "library_flags": library_flags(attacks),
    }
    reasons = _reasons(checks)
    flagged = [name for name, check in checks.items() if check.get("flag")]
    return {"unreliable": bool(flagged), "verdict": VERDICT_UNRELIABLE if flagged else VERDICT_OK,
            "n_flags": len(flagged), "flagged": flagged, "reasons": reasons, "checks": checks}
