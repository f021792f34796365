"""The ``attack_unit_test`` evaluator: do the suite's attacks find an adversarial example known to exist?

After Zimmermann, Brendel, Tramèr & Carlini (NeurIPS 2022, "Increasing Confidence in
Adversarial Robustness Evaluations"; reference code google-research/active-adversarial-tests),
their binarization test. Per input x of a seeded sample of correctly classified inputs of the
attack subset, and per norm p at the suite's largest ε of that norm:

1. sample ``n_inner`` [255, at most min(feature width, input dimension) − 1] inner points uniformly in the ε-ball of radius ``inner_radius``·ε
   [0.95] and one boundary point x_b on the sphere ‖x_b − x‖_p = ε (both clipped to [0, 1],
   which can only bring them closer); x itself is an inner point;
2. on the model's features φ (the backbone features h of a ``Classifier``: the wide layer
   before the plugin's latent z, whose d = 8–32 is narrower than the points; the pixels of
   any other model) fit a linear 2-class readout s(φ) = w·φ + b separating them exactly
   (the minimum-norm least-squares fit of targets −1 inner / +1 boundary, exact when the
   points' features are affinely independent);
3. move its threshold to τ = s_in + ``boundary_fraction``·(s(x_b) − s_in) [0.9999], s_in the
   largest inner score, so that x_b, at distance ≤ ε, is provably adversarial while every
   inner point keeps the clean class;
4. rescale the logit difference α·(s − τ) so that at x it equals the original model's
   margin f_y − max_{k≠y} f_k (the readout lives in the original logits' range).

The planted model answers every query with the readout of the sampled input nearest to the
query (in the test's norm); inputs whose ε-balls come within 2ε of each other are dropped so
that, inside each ball, the planted model is exactly that input's readout (the next input
of the seeded order takes its place; ``n_skipped_overlapping`` counts them). Each setup is
verified by re-classification (x clean, x_b adversarial); an input that fails it is a
*setup failure*, reported, never counted.

Then every attack of the ``attacks`` evaluator's run, with its settings (``params``
overrides them), runs on the planted model: a fixed-ε attack of norm p at ε, a minimum-norm
attack of norm p whose verified perturbation is ≤ ε. Pass rate of an attack: the share of
tests where it found a verified adversarial within ε; of the suite: the share where any
attack did (the per-input worst case the suite's numbers are built on). The suite passes
at ``threshold`` [0.95] (the paper sets none; 95 % is the issue's choice). A 2-class readout
cannot run a margin loss over the third-largest logit (APGD-DLR, APGD-T, AutoAttack):
those attacks are listed as not covered.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from bench.attacks.attack_evaluators import _run_method, model_outputs, verify_inputs, within_budget
from bench.attacks.library import AttackInfo, parse_budget
from bench.attacks.methods import attack_guard, eps_key, get_attack
from bench.core.errors import BenchError
from bench.core.typed import from_dict
from bench.evaluation.columns import RANK_DEEPFOOL, Column
from bench.evaluation.hook import EvalContext, register_evaluator

CLEAN, ADVERSARIAL = 0, 1    # the planted model's two classes


@dataclass(frozen=True)
class AttackUnitTestOptions:
    n_inputs: int = 10                 # seeded sample of correct inputs of the attack subset
    seed: int = 0
    n_inner: int = 255                 # inner points per input (at most the feature width − 1)
    inner_radius: float = 0.95         # × ε
    boundary_fraction: float = 0.9999  # where the readout's threshold sits between inner points and x_b
    threshold: float = 0.95            # suite pass rate needed to pass
    eps_l2: float | str | None = None  # None: the largest L2 ε of the attacks evaluator's grid
    eps_linf: float | str | None = None
    methods: tuple[str, ...] | None = None   # None: every attack the attacks evaluator ran
    params: dict[str, dict[str, Any]] = field(default_factory=dict)   # overrides of their settings
    batch_size: int = 500

    def __post_init__(self) -> None:
        for name in ("eps_l2", "eps_linf"):
            value = getattr(self, name)
            if value is not None:
                value = parse_budget(value)
                if not (math.isfinite(value) and value > 0):
                    raise ValueError(f"{name} must be > 0, got {value}")
                object.__setattr__(self, name, value)
        if self.n_inputs < 1 or self.n_inner < 1 or self.batch_size < 1:
            raise ValueError("n_inputs, n_inner and batch_size must be >= 1")
        if not 0 < self.inner_radius < 1 or not 0 < self.boundary_fraction < 1:
            raise ValueError("inner_radius and boundary_fraction must lie in (0, 1)")
        if not 0 <= self.threshold <= 1:
            raise ValueError(f"threshold must be in [0, 1], got {self.threshold}")


# ----- the planted model ----------------------------------------------------------------

def features(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """φ(x): a Classifier's backbone features h (wider than its latent), else the pixels."""
    # a model evaluated from a file (bench evaluate) has forward_all without backbone features
    feats = getattr(model.forward_all(x), "features", None) if hasattr(model, "forward_all") else None
    return x.flatten(1) if feats is None else feats.flatten(1)


def distance(a: torch.Tensor, b: torch.Tensor, norm: str) -> torch.Tensor:
    """Pairwise distances (len(a), len(b)) in ``norm``."""
    a, b = a.flatten(1), b.flatten(1)
    if norm == "L2":
        return torch.cdist(a.double(), b.double())
    return (a.double()[:, None, :] - b.double()[None, :, :]).abs().amax(2)


class PlantedModel(nn.Module):
    """Two logits (clean, adversarial): the readout of the origin nearest to each query."""

    def __init__(self, base: nn.Module, origins: torch.Tensor, w: torch.Tensor, b: torch.Tensor,
                 tau: torch.Tensor, alpha: torch.Tensor, norm: str) -> None:
        super().__init__()
        self.base = base
        self.norm = norm
        self.register_buffer("origins", origins)
        self.register_buffer("w", w)
        self.register_buffer("b", b)
        self.register_buffer("tau", tau)
        self.register_buffer("alpha", alpha)
        self.train(base.training)

    def score(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(readout score s, index of the nearest origin) of each row."""
        with torch.no_grad():
            j = distance(x.detach(), self.origins.to(x.dtype), self.norm).argmin(1)
        # in float64: the threshold sits 1e-4 of the score gap below x_b, finer than float32 sums resolve
        phi = features(self.base, x).double()
        return (phi * self.w[j]).sum(1) + self.b[j], j

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s, j = self.score(x)
        z = (self.alpha[j] * (s - self.tau[j])).to(x.dtype)
        return torch.stack([-z / 2, z / 2], dim=1)


def inner_count(asked: int, width: int, input_dim: int) -> int:
    """Inner points per input: at most min(feature width, input dimension) − 1. With x_b, that many
    affinely independent features are separable exactly; more cannot be, and inside a small ball
    the features φ(x + δ) ≈ φ(x) + Jδ span at most the input's dimension."""
    return max(1, min(asked, width - 1, input_dim - 1))


def _ball_points(x0: torch.Tensor, count: int, radius: float, norm: str, g: torch.Generator) -> torch.Tensor:
    """``count`` points uniform in the ``norm`` ball of ``radius`` around x0, clipped to [0, 1]."""
    shape = (count, *x0.shape)
    dim = x0.numel()
    if norm == "L2":
        d = torch.randn(shape, generator=g, dtype=torch.float64)
        d = d / d.flatten(1).norm(dim=1).view(-1, *[1] * x0.dim())
        r = radius * torch.rand(count, generator=g, dtype=torch.float64) ** (1.0 / dim)
        d = d * r.view(-1, *[1] * x0.dim())
    else:
        d = (torch.rand(shape, generator=g, dtype=torch.float64) * 2 - 1) * radius
    return (x0.double() + d).clamp(0, 1).to(x0.dtype)


def _boundary_point(x0: torch.Tensor, eps: float, norm: str, g: torch.Generator) -> torch.Tensor:
    """A random point at distance ε from x0 (exactly where the box allows), inside [0, 1]."""
    x = x0.double()
    d = torch.randn(x0.shape, generator=g, dtype=torch.float64)
    # no component pointing out of the box where the pixel sits on its bound
    d = torch.where(((x <= 0) & (d < 0)) | ((x >= 1) & (d > 0)), -d, d)
    if norm == "L2":
        d = d / d.norm() * eps
    else:
        d = d.sign() * eps
    return (x + d).clamp(0, 1).to(x0.dtype)


def _fit_readout(phi: torch.Tensor) -> tuple[torch.Tensor, float]:
    """(w, b): the minimum-norm least-squares readout of targets −1 (all rows but the last), +1 (last)."""
    a = torch.cat([phi.double(), torch.ones(phi.shape[0], 1, dtype=torch.float64)], dim=1)
    t = -torch.ones(phi.shape[0], 1, dtype=torch.float64)
    t[-1] = 1.0
    sol = torch.linalg.pinv(a) @ t
    return sol[:-1, 0], float(sol[-1, 0])


@torch.no_grad()
def margin(model: nn.Module, x0: torch.Tensor, label: int, device: torch.device) -> float:
    """f_y − max_{k≠y} f_k of the original model at x0 (> 0 on a correctly classified input)."""
    logits = model_outputs(model, x0[None], device, 1)[0]
    others = logits.clone()
    others[label] = -math.inf
    return float(logits[label] - others.max())


def plant(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, norm: str, opts: AttackUnitTestOptions,
          device: torch.device) -> tuple[PlantedModel | None, torch.Tensor, list[dict], torch.Tensor]:
    """The planted model for inputs ``x`` (all correctly classified): (model, the indices of x it
    covers, setup failures, each covered input's boundary point)."""
    g = torch.Generator().manual_seed(opts.seed)
    failures: list[dict] = []
    keep: list[int] = []
    overlapping = 0
    ws, bs, taus, alphas, boundary = [], [], [], [], []
    with torch.no_grad():
        dim_phi = features(model, x[:1].to(device)).shape[1]
    n_inner = inner_count(opts.n_inner, dim_phi, x[0].numel())
    for i in range(x.shape[0]):
        if len(keep) == opts.n_inputs:
            break
        # the ε-balls must not come near each other, so that the nearest origin inside a ball is its own
        if keep and bool((distance(x[i:i + 1], x[keep], norm) <= 2 * eps).any()):
            overlapping += 1   # skipped, not a failure: the next input in the seeded order is tried
            continue
        x0 = x[i]
        inner = torch.cat([x0[None], _ball_points(x0, n_inner, opts.inner_radius * eps, norm, g)])
        xb = _boundary_point(x0, eps, norm, g)
        with torch.no_grad():
            phi = features(model, torch.cat([inner, xb[None]]).to(device)).double().cpu()
        w, b = _fit_readout(phi)
        s = phi @ w + b
        s_in, s_b = float(s[:-1].max()), float(s[-1])
        if not s_b > s_in:
            failures.append({"index": i, "norm": norm, "reason": "no linear readout of the features separates "
                                                                  "the boundary point from the inner points"})
            continue
        tau = s_in + opts.boundary_fraction * (s_b - s_in)
        alpha = margin(model, x0, int(y[i]), device) / (tau - float(s[0]))
        keep.append(i)
        ws.append(w)
        bs.append(b)
        taus.append(tau)
        alphas.append(alpha)
        boundary.append(xb)
    idx = torch.tensor(keep, dtype=torch.long)
    failures.append({"skipped_overlapping": overlapping})
    if not keep:
        return None, idx, failures, x[:0]
    dtype = torch.float64
    planted = PlantedModel(model, x[idx].to(device), torch.stack(ws).to(device, dtype),
                           torch.tensor(bs, dtype=dtype, device=device), torch.tensor(taus, dtype=dtype, device=device),
                           torch.tensor(alphas, dtype=dtype, device=device), norm)
    return planted, idx, failures, torch.stack(boundary)


def _verify_setup(planted: PlantedModel, x: torch.Tensor, xb: torch.Tensor, eps: float, norm: str,
                  device: torch.device, batch_size: int) -> torch.Tensor:
    """Per input: the clean input is classified clean, the boundary point adversarial, within ε."""
    with torch.no_grad():
        clean = model_outputs(planted, x, device, batch_size).argmax(1) == CLEAN
        adv = model_outputs(planted, xb, device, batch_size).argmax(1) == ADVERSARIAL
    dist = distance(xb, x, norm).diagonal()
    return clean & adv & within_budget(dist, eps)


# ----- the evaluator --------------------------------------------------------------------

def _sample(ctx: EvalContext, attacks: dict, opts: AttackUnitTestOptions) -> torch.Tensor:
    """The correctly classified inputs of the attacks evaluator's subset, in a seeded order."""
    n = int(attacks["n_inputs"])
    wrong = set(attacks.get("misclassified", []))
    correct = torch.tensor([i for i in range(n) if i not in wrong], dtype=torch.long)
    g = torch.Generator().manual_seed(opts.seed)
    # in a seeded random order: the first n_inputs whose ε-balls keep clear of each other are tested
    return correct[torch.randperm(correct.numel(), generator=g)]


def _covered(attacks: dict, opts: AttackUnitTestOptions) -> tuple[list[str], dict[str, str]]:
    ran = list(attacks.get("methods", attacks.get("per_attack", {}).keys()))
    names = ran if opts.methods is None else list(opts.methods)
    unknown = [n for n in names if n not in attacks.get("per_attack", {})]
    if unknown:
        raise BenchError(f"attack_unit_test.methods names attacks the attacks evaluator did not run: {unknown}")
    extra = sorted(set(opts.params) - set(names))
    if extra:
        raise BenchError(f"attack_unit_test.params names attacks it does not run: {extra}")
    covered, skipped = [], {}
    for name in names:
        spec = get_attack(name)
        if spec.min_classes > 2:
            skipped[name] = (f"needs at least {spec.min_classes} classes (a margin loss over the top logits); "
                             f"the planted readout has 2")
        else:
            covered.append(name)
    return covered, skipped


@register_evaluator("attack_unit_test", options=AttackUnitTestOptions, kind="attack", requires=("attacks",),
                    columns=(
    Column("unit_test_pass", "attack unit test: planted adversarials found (%)", ("suite_pass_rate",), fmt="pct",
           atol=0.1, rtol=0, section="detail", rank=RANK_DEEPFOOL + 2),
))
def attack_unit_test_evaluator(ctx: EvalContext, opts: AttackUnitTestOptions) -> dict:
    """Attack unit test (Zimmermann et al., NeurIPS 2022): share of planted, provably existing adversarials the suite's attacks find."""
    if "attacks" not in ctx.results:
        raise BenchError("attack_unit_test needs the attacks evaluator listed before it in evaluation.evaluators")
    started = time.perf_counter()
    attacks = ctx.results["attacks"]
    covered, skipped = _covered(attacks, opts)
    rows = _sample(ctx, attacks, opts)
    x_all, y_all = ctx.test_inputs()
    x, y = x_all[rows], y_all[rows]
    grid = attacks.get("eps", {})
    chosen = {"L2": opts.eps_l2, "Linf": opts.eps_linf}
    by_norm: dict[str, list[str]] = {}
    for name in covered:
        by_norm.setdefault(get_attack(name).norm, []).append(name)
    info = AttackInfo(num_classes=2, seed=int(attacks.get("seed", 0)), device=ctx.device)
    tests, per_attack, failures, skipped_overlap = {}, {}, [], {}
    n_found_total = n_tests_total = 0
    for norm, names in by_norm.items():
        eps = chosen[norm] if chosen[norm] is not None else (max(grid[norm]) if grid.get(norm) else None)
        if eps is None:
            continue
        if x.shape[0] == 0:   # no correctly classified input to plant near: not measured
            tests[norm] = {"eps": eps, "n_tests": 0, "suite_pass_rate": None, "attacks": names}
            continue
        with attack_guard(ctx.model):
            planted, idx, fails, xb = plant(ctx.model, x, y, eps, norm, opts, ctx.device)
        skipped_overlap[norm] = fails.pop()["skipped_overlapping"]
        failures += [{**f, "index": int(rows[f["index"]])} for f in fails]
        if planted is None:
            tests[norm] = {"eps": eps, "n_tests": 0, "suite_pass_rate": None, "attacks": names}
            continue
        xs = x[idx]
        with attack_guard(planted):
            ok = _verify_setup(planted, xs, xb, eps, norm, ctx.device, opts.batch_size)
        failures += [{"index": int(rows[idx[k]]), "norm": norm,
                      "reason": "the planted model does not classify the clean input clean and the boundary "
                                "point adversarial (float32 rounding)"} for k in (~ok).nonzero().squeeze(1).tolist()]
        xs, idx = xs[ok], idx[ok]
        m = int(idx.numel())
        if m == 0:
            tests[norm] = {"eps": eps, "n_tests": 0, "suite_pass_rate": None, "attacks": names}
            continue
        # rebuild on the verified inputs only, so the nearest-origin rule sees no dropped input
        keep = ok.nonzero().squeeze(1)
        planted = PlantedModel(ctx.model, planted.origins[keep], planted.w[keep], planted.b[keep],
                               planted.tau[keep], planted.alpha[keep], norm)
        labels = torch.full((m,), CLEAN, dtype=torch.long)
        targets = torch.arange(m)
        suite_found = torch.zeros(m, dtype=torch.bool)
        for name in names:
            spec = get_attack(name)
            settings = {**attacks["per_attack"][name].get("settings", {}), **opts.params.get(name, {})}
            settings.pop("eps", None)   # the test runs at its own ε, on all its inputs
            settings["max_inputs"] = None
            mopts = from_dict(spec.options, settings, f"attack_unit_test: {name}")
            t0 = time.perf_counter()
            adv = _run_method(spec, planted, xs, labels, targets, eps if spec.kind == "fixed_eps" else None,
                              mopts, info, opts.batch_size)
            v = verify_inputs(planted, xs, labels, adv, norm, eps, ctx.device, opts.batch_size)
            suite_found |= v.success
            per_attack[name] = {"norm": norm, "eps": eps, "kind": spec.kind, "n_tests": m,
                                "n_found": int(v.success.sum()), "pass_rate": float(v.success.double().mean()),
                                "wall_s": time.perf_counter() - t0}
        tests[norm] = {"eps": eps, "eps_key": eps_key(eps), "n_tests": m, "n_found": int(suite_found.sum()),
                       "suite_pass_rate": float(suite_found.double().mean()), "attacks": names,
                       "inputs": [int(rows[i]) for i in idx.tolist()],
                       "found": suite_found.tolist()}
        n_found_total += int(suite_found.sum())
        n_tests_total += m
    rate = n_found_total / n_tests_total if n_tests_total else None
    with torch.no_grad():
        width = int(features(ctx.model, x_all[:1].to(ctx.device)).shape[1])   # x may be empty
    return {
        "suite_pass_rate": rate, "threshold": opts.threshold,
        "passed": None if rate is None else bool(rate >= opts.threshold),
        "n_tests": n_tests_total, "n_found": n_found_total, "n_setup_failures": len(failures),
        "setup_failures": failures, "tests": tests, "per_attack": per_attack, "not_covered": skipped,
        "features": ("backbone features h" if hasattr(ctx.model, "forward_all") else "pixels") + f" ({width})",
        "n_inner": inner_count(opts.n_inner, width, x_all[0].numel()), "inner_radius": opts.inner_radius,
        "boundary_fraction": opts.boundary_fraction, "seed": opts.seed,
        "n_skipped_overlapping": skipped_overlap,
        "reference": "Zimmermann et al. 2022, binarization test; a planted adversarial within ε of each input",
        "wall_s": time.perf_counter() - started,
    }
