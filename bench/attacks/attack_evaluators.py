"""The ``deepfool`` and ``attacks`` evaluators: run on the suite's fixed, seeded attack subset.

Both verify every adversarial themselves: an input counts as broken only if it was
classified correctly, the returned input (clamped to [0, 1]) lies within the budget and
the model assigns it another class. Misclassified inputs are never attacked and never
count as robust.

Beside their JSON results they leave the adversarial inputs in ``ctx.artifacts`` (never in
result.json) for the evaluators that read them later (``best_known``, ``attack_collapse``):

* ``artifacts["deepfool"]["x_adv"]``: DeepFool's final inputs, (n, ...) CPU float32;
* ``artifacts["attacks"]``: ``best_l2`` (per input the verified adversarial of smallest L2
  norm any attack of the evaluator found, its norm, +inf where none) and ``points``
  ((norm, ε) → per input the first verified adversarial within ε, else the last attack's
  attempt within ε that moved the input, else the clean input).
"""
from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from bench.evaluation.inference import outputs
from bench.attacks.deepfool import DeepFoolOptions, deepfool
from bench.attacks.outcomes import FLIPPED, MISCLASSIFIED, NOT_FLIPPED
from bench.attacks.library import AttackInfo, AttackNotes, parse_budget
from bench.attacks.queries import QueryCounter
from bench.attacks.methods import (NORMS, AttackMethod, attack_guard, check_eps, check_inputs, check_logits,
                                    eps_key, get_attack, looks_like_probabilities, options_dict, seeded)
from bench.core.errors import BenchError
from bench.evaluation.columns import RANK_ATTACKS, RANK_DEEPFOOL, Column
from bench.evaluation.hook import EvalContext, register_evaluator
from bench.core.typed import from_dict

# Relative slack when checking that a returned input lies within ε: projections in float32
# land a few ulps outside the ball.
BUDGET_TOLERANCE = 1e-5


def within_budget(dist: torch.Tensor, eps: float) -> torch.Tensor:
    """The budget test every evaluator applies (float32 projections land a few ulps outside)."""
    return dist <= eps * (1 + BUDGET_TOLERANCE) + 1e-7


def _number(value: float) -> float | None:
    """JSON-able number: NaN/inf (undefined) become null."""
    value = float(value)
    return value if math.isfinite(value) else None


def _subset(ctx: EvalContext, max_inputs: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = ctx.test_inputs()
    if max_inputs is not None:
        x, y = x[:max_inputs], y[:max_inputs]
    return x, y


def model_outputs(model, x: torch.Tensor, device: torch.device, batch_size: int) -> torch.Tensor:
    """The model's outputs on ``x`` (CPU), refusing non-finite values."""
    return outputs(model, x, device=device, batch_size=batch_size, check=check_logits)[0]


def predict(model, x: torch.Tensor, device: torch.device, batch_size: int) -> torch.Tensor:
    """Predicted classes of ``x`` (CPU), refusing non-finite logits."""
    return model_outputs(model, x, device, batch_size).argmax(1)


# ----- deepfool -------------------------------------------------------------------------

@register_evaluator("deepfool", options=DeepFoolOptions, kind="attack", columns=(
    Column("rho", "ρ DeepFool", ("rho_mean",), atol=1e-4, section="headline", rank=RANK_DEEPFOOL),
    Column("rho_median", "ρ DeepFool (median)", ("rho_median",), atol=1e-4, section="detail", rank=RANK_DEEPFOOL),
))
def deepfool_evaluator(ctx: EvalContext, opts: DeepFoolOptions) -> dict:
    """Our batched L2 DeepFool on the attack subset: ρ = ‖r‖₂/‖x‖₂ over correct, flipped inputs, with status counts."""
    x, y = _subset(ctx, opts.max_inputs)
    started = time.perf_counter()
    res = deepfool(ctx.model, x, y, overshoot=opts.overshoot, max_iter=opts.max_iter, candidates=opts.candidates,
                   batch_size=opts.batch_size, device=ctx.device)
    ctx.artifacts["deepfool"] = {"x_adv": res.x_adv.float()}
    ok = res.flipped & torch.isfinite(res.rho)
    rho, norm, iters = res.rho[ok].numpy(), res.norm[ok].numpy(), res.iterations[ok].double().numpy()

    def stat(fn, values):
        return _number(fn(values)) if values.size else None

    return {
        "rho_mean": stat(np.mean, rho), "rho_median": stat(np.median, rho), "rho_std": stat(np.std, rho),
        "norm_mean": stat(np.mean, norm), "norm_median": stat(np.median, norm),
        "iterations_mean": stat(np.mean, iters),
        "n_inputs": len(res.status),
        "n_flipped": res.status.count(FLIPPED),
        "n_not_flipped": res.status.count(NOT_FLIPPED),
        "n_already_misclassified": res.status.count(MISCLASSIFIED),
        "candidates": res.candidates, "all_classes": opts.candidates is None or res.candidates == res.num_classes,
        "overshoot": opts.overshoot, "max_iter": opts.max_iter,
        "reference": "true label",
        "space": "pixels in [0, 1]",
        "nonfinite_gradients": res.stats.get("nonfinite_gradients", 0),
        "wall_s": time.perf_counter() - started,
        "per_input": {
            "norm": [_number(v) for v in res.norm.tolist()],
            "rho": [_number(v) for v in res.rho.tolist()],
            "iterations": res.iterations.tolist(),
            "status": list(res.status),
        },
    }


# ----- attacks --------------------------------------------------------------------------

DEFAULT_METHODS: tuple[str, ...] = (
    "fgsm", "pgd-linf", "pgd-l2", "apgd-ce-linf", "apgd-ce-l2", "apgd-dlr-linf", "apgd-dlr-l2",
    "apgd-t-linf", "apgd-t-l2", "square-linf", "cw-l2", "deepfool-foolbox", "ddn-l2", "fmn-l2", "hsj-l2",
    "autoattack-l2", "autoattack-linf",
)


@dataclass(frozen=True)
class AttacksOptions:
    """Settings of the ``attacks`` evaluator (suite: ``evaluation.settings.attacks``)."""

    methods: tuple[str, ...] = DEFAULT_METHODS
    # budgets in [0, 1] pixel units; a fraction such as "8/255" is accepted
    eps_l2: tuple[float | str, ...] = (36 / 255, 0.5, 1.0)
    eps_linf: tuple[float | str, ...] = (2 / 255, 8 / 255)
    max_inputs: int | None = None      # first N inputs of the suite's attack subset (None: all)
    batch_size: int = 500
    seed: int = 0
    curve_max: float = 2.0             # L2 robust-accuracy curve of min-norm attacks: ε in [0, curve_max]
    curve_points: int = 21
    params: dict[str, dict[str, Any]] = field(default_factory=dict)   # per-method settings

    def __post_init__(self) -> None:
        object.__setattr__(self, "eps_l2", tuple(parse_budget(v) for v in self.eps_l2))
        object.__setattr__(self, "eps_linf", tuple(parse_budget(v) for v in self.eps_linf))
        if not self.methods:
            raise ValueError("methods must name at least one attack (bench list attacks)")
        if len(set(self.methods)) != len(self.methods):
            raise ValueError(f"methods repeat a name: {list(self.methods)}")
        for name in self.methods:
            get_attack(name)  # BenchError naming close matches
        unknown = sorted(set(self.params) - set(self.methods))
        if unknown:
            raise ValueError(f"params names attacks not in methods: {unknown}")
        for norm, grid in (("L2", self.eps_l2), ("Linf", self.eps_linf)):
            for eps in grid:
                if not (math.isfinite(eps) and eps > 0) or (norm == "Linf" and eps > 1):
                    raise ValueError(f"{norm} ε = {eps:g} is out of range (need 0 < ε"
                                     f"{' <= 1' if norm == 'Linf' else ''})")
            if len(set(grid)) != len(grid):
                raise ValueError(f"eps_{norm.lower()} repeats a value: {list(grid)}")
        for name in self.methods:
            mopts = self.method_options(name)
            only = getattr(mopts, "eps", None)
            if only is not None:
                spec = get_attack(name)
                if spec.kind != "fixed_eps":
                    raise ValueError(f"params.{name}.eps: only fixed-ε attacks take budgets")
                outside = [e for e in only if e not in self.grid(spec.norm)]
                if outside:
                    raise ValueError(f"params.{name}.eps: {', '.join(f'{e:g}' for e in outside)} not in "
                                     f"eps_{spec.norm.lower()} {[round(e, 6) for e in self.grid(spec.norm)]}")
        if self.max_inputs is not None and self.max_inputs < 1:
            raise ValueError(f"max_inputs must be >= 1, got {self.max_inputs}")
        if self.batch_size < 1 or self.curve_points < 2 or not self.curve_max > 0:
            raise ValueError("batch_size must be >= 1, curve_points >= 2 and curve_max > 0")

    def method_options(self, name: str) -> Any:
        spec = get_attack(name)
        return from_dict(spec.options, self.params.get(name, {}), f"evaluation.settings.attacks.params.{name}")

    def grid(self, norm: str) -> tuple[float, ...]:
        return self.eps_l2 if norm == "L2" else self.eps_linf

    def method_grid(self, name: str, mopts: Any) -> tuple[float, ...]:
        """The budgets a fixed-ε method runs at: its own ``eps`` subset, else the whole grid."""
        only = getattr(mopts, "eps", None)
        return tuple(e for e in self.grid(get_attack(name).norm) if only is None or e in only)


def _run_method(spec: AttackMethod, model, x: torch.Tensor, y: torch.Tensor, targets: torch.Tensor,
                eps: float | None, mopts, info: AttackInfo, batch_size: int) -> torch.Tensor:
    """The method's adversarials for inputs ``targets``, batch by batch (CPU)."""
    out = []
    for start in range(0, targets.numel(), batch_size):
        idx = targets[start:start + batch_size]
        xb, yb = x[idx].to(info.device), y[idx].to(info.device)
        with attack_guard(model), seeded(info.seed, info.device):
            adv = spec.run(model, xb, yb, eps, mopts, info)
        if not isinstance(adv, torch.Tensor) or adv.shape != xb.shape:
            raise BenchError(f"attack {spec.name} returned {type(adv).__name__} of shape "
                             f"{tuple(getattr(adv, 'shape', ()))}, expected {tuple(xb.shape)}")
        out.append(adv.detach().float().cpu())
    return torch.cat(out) if out else x[:0].clone()


@dataclass
class Verified:
    """An attack's returned inputs after our own checks (all on CPU, one row per input)."""

    adv: torch.Tensor        # clamped to [0, 1]; the clean input where the return was not finite
    success: torch.Tensor    # another class, finite, within the budget
    l2: torch.Tensor         # ‖adv − x‖₂ (float64)
    linf: torch.Tensor       # ‖adv − x‖∞ (float64)
    within: torch.Tensor     # within the budget (always true without one)
    counts: dict


def verify_inputs(model, x: torch.Tensor, y: torch.Tensor, adv: torch.Tensor, norm: str, eps: float | None,
                  device: torch.device, batch_size: int) -> Verified:
    """Re-classify the clamped adversarials and measure them in both norms."""
    finite = torch.isfinite(adv).flatten(1).all(1)
    adv = torch.where(finite.view(-1, *[1] * (adv.dim() - 1)), adv, x).clamp(0.0, 1.0)
    delta = (adv - x).flatten(1).double()
    l2, linf = delta.norm(dim=1), delta.abs().amax(1)
    dist = l2 if norm == "L2" else linf
    pred = predict(model, adv, device, batch_size) if adv.shape[0] else y.clone()
    fooled = finite & (pred != y)
    within = torch.ones_like(fooled) if eps is None else within_budget(dist, eps)
    counts = {"n_over_budget": int((fooled & ~within).sum()), "n_nonfinite": int((~finite).sum())}
    return Verified(adv, fooled & within, l2, linf, within, counts)


def verify(model, x: torch.Tensor, y: torch.Tensor, adv: torch.Tensor, norm: str, eps: float | None,
           device: torch.device, batch_size: int) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """(success, distance in ``norm``, counts) of :func:`verify_inputs`."""
    v = verify_inputs(model, x, y, adv, norm, eps, device, batch_size)
    return v.success, (v.l2 if norm == "L2" else v.linf), v.counts


def _rounded(values: torch.Tensor) -> list[float]:
    # 7 significant digits: float32 inputs measure no finer, and result.json stays small
    return [float(f"{v:.7g}") for v in values.tolist()]


class _Artifacts:
    """The adversarial inputs later evaluators read (``ctx.artifacts["attacks"]``)."""

    def __init__(self, x: torch.Tensor, grids: dict[str, tuple[float, ...]]) -> None:
        n = x.shape[0]
        self.best_l2 = torch.full((n,), math.inf, dtype=torch.float64)
        self.best_l2_adv = x.clone()
        self.best_l2_source: list[str | None] = [None] * n
        self.points = {(norm, eps): x.clone() for norm, grid in grids.items() for eps in grid}
        self.point_found = {key: torch.zeros(n, dtype=torch.bool) for key in self.points}

    def add(self, targets: torch.Tensor, v: Verified, source: str, at: tuple[str, float] | None) -> None:
        better = v.success & (v.l2 < self.best_l2[targets])
        rows = targets[better]
        self.best_l2[rows] = v.l2[better]
        self.best_l2_adv[rows] = v.adv[better]
        for i in rows.tolist():
            self.best_l2_source[i] = source
        if at is not None:
            found = self.point_found[at]
            open_ = ~found[targets]
            # the first verified adversarial wins; until one is found, the latest attempt within ε
            # that moved the input (APGD and AutoAttack hand back the clean input where they fail)
            take = open_ & v.within & (v.l2 > 0)
            self.points[at][targets[take]] = v.adv[take]
            found[targets[open_ & v.success]] = True

    def as_dict(self) -> dict:
        return {"best_l2": self.best_l2, "best_l2_adv": self.best_l2_adv, "best_l2_source": self.best_l2_source,
                "points": self.points, "point_found": self.point_found}


def _autoattack_summary(notes: dict, m: int) -> dict:
    """AutoAttack's notes of one ε as stored: flags, messages, robust accuracy after each attack."""
    return {"flags": notes.get("flags", {}), "messages": notes.get("messages", []),
            "robust_accuracy_after": {name: count / m for name, count in notes.get("robust_after", {}).items()}}


@register_evaluator("attacks", options=AttacksOptions, kind="attack", columns=(
    Column("ra:{0}:{1}", "RA {0} ε={1} (%)", ("robust_accuracy", "*", "*"), fmt="pct", atol=0.01, rtol=0.0,
           section="robustness", rank=RANK_ATTACKS),
    Column("minnorm:{0}", "{0} median min-norm", ("min_norm", "*", "median_norm"), atol=1e-4, section="detail",
           rank=RANK_ATTACKS),
    Column("ra_autoattack:Linf:{0}", "RA AutoAttack L∞ ε={0} (%)", ("per_attack", "autoattack-linf",
           "robust_accuracy", "*"), fmt="pct", atol=0.01, rtol=0.0, section="robustness",
           rank=RANK_ATTACKS - 1),
    Column("ra_autoattack:L2:{0}", "RA AutoAttack L2 ε={0} (%)", ("per_attack", "autoattack-l2",
           "robust_accuracy", "*"), fmt="pct", atol=0.01, rtol=0.0, section="robustness",
           rank=RANK_ATTACKS - 1),
))
def attacks_evaluator(ctx: EvalContext, opts: AttacksOptions) -> dict:
    """torchattacks/foolbox/AutoAttack attacks at the suite's ε grids: worst-case robust accuracy, min-norm medians and curves."""
    x, y = _subset(ctx, opts.max_inputs)
    check_inputs(x, "attack inputs")
    n, dim = x.shape[0], x[0].numel()
    methods = [(name, get_attack(name), opts.method_options(name)) for name in opts.methods]
    norms = [norm for norm in NORMS if any(spec.norm == norm for _, spec, _ in methods)]
    for norm in norms:  # every budget is checked before any attack runs: no partial result
        for eps in opts.grid(norm):
            check_eps(norm, eps, dim)
    model, device = ctx.model, ctx.device
    with attack_guard(model):
        outputs = model_outputs(model, x, device, opts.batch_size)
    clean_pred = outputs.argmax(1)
    num_classes = int(outputs.shape[1])
    too_few = [f"{name} needs at least {spec.min_classes}" for name, spec, _ in methods
               if num_classes < spec.min_classes]
    if too_few:
        raise BenchError(f"the model has {num_classes} classes: {'; '.join(too_few)} (drop it from attacks.methods)")
    probabilities = looks_like_probabilities(outputs)
    correct = clean_pred == y
    info = AttackInfo(num_classes=num_classes, seed=opts.seed, device=device)
    grids = {norm: opts.grid(norm) for norm in norms}
    broken = {norm: {eps: torch.zeros(n, dtype=torch.bool) for eps in grids[norm]} for norm in norms}
    artifacts = _Artifacts(x, grids)
    per_attack: dict[str, dict] = {}
    min_norm: dict[str, dict] = {}
    deviations: list[str] = []
    curve_eps = np.linspace(0.0, opts.curve_max, opts.curve_points)

    for name, spec, mopts in methods:
        m = n if getattr(mopts, "max_inputs", None) is None else min(n, mopts.max_inputs)
        targets = correct[:m].nonzero().squeeze(1)
        entry: dict[str, Any] = {"norm": spec.norm, "kind": spec.kind, "library": spec.library,
                                 "linearisation": spec.linearisation, "loss": spec.loss, "n_inputs": m,
                                 "n_attacked": int(targets.numel()), "settings": options_dict(mopts)}
        # departures from a reference configuration (AutoAttack's standard version declares
        # one), and any method run on part of the ε grid
        own = []
        if hasattr(mopts, "deviations"):
            own += mopts.deviations(num_classes)
            if m < n:
                own.append(f"first {m} of the {n} attack inputs")
        if spec.kind == "fixed_eps" and getattr(mopts, "eps", None) is not None:
            own.append(f"run at ε = {', '.join(f'{e:g}' for e in opts.method_grid(name, mopts))} only "
                       f"(grid: {', '.join(f'{e:g}' for e in grids[spec.norm])})")
        if own:
            entry["deviations"] = own
            deviations += [f"{name}: {d}" for d in own]
        started = time.perf_counter()
        if spec.kind == "fixed_eps":
            entry["robust_accuracy"], entry["success_rate"], entry["successes"] = {}, {}, {}
            entry["n_over_budget"] = entry["n_nonfinite"] = 0
            for eps in opts.method_grid(name, mopts):
                notes = AttackNotes()
                adv = _run_method(spec, model, x, y, targets, eps, mopts,
                                  dataclasses.replace(info, notes=notes), opts.batch_size)
                v = verify_inputs(model, x[targets], y[targets], adv, spec.norm, eps, device, opts.batch_size)
                artifacts.add(targets, v, f"{name}@{eps_key(eps)}", (spec.norm, eps))
                ok = v.success
                success = torch.zeros(n, dtype=torch.bool)
                success[targets[ok]] = True
                broken[spec.norm][eps] |= success
                key = eps_key(eps)
                entry["robust_accuracy"][key] = float((correct[:m] & ~success[:m]).double().mean())
                entry["success_rate"][key] = float(ok.double().mean()) if ok.numel() else None
                # per input, for the per-input worst case of later evaluators: which inputs
                # this attack broke at ε, and the size of each verified adversarial
                entry["successes"][key] = {"index": targets[ok].tolist(), "l2": _rounded(v.l2[ok]),
                                           "linf": _rounded(v.linf[ok])}
                entry["n_over_budget"] += v.counts["n_over_budget"]
                entry["n_nonfinite"] += v.counts["n_nonfinite"]
                if notes.values:
                    entry.setdefault("notes", {})[key] = _autoattack_summary(notes.values, m)
        else:
            # the budget, measured: forward and backward passes per attacked input
            counter = QueryCounter(model)
            adv = _run_method(spec, counter, x, y, targets, None, mopts, info, opts.batch_size)
            entry["queries"] = counter.per_input(int(targets.numel()))
            v = verify_inputs(model, x[targets], y[targets], adv, spec.norm, None, device, opts.batch_size)
            artifacts.add(targets, v, name, None)
            ok = v.success
            norms_i = torch.full((n,), math.nan, dtype=torch.float64)
            norms_i[targets[ok]] = (v.l2 if spec.norm == "L2" else v.linf)[ok]
            linf_i = torch.full((n,), math.nan, dtype=torch.float64)
            linf_i[targets[ok]] = v.linf[ok]
            found = torch.isfinite(norms_i)
            for eps in grids.get(spec.norm, ()):
                broken[spec.norm][eps] |= found & within_budget(norms_i, eps)
            # median over the correct inputs, a failure counting as an infinite norm: the ε at
            # which this attack's robust accuracy falls to half the clean accuracy
            attacked = torch.where(found, norms_i, torch.full_like(norms_i, math.inf))[targets]
            median = _number(np.median(attacked.numpy())) if attacked.numel() else None
            curve = [[float(e), float((correct[:m] & ~(found[:m] & (norms_i[:m] <= e))).double().mean())]
                     for e in curve_eps]
            successes = norms_i[found].numpy()
            entry.update({
                "n_success": int(found.sum()), "n_nonfinite": v.counts["n_nonfinite"],
                "median_norm": median,
                "median_norm_successes": _number(np.median(successes)) if successes.size else None,
                "mean_norm_successes": _number(np.mean(successes)) if successes.size else None,
                "curve": curve,
                "per_input_norm": [_number(v) for v in norms_i[:m].tolist()],
                "per_input_linf": [_number(v) for v in linf_i[:m].tolist()],
            })
            min_norm[name] = {"median_norm": median, "curve": curve}
        entry["wall_s"] = time.perf_counter() - started
        per_attack[name] = entry

    ctx.artifacts["attacks"] = artifacts.as_dict()
    robust = {norm: {eps_key(eps): float((correct & ~broken[norm][eps]).double().mean()) for eps in grids[norm]}
              for norm in norms}
    return {"robust_accuracy": robust, "per_attack": per_attack, "min_norm": min_norm,
            "clean_accuracy": float(correct.double().mean()), "n_inputs": n, "num_classes": num_classes,
            "misclassified": (~correct).nonzero().squeeze(1).tolist(),
            "eps": {norm: list(grids[norm]) for norm in norms},
            "outputs_are_probabilities": probabilities,
            "deviations": deviations,
            "methods": list(opts.methods), "seed": opts.seed, "batch_size": opts.batch_size,
            "worst_case": "per input, over every attack run at that norm: fixed-ε attacks at ε, "
                          "minimum-norm attacks whose verified norm is <= ε"}
