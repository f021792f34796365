"""The ``attack_collapse`` evaluator: what attacks do to the collapsed latent geometry.

Su et al. (TMLR 2024, "On the robustness of neural collapse and the neural collapse of
robustness") found that the collapsed simplex of class means vanishes under small attacks:
perturbed latents "leap" from their own class vertex to another. Here, with μ_c the
*clean* training-split class means (true labels) and z(x') the latent of a perturbed input:

    leap_share = share of inputs whose z(x') is nearer (L2) another class's μ_c than its own
    R_i        = min_{c≠y} ‖z_i − μ_c‖ / ‖z_i − μ_y‖      (paper eq. 8, against the clean means)
    NC1        = Tr(Σ_W Σ_B⁺)/K, Σ_W of the perturbed latents about the clean means, Σ_B of the clean means
    shift      = median ‖z(x') − z(x)‖ / median distance from μ_y to the nearest other μ_c

under these conditions, on the correct inputs of the attack subset:

* ``clean``: the unperturbed inputs (the reference);
* ``best_known``: each input's adversarial at its best-known perturbation (inputs some
  attack flipped), and ``best_known_noise``: uniform-direction Gaussian noise of the same
  per-input L2 norm (after clipping to [0, 1], rescaled up to 10 times to keep the norm);
* ``<norm>@<ε>`` for one ε per norm (default: the grid's middle value): the first verified
  adversarial within ε, or for an input no attack broke the last attempt within ε that moved
  it (PGD's final iterate, say: APGD and AutoAttack return the clean input where they fail);
  and ``<norm>@<ε>_noise``: random noise of the same per-input size (L2: Gaussian direction;
  L∞: random signs, a corner of the ball).

Needs ``best_known`` (and so ``deepfool`` and ``attacks``) earlier in the same session: the
adversarial inputs are handed over in memory, never stored.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from bench.evaluation.inference import outputs
from bench.attacks.library import parse_budget
from bench.attacks.methods import eps_key
from bench.attacks.outcomes import MISCLASSIFIED, canonical_all
from bench.core.errors import BenchError
from bench.evaluation.columns import Column
from bench.evaluation.hook import EvalContext, register_evaluator
from bench.metrics.geometry import (between_class_covariance, class_means, nc1, nearest_mean, separation_ratios,
                                    within_class_covariance)

NOISE_RESCALES = 10


@dataclass(frozen=True)
class CollapseOptions:
    eps_l2: float | str | None = None      # the fixed L2 ε (one of the grid; None: its middle value)
    eps_linf: float | str | None = None    # the fixed L∞ ε (likewise)
    noise_seed: int = 0
    batch_size: int = 500

    def __post_init__(self) -> None:
        for name in ("eps_l2", "eps_linf"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, parse_budget(value))
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")


def leap_share(z: np.ndarray, y: np.ndarray, means: np.ndarray) -> float | None:
    """Share of latents nearer (L2) to another class's mean than to their own class's."""
    if z.shape[0] == 0:
        return None
    return float(np.mean(nearest_mean(z, means) != y))


def latent_statistics(z: np.ndarray, y: np.ndarray, pred: np.ndarray, means: np.ndarray, global_mean: np.ndarray,
                      z_clean: np.ndarray | None = None) -> dict:
    """The collapse numbers of one condition (see the module docstring); None where undefined."""
    n, k = z.shape[0], means.shape[0]
    out: dict = {"n": int(n)}
    if n == 0:
        return {**out, "leap_share": None, "flip_share": None, "leap_to_prediction": None,
                "R_mean": None, "R_median": None, "nc1": None}
    nearest = nearest_mean(z, means)
    leaps = nearest != y
    out["leap_share"] = float(leaps.mean())
    out["flip_share"] = float(np.mean(pred != y))
    # of the leaps, how many land at the class the model now predicts
    out["leap_to_prediction"] = float(np.mean(nearest[leaps] == pred[leaps])) if leaps.any() else None
    ratio, on_own = separation_ratios(z, y, means)
    finite = ratio[~on_own]
    out["R_mean"] = float(finite.mean()) if finite.size else None
    out["R_median"] = float(np.median(finite)) if finite.size else None
    sigma_b = between_class_covariance(means, global_mean)
    out["nc1"] = nc1(within_class_covariance(z, y, means), sigma_b, k) if np.trace(sigma_b) > 0 else None
    if z_clean is not None:
        own = means[y]
        other = means[nearest_mean(own, means, exclude=y)]
        gap = float(np.median(np.linalg.norm(own - other, axis=1)))
        moved = float(np.median(np.linalg.norm(z - z_clean, axis=1)))
        out["shift"] = moved / gap if gap > 0 else None
    return out


def noise_like(x: torch.Tensor, size: torch.Tensor, norm: str, generator: torch.Generator) -> torch.Tensor:
    """x + random noise of per-input ``size`` in ``norm``, clipped to [0, 1] (L2: rescaled after clipping)."""
    shape = (-1,) + (1,) * (x.dim() - 1)
    size = size.to(torch.float64)
    if norm == "Linf":
        signs = torch.randint(0, 2, x.shape, generator=generator, dtype=torch.int64) * 2 - 1
        return (x.double() + signs * size.view(shape)).clamp(0, 1).to(x.dtype)
    direction = torch.randn(x.shape, generator=generator, dtype=torch.float64)
    delta = direction / direction.flatten(1).norm(dim=1).clamp_min(1e-30).view(shape) * size.view(shape)
    xd = x.double()
    for _ in range(NOISE_RESCALES):
        delta = (xd + delta).clamp(0, 1) - xd
        got = delta.flatten(1).norm(dim=1)
        scale = torch.where(got > 0, size / got.clamp_min(1e-30), torch.ones_like(got))
        if bool((scale < 1 + 1e-6).all()):
            break
        delta = delta * scale.view(shape)
    return (xd + delta).clamp(0, 1).to(x.dtype)


def _latents(model, x: torch.Tensor, device: torch.device, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    if x.shape[0] == 0:
        return np.zeros((0, 0)), np.zeros(0, dtype=np.int64)
    logits, z = outputs(model, x, device=device, batch_size=batch_size, latents=True)
    return z.double().numpy(), logits.argmax(1).numpy()


def _pick_eps(grid: list[float], wanted: float | None, norm: str) -> float:
    if wanted is None:
        return sorted(grid)[len(grid) // 2]
    for eps in grid:
        if math.isclose(eps, wanted, rel_tol=1e-9):
            return eps
    raise BenchError(f"attack_collapse.eps_{norm.lower()} = {wanted:g} is not in the attacks evaluator's "
                     f"{norm} grid {[round(e, 6) for e in grid]}")


@register_evaluator("attack_collapse", options=CollapseOptions, kind="attack", requires=("best_known",), columns=(
    Column("leap_share", "latent leaps at r_best (%)", ("leap_share",), fmt="pct", atol=0.02, rtol=0,
           section="collapse"),
    Column("leap_share_noise", "latent leaps, equal-norm noise (%)", ("leap_share_noise",), fmt="pct", atol=0.02,
           rtol=0, section="collapse"),
    Column("R_attacked", "R at r_best", ("R_mean",), atol=0.01, section="detail"),
    Column("R_noise", "R, equal-norm noise", ("R_mean_noise",), atol=0.01, section="detail"),
    Column("nc1_attacked", "NC1 at r_best", ("nc1",), atol=1e-4, section="detail"),
))
def attack_collapse_evaluator(ctx: EvalContext, opts: CollapseOptions) -> dict:
    """Latent leaps, R and NC1 of adversarial latents against the clean class means, and under equal-norm noise."""
    best = ctx.artifacts.get("best_known")
    attacks = ctx.artifacts.get("attacks")
    if best is None or attacks is None or "best_known" not in ctx.results:
        raise BenchError("attack_collapse needs the adversarial inputs of this session's deepfool, attacks and "
                         "best_known evaluators: list them before it (bench attack runs them together)")
    if not hasattr(ctx.model, "forward_all"):
        raise BenchError("attack_collapse needs a model with forward_all (latents and logits)")
    known = ctx.results["best_known"]
    k = int(ctx.results["attacks"]["num_classes"])
    z_train = ctx.latents["train"].double().numpy()
    means, _ = class_means(z_train, ctx.labels["train"].numpy(), k)
    global_mean = z_train.mean(axis=0)
    n = known["n_inputs"]
    x, y = ctx.test_inputs()
    x, y = x[:n], y[:n]
    status = canonical_all(known["per_input"]["status"])
    correct = torch.tensor([s != MISCLASSIFIED for s in status])
    gen = torch.Generator().manual_seed(opts.noise_seed)

    def stats(inputs: torch.Tensor, rows: torch.Tensor, clean: np.ndarray | None) -> dict:
        z, pred = _latents(ctx.model, inputs[rows], ctx.device, opts.batch_size)
        labels = y[rows].numpy()
        return latent_statistics(z, labels, pred, means, global_mean, None if clean is None else clean)

    rows_correct = correct.nonzero().squeeze(1)
    z_clean_all, _ = _latents(ctx.model, x, ctx.device, opts.batch_size)
    conditions = {"clean": stats(x, rows_correct, None)}

    flipped = best["flipped"][:n]
    rows = flipped.nonzero().squeeze(1)
    size = best["norm"][:n][rows]
    conditions["best_known"] = stats(best["adv"][:n], rows, z_clean_all[rows.numpy()])
    noisy = x.clone()
    noisy[rows] = noise_like(x[rows], size, "L2", gen)
    conditions["best_known_noise"] = stats(noisy, rows, z_clean_all[rows.numpy()])
    conditions["best_known_noise"]["norm_ratio"] = _ratio(noisy[rows] - x[rows], size, "L2")

    chosen = {}
    grids = ctx.results["attacks"].get("eps", {})
    for norm, grid in grids.items():
        wanted = opts.eps_l2 if norm == "L2" else opts.eps_linf
        eps = _pick_eps(list(grid), wanted, norm)
        points = attacks["points"][(norm, eps)][:n]
        found = attacks["point_found"][(norm, eps)][:n]
        name = f"{norm}@{eps_key(eps)}"
        chosen[norm] = eps
        cond = stats(points, rows_correct, z_clean_all[rows_correct.numpy()])
        cond["n_adversarial"] = int(found[rows_correct].sum())
        conditions[name] = cond
        delta = (points[rows_correct] - x[rows_correct]).flatten(1).double()
        size_eps = delta.norm(dim=1) if norm == "L2" else delta.abs().amax(1)
        noisy = x.clone()
        noisy[rows_correct] = noise_like(x[rows_correct], size_eps, norm, gen)
        conditions[f"{name}_noise"] = stats(noisy, rows_correct, z_clean_all[rows_correct.numpy()])
        conditions[f"{name}_noise"]["norm_ratio"] = _ratio(noisy[rows_correct] - x[rows_correct], size_eps, norm)

    top = conditions["best_known"]
    noise = conditions["best_known_noise"]
    return {
        "leap_share": top["leap_share"], "leap_share_noise": noise["leap_share"],
        "R_mean": top["R_mean"], "R_mean_noise": noise["R_mean"], "R_mean_clean": conditions["clean"]["R_mean"],
        "nc1": top["nc1"], "nc1_noise": noise["nc1"], "nc1_clean": conditions["clean"]["nc1"],
        "eps": {norm: eps for norm, eps in chosen.items()},
        "means": "clean training-split class means (true labels)", "latent": ctx.latent_name,
        "noise_seed": opts.noise_seed, "conditions": conditions,
    }


def _ratio(delta: torch.Tensor, size: torch.Tensor, norm: str) -> float | None:
    """Mean achieved/target size of the noise (clipping to [0, 1] can shrink it)."""
    d = delta.flatten(1).double()
    got = d.norm(dim=1) if norm == "L2" else d.abs().amax(1)
    keep = size > 0
    return float((got[keep] / size[keep].double()).mean()) if bool(keep.any()) else None
