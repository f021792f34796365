"""The ``masking`` evaluator (deprecated): does DeepFool overstate robustness (gradient masking)?

Superseded by the ``reliability`` evaluator's ``deepfool_overstatement`` check, which
compares DeepFool with the best-known perturbation of every attack; kept so that suites
and results that name it still load (digits-ci).

DeepFool's norm is only an upper bound on the minimal perturbation, found by following
linearisations; a flat (e.g. collapsed) latent space can flatten input gradients and make
it look large. Minimum-norm attacks that do not rely on the same linearisation (FMN, DDN,
C&W, and the decision-based HopSkipJump, which uses no gradients at all) give independent
upper bounds. Per clean-correct input i of the attack subset, with d_i DeepFool's norm
(+∞ when it did not flip i) and o_i the smallest verified norm of the other attacks
(+∞ when none succeeded):

    smaller_i = o_i < (1 − margin) · d_i,     fraction_smaller = Σ smaller_i / n_compared,

n_compared counting the inputs where DeepFool or another attack found an adversarial.
The run is flagged ("DeepFool may overstate robustness") when fraction_smaller > threshold.
Defaults: margin 0.1 (10 %), threshold 0.25. Needs the ``deepfool`` and ``attacks``
evaluators earlier in the suite's list (``attacks`` with at least one such method).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from bench.attacks.outcomes import MISCLASSIFIED, canonical_all
from bench.core.errors import BenchError
from bench.evaluation.columns import RANK_DEEPFOOL, Column
from bench.evaluation.hook import EvalContext, register_evaluator

VERDICT_OK = "ok"
VERDICT_FLAG = "DeepFool may overstate robustness"


@dataclass(frozen=True)
class MaskingOptions:
    margin: float = 0.1
    threshold: float = 0.25
    compare: tuple[str, ...] | None = None   # min-norm attacks to compare with (None: all non-DeepFool L2 ones run)

    def __post_init__(self) -> None:
        if not 0 <= self.margin < 1:
            raise ValueError(f"margin must be in [0, 1), got {self.margin}")
        if not 0 <= self.threshold <= 1:
            raise ValueError(f"threshold must be in [0, 1], got {self.threshold}")


def masking_check(deepfool_result: dict, attacks_result: dict, opts: MaskingOptions) -> dict:
    """The cross-check on the stored results of the two evaluators (see module docstring)."""
    status = canonical_all(deepfool_result["per_input"]["status"])
    df_norm = deepfool_result["per_input"]["norm"]
    per_attack = attacks_result.get("per_attack", {})
    eligible = {name: entry for name, entry in per_attack.items()
                if entry.get("kind") == "min_norm" and entry.get("norm") == "L2"
                and not entry.get("linearisation") and "per_input_norm" in entry}
    if opts.compare is not None:
        missing = [name for name in opts.compare if name not in eligible]
        if missing:
            raise BenchError(f"masking.compare names {missing}, which the attacks evaluator did not run as "
                             f"non-DeepFool L2 minimum-norm attacks (ran: {sorted(eligible)})")
        eligible = {name: eligible[name] for name in opts.compare}
    if not eligible:
        raise BenchError("masking needs a minimum-norm attack other than DeepFool in attacks.methods "
                         "(e.g. fmn-l2, ddn-l2, cw-l2, hsj-l2)")

    def norm_at(values, i):
        v = values[i] if i < len(values) else None
        return math.inf if v is None else float(v)

    compared = smaller = df_failed_other_found = 0
    by_attack = {name: 0 for name in eligible}
    for i, s in enumerate(status):
        if s == MISCLASSIFIED:
            continue
        d = norm_at(df_norm, i)
        others = {name: norm_at(entry["per_input_norm"], i) for name, entry in eligible.items()}
        best = min(others.values())
        if math.isinf(d) and math.isinf(best):
            continue  # nobody found an adversarial: nothing to compare
        compared += 1
        limit = (1 - opts.margin) * d
        if best < limit:
            smaller += 1
            df_failed_other_found += math.isinf(d)
        for name, o in others.items():
            by_attack[name] += o < limit
    fraction = smaller / compared if compared else None
    flag = fraction is not None and fraction > opts.threshold
    return {
        "fraction_smaller": fraction, "margin": opts.margin, "threshold": opts.threshold,
        "flag": flag, "verdict": VERDICT_FLAG if flag else VERDICT_OK, "n_compared": compared,
        "n_smaller": smaller, "n_deepfool_failed_other_found": df_failed_other_found,
        "compared_with": sorted(eligible),
        "fraction_smaller_by_attack": {name: (k / compared if compared else None) for name, k in by_attack.items()},
    }


@register_evaluator("masking", options=MaskingOptions, kind="attack", requires=("deepfool", "attacks"), columns=(
    Column("masking_fraction", "masking: fraction smaller", ("fraction_smaller",), fmt="pct", atol=0.02, rtol=0.0,
           section="detail", rank=RANK_DEEPFOOL),
))
def masking_evaluator(ctx: EvalContext, opts: MaskingOptions) -> dict:
    """Deprecated (use reliability): how often other minimum-norm attacks beat DeepFool by > margin."""
    missing = [name for name in ("deepfool", "attacks") if name not in ctx.results]
    if missing:
        raise BenchError(f"masking needs the {' and '.join(missing)} evaluator(s) listed before it "
                         f"in evaluation.evaluators")
    return masking_check(ctx.results["deepfool"], ctx.results["attacks"], opts)
