"""The ``reliability`` evaluator: attack-failure checks on every run.

After Carlini et al. 2019 ("On Evaluating Adversarial Robustness", arXiv 1902.06705) and
Pintor et al. 2022 ("Indicators of Attack Failure", NeurIPS). Each check records its
numbers and yields findings (``bench.evaluation.findings.Finding``) that name the column
keys a failure undermines and those that already absorb it; ``column_verdict`` holds one
verdict per number, and the headline (best-known ρ and RA) is *potentially unreliable*
(RobustBench's words) only when a finding doubts it (``unreliable_headline``). A check
with nothing to judge is "not measured", never a pass. Defaults in brackets.

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
* **trimmed_budget**: each AutoAttack that a suite trimmed (fewer targets, iterations or
  queries) is rerun at the standard version's budget on a seeded sample of
  ``trim_inputs`` [100] correct inputs (on those the trimmed one left robust: the others
  have a verified adversarial already); on those inputs the trimmed RA and the best-known
  RA are compared with the standard one by a one-sided exact sign test on the inputs where
  they disagree (p < ``trim_alpha`` [0.05]): the first doubts the AutoAttack number, the
  second the headline. The measured cost of each trim is stored.
* **attack_unit_test** (read, when that evaluator ran: Zimmermann et al. 2022): a suite
  that misses planted adversarial examples doubts every attack-based number.

Where AutoAttack ran on fewer inputs than the best-known numbers count, ``same_inputs``
holds the best-known RA on AutoAttack's own inputs, so that the two are compared like
for like.
"""
from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass

import numpy as np
import torch

from bench.attacks.attack_evaluators import _run_method, verify_inputs, within_budget
from bench.attacks.library import AttackInfo, AttackNotes
from bench.attacks.methods import eps_key, get_attack, options_dict
from bench.attacks.outcomes import FLIPPED, MISCLASSIFIED, NOT_FLIPPED, canonical_all
from bench.core.errors import BenchError
from bench.core.typed import from_dict
from bench.evaluation.columns import RANK_ATTACKS, RANK_DEEPFOOL, Column
from bench.evaluation.findings import (ATTACK_PATTERNS, UNRELIABLE, Finding, column_verdicts, is_headline)
from bench.evaluation.hook import EvalContext, register_evaluator

VERDICT_UNRELIABLE = UNRELIABLE
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
    trim_inputs: int = 100                   # trimmed AutoAttack rerun at the standard budget on N inputs (0: off)
    trim_alpha: float = 0.05                 # one-sided sign test on the discordant inputs

    def __post_init__(self) -> None:
        for name in ("ce_margin_gap", "min_success", "large_eps_robust", "rise_tolerance", "overstatement_share",
                     "trim_alpha"):
            value = getattr(self, name)
            if not 0 <= value <= 1:
                raise ValueError(f"{name} must be in [0, 1], got {value}")
        if not self.convergence_factor > 1:
            raise ValueError(f"convergence_factor must be > 1, got {self.convergence_factor}")
        if self.trim_inputs < 0:
            raise ValueError(f"trim_inputs must be >= 0 (0: off), got {self.trim_inputs}")
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
    if not targets.numel():
        return {"ran": False, "flag": False, "attack": name, "reason": "not measured: no correct input to attack"}
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


# ----- trimmed budgets and same-input comparisons ---------------------------------------

def _aa_entries(attacks: dict) -> dict[str, dict]:
    return {name: e for name, e in attacks.get("per_attack", {}).items()
            if name.startswith("autoattack-") and e.get("kind", "fixed_eps") == "fixed_eps"}


def _best_broken(best: dict, norm: str, eps: float, rows: np.ndarray) -> np.ndarray:
    """Per row: some attack of the run has a verified adversarial within ε (best-known)."""
    per = best["per_input"]
    values = per["norm_best"] if norm == "L2" else per.get("norm_best_linf", [None] * len(per["status"]))
    status = canonical_all(per["status"])
    size = torch.tensor([math.inf if values[i] is None or status[i] != FLIPPED else values[i]
                         for i in rows], dtype=torch.float64)
    return within_budget(size, eps).numpy() if rows.size else np.zeros(0, bool)


def same_inputs(attacks: dict, best: dict) -> dict:
    """Where AutoAttack ran on fewer inputs than the best-known numbers count, the best-known
    RA on AutoAttack's own inputs: {norm: {ε key: {n_inputs, n_total, ra_autoattack, ra_best}}}."""
    n = int(best.get("n_inputs", 0))
    out: dict[str, dict] = {}
    for name, entry in _aa_entries(attacks).items():
        m = min(int(entry.get("n_inputs", n)), n)
        if m >= n:
            continue
        rows = np.arange(m)
        status = canonical_all(best["per_input"]["status"])
        correct = np.array([status[i] != MISCLASSIFIED for i in rows], bool)
        for key, ra in (entry.get("robust_accuracy") or {}).items():
            broken = _best_broken(best, entry["norm"], float(key), rows)
            out.setdefault(entry["norm"], {})[key] = {
                "n_inputs": m, "n_total": n, "ra_autoattack": ra,
                "ra_best": float(np.mean(correct & ~broken)) if m else None}
    return out


def _standard_options(spec, settings: dict):
    """The method's options at its library's standard budget (AutoAttack: the standard version),
    keeping the inputs and ε it ran on; None where it ran at the standard budget already."""
    trimmed = from_dict(spec.options, settings, f"reliability trimmed-budget rerun of {spec.name}")
    if not hasattr(trimmed, "deviations"):
        return trimmed, None
    reference = spec.options()
    standard = dataclasses.replace(trimmed, **{f.name: getattr(reference, f.name)
                                               for f in dataclasses.fields(reference)
                                               if f.name not in ("eps", "max_inputs")})
    return trimmed, (None if standard == trimmed else standard)


def _one_sided(b: int, c: int) -> float:
    """P(≥ b of b + c discordant pairs on one side | no difference): exact sign test."""
    from scipy.stats import binomtest
    return float(binomtest(b, b + c, 0.5, alternative="greater").pvalue) if b + c else 1.0


def trimmed_budget(ctx: EvalContext, attacks: dict, best: dict, opts: ReliabilityOptions) -> dict:
    """Rerun each trimmed AutoAttack at its standard budget on a seeded sample of correct inputs;
    compare, on those same inputs, the trimmed RA and the best-known RA with the standard one."""
    if not opts.trim_inputs:
        return {"ran": False, "reason": "switched off (reliability.trim_inputs: 0)", "per_attack": {}}
    per = best["per_input"]
    results: dict[str, dict] = {}
    x_all, y_all = ctx.test_inputs()
    info = AttackInfo(num_classes=int(attacks["num_classes"]), seed=int(attacks["seed"]), device=ctx.device)
    batch = int(attacks.get("batch_size", 500))
    for name, entry in _aa_entries(attacks).items():
        spec = get_attack(name)
        _, standard = _standard_options(spec, entry.get("settings", {}))
        if standard is None:
            continue
        m = min(int(entry["n_inputs"]), int(best["n_inputs"]))
        status = canonical_all(per["status"])
        correct = np.array([i for i in range(m) if status[i] != MISCLASSIFIED], dtype=int)
        if not correct.size:
            results[name] = {"ran": False, "reason": "no correct input to attack"}
            continue
        g = np.random.default_rng(int(attacks["seed"]))
        rows = np.sort(g.choice(correct, size=min(opts.trim_inputs, correct.size), replace=False))
        started = time.perf_counter()
        x, y = x_all[:m], y_all[:m]
        per_eps = {}
        for key in sorted(entry.get("robust_accuracy") or {}, key=float):
            eps = float(key)
            hits = set((entry.get("successes") or {}).get(key, {}).get("index", []))
            trim_broken = np.array([i in hits for i in rows], bool)
            # the standard budget runs where the trimmed one found nothing: an input the trimmed
            # attack broke has a verified adversarial already (and best-known ⊆ trimmed-robust there)
            std_broken = trim_broken.copy()
            open_rows = rows[~trim_broken]
            if open_rows.size:
                targets = torch.from_numpy(open_rows).long()
                adv = _run_method(spec, ctx.model, x, y, targets, eps, standard,
                                  dataclasses.replace(info, notes=AttackNotes()), batch)
                v = verify_inputs(ctx.model, x[targets], y[targets], adv, spec.norm, eps, ctx.device, batch)
                std_broken[~trim_broken] = v.success.numpy()
            best_broken = _best_broken(best, spec.norm, eps, rows)
            b, c = int(np.sum(~trim_broken & std_broken)), int(np.sum(trim_broken & ~std_broken))
            b2, c2 = int(np.sum(~best_broken & std_broken)), int(np.sum(best_broken & ~std_broken))
            p, p2 = _one_sided(b, c), _one_sided(b2, c2)
            per_eps[key] = {
                "n_inputs": int(rows.size), "ra_trimmed": float(np.mean(~trim_broken)),
                "ra_standard": float(np.mean(~std_broken)), "ra_best": float(np.mean(~best_broken)),
                "cost": float(np.mean(~trim_broken) - np.mean(~std_broken)),
                "trimmed_only_robust": b, "standard_only_robust": c, "p_trimmed_above": p,
                "best_only_robust": b2, "standard_only_robust_vs_best": c2, "p_best_above": p2,
                "trim_flag": bool(p < opts.trim_alpha), "headline_flag": bool(p2 < opts.trim_alpha)}
        results[name] = {"ran": True, "norm": spec.norm, "deviations": list(entry.get("deviations") or []),
                         "standard_settings": options_dict(standard), "per_eps": per_eps,
                         "sample": "seeded sample of the correct inputs AutoAttack ran on (the attacks seed); "
                                   "the standard budget attacks those the trimmed one left robust; RA as shares "
                                   "of the sample", "wall_s": time.perf_counter() - started}
    if not results:
        return {"ran": False, "reason": "no AutoAttack ran with a trimmed budget", "per_attack": {}}
    return {"ran": any(r.get("ran") for r in results.values()), "alpha": opts.trim_alpha,
            "n_sample": opts.trim_inputs, "per_attack": results}


# ----- findings: which numbers each check doubts ----------------------------------------

_HEADLINE = ("rho_best", "rho_best_median", "ra_best:*")
_DEEPFOOL = ("rho", "rho_median", "df_overstatement", "rho_overstatement")


def _ce_findings(lc: dict, attacks: dict) -> list[Finding]:
    if not lc.get("ran"):
        return [Finding("loss_consistency", None, reason=lc.get("reason", "did not run"))]
    per_attack = attacks.get("per_attack", {})
    out = []
    for c in lc.get("comparisons", []):
        if not c.get("flag"):
            continue
        norm, key = c["norm"], eps_key(c["eps"])
        undermines = [f"attack:{name}:{norm}:{key}" for name in c["ce"]]
        # at the ε of this norm where no margin-loss attack and no minimum-norm attack ran, the
        # worst case and the best-known RA rest on the masked cross-entropy attacks alone
        min_norm = any(e.get("kind") == "min_norm" and e.get("loss") != "ce" for e in per_attack.values())
        for other in attacks.get("eps", {}).get(norm, []):
            k = eps_key(other)
            margin = any(e.get("kind") == "fixed_eps" and e.get("norm") == norm and e.get("loss") == "margin"
                         and k in (e.get("successes") or {}) for e in per_attack.values())
            if not margin and not min_norm:
                undermines += [f"ra:{norm}:{k}", f"ra_best:{norm}:{k}"]
        out.append(Finding(
            "loss_consistency", True, tuple(undermines), (f"ra:{norm}:{key}", f"ra_best:{norm}:{key}"),
            f"at {norm} ε = {c['eps']:g} the cross-entropy attacks ({', '.join(c['ce'])}) leave "
            f"{_pct(c['robust_accuracy_ce'])} robust, the margin-loss attacks {_pct(c['robust_accuracy_margin'])} "
            f"(gap {100 * c['gap']:.1f} points > {100 * lc['threshold']:g}): cross-entropy is masked; "
            f"the worst case and best-known RA include the margin-loss attacks"))
    return out or [Finding("loss_consistency", False, reason=f"CE − margin RA gap ≤ {100 * lc['threshold']:g} "
                                                           f"points at every ε both ran")]


def _sanity_findings(us: dict, attacks: dict) -> list[Finding]:
    out = []
    for name in us["failing_attacks"]:
        rate = us["min_norm_success"][name]["success_rate"]
        own = _DEEPFOOL if name == "deepfool" else (f"minnorm:{name}", f"attack:{name}:*")
        out.append(Finding("unbounded_sanity", True, own, _HEADLINE,
                           f"{name} flipped only {_pct(rate)} of the correct inputs it attacked (need "
                           f"{_pct(us['min_success'])}); the best-known numbers take the other attacks' "
                           f"perturbations there"))
    if us["robust_at_x_norm"] is None:
        out.append(Finding("unbounded_sanity", None, reason="no correct input to judge at ε = ‖x‖₂"))
    elif us["large_eps_flag"]:
        out.append(Finding("unbounded_sanity", True, ATTACK_PATTERNS, (),
                           f"{_pct(us['robust_at_x_norm'])} of the correct inputs resist every attack at "
                           f"ε = ‖x‖₂ (need ≤ {_pct(us['large_eps_threshold'])})"))
    per_attack = attacks.get("per_attack", {})
    worst = attacks.get("robust_accuracy", {})
    for rise in us["rises"]:
        name, norm, key = rise["attack"], rise["norm"], eps_key(rise["to_eps"])
        a0, a1 = rise["robust_accuracy"]
        undermines = [f"attack:{name}:{norm}:{key}"]
        if name.startswith("autoattack-"):
            undermines.append(f"ra_autoattack:{norm}:{key}")
        if abs(worst.get(norm, {}).get(key, math.nan) - per_attack.get(name, {}).get("robust_accuracy", {})
               .get(key, math.inf)) < 1e-12:
            undermines.append(f"ra:{norm}:{key}")       # the attack binds the worst case there
        out.append(Finding("unbounded_sanity", True, tuple(undermines), (),
                           f"{name}'s robust accuracy rises from {_pct(a0)} at ε = {rise['from_eps']:g} to "
                           f"{_pct(a1)} at ε = {rise['to_eps']:g}"))
    if not out:
        out.append(Finding("unbounded_sanity", False, reason="every minimum-norm attack flips the correct inputs; "
                                                            "nothing resists at ε = ‖x‖₂; no RA rises with ε"))
    return out


def _convergence_finding(cv: dict) -> Finding:
    if not cv.get("ran"):
        return Finding("convergence", None, reason=cv.get("reason", "did not run"))
    headline = ("rho_best", "rho_best_median", "ra_best:L2:*")
    if cv.get("relative_change") is None:
        return Finding("convergence", bool(cv.get("flag")), headline, (),
                       "the median best-known norm is unbounded (half or more of the correct inputs unflipped)")
    return Finding("convergence", bool(cv["flag"]), headline, (),
                   f"{cv['steps_rerun']} steps of {cv['attack']} (instead of {cv['steps']}) lower the median "
                   f"best-known norm by {_pct(cv['relative_change'])} (tolerance {_pct(cv['tolerance'])})")


def _overstatement_finding(ov: dict) -> Finding:
    if ov["share_above_threshold"] is None:
        return Finding("deepfool_overstatement", None, reason="no input flipped by both DeepFool and another attack")
    return Finding("deepfool_overstatement", bool(ov["flag"]), _DEEPFOOL, _HEADLINE,
                   f"on {_pct(ov['share_above_threshold'])} of the flipped inputs DeepFool's perturbation is more "
                   f"than {ov['ratio_threshold']:g}× the best-known one (threshold {_pct(ov['share_threshold'])}); "
                   f"the best-known ρ is the fix")


# AutoAttack's own checks: what each raised flag doubts (the package's flags_doc.md)
_AA_FLAG_SCOPE = {
    "randomized": "all", "dynamic": "all", "probabilities": "all",
    # gradient masking: the gradient attacks behind the best-known numbers may be fooled too
    "zero_gradients": "headline", "square_beat_white_box": "headline",
    "n_classes": "entry",
}


def _library_findings(lf: dict) -> list[Finding]:
    out = []
    for where, flags in sorted(lf["autoattack"].items()):
        name, _, key = where.partition("@")
        norm = "L2" if name.endswith("-l2") else "Linf"
        scopes = {_AA_FLAG_SCOPE.get(flag, "entry") for flag in flags}
        undermines = [f"ra_autoattack:{norm}:{key}"]
        if "headline" in scopes:
            undermines += list(_HEADLINE)
        if "all" in scopes:
            undermines = list(ATTACK_PATTERNS)
        out.append(Finding("library_flags", True, tuple(undermines), (),
                           f"AutoAttack's own checks ({where}): {', '.join(flags)}"))
    if lf["outputs_are_probabilities"]:
        out.append(Finding("library_flags", True, ATTACK_PATTERNS, (),
                           "the model's outputs look like probabilities (rows in [0, 1] summing to 1), not logits"))
    return out or [Finding("library_flags", False, reason="AutoAttack's own checks raised nothing")]


def _trim_findings(tb: dict | None) -> list[Finding]:
    if tb is None:
        return [Finding("trimmed_budget", None, reason="not measured (result from before the trimmed-budget check)")]
    if not tb.get("ran"):
        return [Finding("trimmed_budget", None, reason=tb.get("reason", "did not run"))]
    out = []
    for name, r in sorted(tb["per_attack"].items()):
        if not r.get("ran"):
            out.append(Finding("trimmed_budget", None, reason=f"{name}: {r.get('reason')}"))
            continue
        for key, e in r["per_eps"].items():
            where = f"{r['norm']} ε = {float(key):g}, {e['n_inputs']} inputs"
            out.append(Finding(
                "trimmed_budget", e["trim_flag"], (f"ra_autoattack:{r['norm']}:{key}",), (),
                f"{name} at {where}: trimmed RA {_pct(e['ra_trimmed'])}, standard {_pct(e['ra_standard'])} "
                f"(cost {100 * e['cost']:+.1f} points, one-sided p = {e['p_trimmed_above']:.2g})"))
            out.append(Finding(
                "best_known_vs_standard_autoattack", e["headline_flag"],
                ("rho_best", "rho_best_median", f"ra_best:{r['norm']}:{key}"), (),
                f"at {where}: best-known RA {_pct(e['ra_best'])}, standard {name} {_pct(e['ra_standard'])} "
                f"(one-sided p = {e['p_best_above']:.2g})"))
    return out


def _unit_test_finding(unit: dict | None) -> Finding:
    """The attack unit test (Zimmermann et al. 2022, evaluator ``attack_unit_test``): a suite
    whose attacks miss planted adversarial examples doubts every attack-based number."""
    if not isinstance(unit, dict) or unit.get("passed") is None:
        return Finding("attack_unit_test", None, reason="not measured (evaluator attack_unit_test not run)")
    rate, threshold = unit.get("suite_pass_rate"), unit.get("threshold")
    text = f"the suite's attacks found {_pct(rate)} of the planted adversarial examples" if rate is not None \
        else "the attack unit test"
    return Finding("attack_unit_test", not unit["passed"], ATTACK_PATTERNS, (),
                   text + (f" (need ≥ {_pct(threshold)})" if threshold is not None else ""))


def findings(checks: dict, evaluations: dict) -> list[Finding]:
    """Every check's findings, from the stored checks and evaluations (no text is parsed)."""
    attacks = evaluations.get("attacks") or {}
    out = _ce_findings(checks["loss_consistency"], attacks)
    out += _sanity_findings(checks["unbounded_sanity"], attacks)
    out.append(_convergence_finding(checks["convergence"]))
    out.append(_overstatement_finding(checks["deepfool_overstatement"]))
    out += _library_findings(checks["library_flags"])
    out += _trim_findings(checks.get("trimmed_budget"))
    out.append(_unit_test_finding(evaluations.get("attack_unit_test")))
    return out


def verdict_keys(evaluations: dict) -> set[str]:
    """The column keys of the attack evaluators' numbers in ``evaluations`` (the verdict's domain)."""
    from bench.evaluation.hook import EVALUATORS
    keys = set()
    for name in ("deepfool", "attacks", "best_known", "reliability"):
        entry = evaluations.get(name)
        if isinstance(entry, dict) and name in EVALUATORS:
            for column in EVALUATORS.get(name).columns:
                keys.update(k for k, _, _ in column.expand(entry))
    return keys


def summarise(checks: dict, evaluations: dict) -> dict:
    """The evaluator's verdict fields from its checks: findings, per-column verdicts, headline."""
    found = findings(checks, evaluations)
    verdict = column_verdicts(found, verdict_keys(evaluations))
    doubted_headline = sorted({f.check for f in found for k in verdict
                               if is_headline(k) and f.doubts(k)})
    flagged = sorted({f.check for f in found if f.flag})
    return {"unreliable_headline": bool(doubted_headline), "headline_doubted_by": doubted_headline,
            "unreliable": bool(flagged), "verdict": UNRELIABLE if doubted_headline else VERDICT_OK,
            "n_flags": len(flagged), "flagged": flagged,
            "not_measured": sorted({f.check for f in found if f.flag is None} - {f.check for f in found
                                                                                if f.flag is not None}),
            "reasons": [f"{f.check}: {f.reason}" for f in found if f.flag],
            "findings": [f.as_dict() for f in found], "column_verdict": verdict}


def upgrade(entry: dict, evaluations: dict) -> dict:
    """A stored reliability result with its findings: as stored, or (a result written before
    findings existed) derived from its structured checks. Entries without checks stay as they are."""
    if not isinstance(entry, dict) or "findings" in entry or not isinstance(entry.get("checks"), dict):
        return entry
    try:
        derived = summarise(entry["checks"], evaluations)
    except (KeyError, TypeError, ValueError):
        return entry
    return {**entry, **derived, "same_inputs": same_inputs(evaluations.get("attacks") or {},
                                                           evaluations.get("best_known") or {})
            if isinstance(evaluations.get("best_known"), dict) and "per_input" in evaluations["best_known"] else {}}


# ----- the evaluator --------------------------------------------------------------------

@register_evaluator("reliability", options=ReliabilityOptions, kind="attack",
                    requires=("deepfool", "attacks", "best_known"), columns=(
    Column("n_flags", "attack-failure flags", ("n_flags",), atol=0.5, rtol=0, section="detail", rank=RANK_DEEPFOOL),
    Column("df_overstatement", "DeepFool > 1.1× best (%)", ("checks", "deepfool_overstatement", "share_above_1_1"),
           fmt="pct", atol=0.02, rtol=0, section="perturbation", rank=RANK_DEEPFOOL + 1),
    Column("ce_margin_gap", "CE − margin RA gap (max)", ("checks", "loss_consistency", "max_gap"), fmt="pct",
           atol=0.02, rtol=0, section="detail", rank=RANK_DEEPFOOL + 1),
    Column("ra_best_aa_inputs:{0}:{1}", "RA best-known on AutoAttack's inputs {0} ε={1} (%)",
           ("same_inputs", "*", "*", "ra_best"), fmt="pct", atol=0.01, rtol=0, section="robustness",
           rank=RANK_ATTACKS - 0.5),
    Column("aa_trim_cost:{0}:{1}", "AutoAttack trim cost {0} ε={1} (points)",
           ("checks", "trimmed_budget", "per_attack", "*", "per_eps", "*", "cost"), fmt="pct", atol=0.02, rtol=0,
           section="detail", rank=RANK_ATTACKS - 0.5),
))
def reliability_evaluator(ctx: EvalContext, opts: ReliabilityOptions) -> dict:
    """Attack-failure checks (Carlini et al. 2019; Pintor et al. 2022), each naming the numbers it doubts: loss consistency, unbounded sanity, convergence, DeepFool overstatement, AutoAttack's flags, trimmed budgets."""
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
        "trimmed_budget": trimmed_budget(ctx, attacks, best, opts),
    }
    same = same_inputs(attacks, best)
    # the verdict covers this evaluator's own columns too, as the report reads them back
    own = {**ctx.results, "reliability": {"checks": checks, "same_inputs": same}}
    return {**summarise(checks, own), "checks": checks, "same_inputs": same}
