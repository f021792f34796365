"""The ``deepfool`` and ``attacks`` evaluators: run on the suite's fixed, seeded attack subset.

Both verify every adversarial themselves: an input counts as broken only if it was
classified correctly, the returned input (clamped to [0, 1]) lies within the budget and
the model assigns it another class. Misclassified inputs are never attacked and never
count as robust.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from bench.attacks.deepfool import ALREADY_MISCLASSIFIED, FLIPPED, NOT_FLIPPED, DeepFoolOptions, deepfool
from bench.attacks.library import AttackInfo
from bench.attacks.methods import (NORMS, AttackMethod, attack_guard, check_eps, check_inputs, check_logits,
                                    eps_key, get_attack, options_dict, seeded)
from bench.core.errors import BenchError
from bench.evaluation.columns import RANK_ATTACKS, RANK_DEEPFOOL, Column
from bench.evaluation.hook import EvalContext, register_evaluator
from bench.core.typed import from_dict

# Relative slack when checking that a returned input lies within ε: projections in float32
# land a few ulps outside the ball.
BUDGET_TOLERANCE = 1e-5


def _number(value: float) -> float | None:
    """JSON-able number: NaN/inf (undefined) become null."""
    value = float(value)
    return value if math.isfinite(value) else None


def _subset(ctx: EvalContext, max_inputs: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = ctx.test_inputs()
    if max_inputs is not None:
        x, y = x[:max_inputs], y[:max_inputs]
    return x, y


@torch.no_grad()
def predict(model, x: torch.Tensor, device: torch.device, batch_size: int) -> torch.Tensor:
    """Predicted classes of ``x`` (CPU), refusing non-finite logits."""
    preds = []
    for start in range(0, x.shape[0], batch_size):
        logits = model(x[start:start + batch_size].to(device))
        check_logits(logits)
        preds.append(logits.argmax(1).cpu())
    return torch.cat(preds)


# ----- deepfool -------------------------------------------------------------------------

@register_evaluator("deepfool", options=DeepFoolOptions, kind="attack", columns=(
    Column("rho", "ρ DeepFool", ("rho_mean",), atol=1e-4, rank=RANK_DEEPFOOL),
    Column("rho_median", "ρ DeepFool (median)", ("rho_median",), atol=1e-4, section="detail", rank=RANK_DEEPFOOL),
))
def deepfool_evaluator(ctx: EvalContext, opts: DeepFoolOptions) -> dict:
    """Our batched L2 DeepFool on the attack subset: ρ = ‖r‖₂/‖x‖₂ over correct, flipped inputs, with status counts."""
    x, y = _subset(ctx, opts.max_inputs)
    started = time.perf_counter()
    res = deepfool(ctx.model, x, y, overshoot=opts.overshoot, max_iter=opts.max_iter, candidates=opts.candidates,
                   batch_size=opts.batch_size, device=ctx.device)
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
        "n_already_misclassified": res.status.count(ALREADY_MISCLASSIFIED),
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
    "fgsm", "pgd-linf", "pgd-l2", "apgd-ce-linf", "apgd-ce-l2", "apgd-t-linf", "apgd-t-l2",
    "square-linf", "cw-l2", "deepfool-foolbox", "ddn-l2", "fmn-l2", "hsj-l2",
)


def _budget(value: float | str) -> float:
    """A budget as a number: 0.5, or a fraction written as text, '8/255'."""
    if isinstance(value, str):
        num, sep, den = value.partition("/")
        try:
            return float(num) / float(den) if sep else float(num)
        except (ValueError, ZeroDivisionError):
            raise ValueError(f"cannot read the budget {value!r} (use a number or a fraction like 8/255)") from None
    return float(value)


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
        object.__setattr__(self, "eps_l2", tuple(_budget(v) for v in self.eps_l2))
        object.__setattr__(self, "eps_linf", tuple(_budget(v) for v in self.eps_linf))
        if not self.methods:
            raise ValueError("methods must name at least one attack (bench list attacks)")
        if len(set(self.methods)) != len(self.methods):
            raise ValueError(f"methods repeat a name: {list(self.methods)}")
        for name in self.methods:
            get_attack(name)  # BenchError naming close matches
        unknown = sorted(set(self.params) - set(self.methods))
        if unknown:
            raise ValueError(f"params names attacks not in methods: {unknown}")
        for name in self.methods:
            self.method_options(name)
        for norm, grid in (("L2", self.eps_l2), ("Linf", self.eps_linf)):
            for eps in grid:
                if not (math.isfinite(eps) and eps > 0) or (norm == "Linf" and eps > 1):
                    raise ValueError(f"{norm} ε = {eps:g} is out of range (need 0 < ε"
                                     f"{' <= 1' if norm == 'Linf' else ''})")
            if len(set(grid)) != len(grid):
                raise ValueError(f"eps_{norm.lower()} repeats a value: {list(grid)}")
        if self.max_inputs is not None and self.max_inputs < 1:
            raise ValueError(f"max_inputs must be >= 1, got {self.max_inputs}")
        if self.batch_size < 1 or self.curve_points < 2 or not self.curve_max > 0:
            raise ValueError("batch_size must be >= 1, curve_points >= 2 and curve_max > 0")

    def method_options(self, name: str) -> Any:
        spec = get_attack(name)
        return from_dict(spec.options, self.params.get(name, {}), f"evaluation.settings.attacks.params.{name}")

    def grid(self, norm: str) -> tuple[float, ...]:
        return self.eps_l2 if norm == "L2" else self.eps_linf


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


def verify(model, x: torch.Tensor, y: torch.Tensor, adv: torch.Tensor, norm: str, eps: float | None,
           device: torch.device, batch_size: int) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """(success, distance, counts): re-classify the clamped adversarials and measure them."""
    finite = torch.isfinite(adv).flatten(1).all(1)
    adv = torch.where(finite.view(-1, *[1] * (adv.dim() - 1)), adv, x).clamp(0.0, 1.0)
    delta = (adv - x).flatten(1).double()
    dist = delta.norm(dim=1) if norm == "L2" else delta.abs().amax(1)
    pred = predict(model, adv, device, batch_size) if adv.shape[0] else y.clone()
    fooled = finite & (pred != y)
    within = torch.ones_like(fooled) if eps is None else dist <= eps * (1 + BUDGET_TOLERANCE) + 1e-7
    counts = {"n_over_budget": int((fooled & ~within).sum()), "n_nonfinite": int((~finite).sum())}
    return fooled & within, dist, counts


@register_evaluator("attacks", options=AttacksOptions, kind="attack", columns=(
    Column("ra:{0}:{1}", "RA {0} ε={1} (%)", ("robust_accuracy", "*", "*"), fmt="pct", atol=0.01, rtol=0.0,
           rank=RANK_ATTACKS),
    Column("minnorm:{0}", "{0} median min-norm", ("min_norm", "*", "median_norm"), atol=1e-4, section="detail",
           rank=RANK_ATTACKS),
    Column("ra_autoattack:Linf:{0}", "RA AutoAttack L∞ ε={0} (%)", ("per_attack", "autoattack-linf",
           "robust_accuracy", "*"), fmt="pct", atol=0.01, rtol=0.0, rank=RANK_ATTACKS - 1),
    Column("ra_autoattack:L2:{0}", "RA AutoAttack L2 ε={0} (%)", ("per_attack", "autoattack-l2",
           "robust_accuracy", "*"), fmt="pct", atol=0.01, rtol=0.0, rank=RANK_ATTACKS - 1),
))
def attacks_evaluator(ctx: EvalContext, opts: AttacksOptions) -> dict:
    """torchattacks/foolbox attacks at the suite's ε grids: worst-case robust accuracy, min-norm medians and curves."""
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
        clean_pred = predict(model, x, device, opts.batch_size)
        with torch.no_grad():
            num_classes = int(model(x[:1].to(device)).shape[1])
    correct = clean_pred == y
    info = AttackInfo(num_classes=num_classes, seed=opts.seed, device=device)
    broken = {norm: {eps: torch.zeros(n, dtype=torch.bool) for eps in opts.grid(norm)} for norm in norms}
    per_attack: dict[str, dict] = {}
    min_norm: dict[str, dict] = {}
    curve_eps = np.linspace(0.0, opts.curve_max, opts.curve_points)

    for name, spec, mopts in methods:
        m = n if getattr(mopts, "max_inputs", None) is None else min(n, mopts.max_inputs)
        targets = correct[:m].nonzero().squeeze(1)
        entry: dict[str, Any] = {"norm": spec.norm, "kind": spec.kind, "library": spec.library,
                                 "linearisation": spec.linearisation, "n_inputs": m,
                                 "n_attacked": int(targets.numel()), "settings": options_dict(mopts)}
        started = time.perf_counter()
        if spec.kind == "fixed_eps":
            entry["robust_accuracy"], entry["success_rate"] = {}, {}
            entry["n_over_budget"] = entry["n_nonfinite"] = 0
            for eps in opts.grid(spec.norm):
                adv = _run_method(spec, model, x, y, targets, eps, mopts, info, opts.batch_size)
                ok, _, counts = verify(model, x[targets], y[targets], adv, spec.norm, eps, device, opts.batch_size)
                success = torch.zeros(n, dtype=torch.bool)
                success[targets[ok]] = True
                broken[spec.norm][eps] |= success
                key = eps_key(eps)
                entry["robust_accuracy"][key] = float((correct[:m] & ~success[:m]).double().mean())
                entry["success_rate"][key] = float(ok.double().mean()) if ok.numel() else None
                entry["n_over_budget"] += counts["n_over_budget"]
                entry["n_nonfinite"] += counts["n_nonfinite"]
        else:
            adv = _run_method(spec, model, x, y, targets, None, mopts, info, opts.batch_size)
            ok, dist, counts = verify(model, x[targets], y[targets], adv, spec.norm, None, device, opts.batch_size)
            norms_i = torch.full((n,), math.nan, dtype=torch.float64)
            norms_i[targets[ok]] = dist[ok]
            found = torch.isfinite(norms_i)
            for eps in opts.grid(spec.norm) if spec.norm in broken else ():
                broken[spec.norm][eps] |= found & (norms_i <= eps)
            # median over the correct inputs, a failure counting as an infinite norm: the ε at
            # which this attack's robust accuracy falls to half the clean accuracy
            attacked = torch.where(found, norms_i, torch.full_like(norms_i, math.inf))[targets]
            median = _number(np.median(attacked.numpy())) if attacked.numel() else None
            curve = [[float(e), float((correct[:m] & ~(found[:m] & (norms_i[:m] <= e))).double().mean())]
                     for e in curve_eps]
            successes = norms_i[found].numpy()
            entry.update({
                "n_success": int(found.sum()), "n_nonfinite": counts["n_nonfinite"],
                "median_norm": median,
                "median_norm_successes": _number(np.median(successes)) if successes.size else None,
                "mean_norm_successes": _number(np.mean(successes)) if successes.size else None,
                "curve": curve,
                "per_input_norm": [_number(v) for v in norms_i[:m].tolist()],
            })
            min_norm[name] = {"median_norm": median, "curve": curve}
        entry["wall_s"] = time.perf_counter() - started
        per_attack[name] = entry

    robust = {norm: {eps_key(eps): float((correct & ~broken[norm][eps]).double().mean()) for eps in opts.grid(norm)}
              for norm in norms}
    return {"robust_accuracy": robust, "per_attack": per_attack, "min_norm": min_norm,
            "clean_accuracy": float(correct.double().mean()), "n_inputs": n, "num_classes": num_classes,
            "methods": list(opts.methods), "seed": opts.seed,
            "worst_case": "per input, over every attack run at that norm: fixed-ε attacks at ε, "
                          "minimum-norm attacks whose verified norm is <= ε"}
