"""The ``layerwise`` evaluator: collapse, rank and nearest-centre accuracy at every layer, on
clean, adversarial and equal-norm noisy inputs.

Two claims are checked layer by layer (``bench.metrics.layers`` finds the layers: the
backbone's hidden layers, the latent z, the logits):

* Su et al. (TMLR 2024, "On the robustness of neural collapse and the neural collapse of
  robustness"): perturbed inputs leap between simplex vertices at the last layer, while
  earlier layers keep reliable simplices on perturbed data;
* Súkeník, Lampert & Mondelli (2024): multi-layer regularisation prefers representations of
  lower rank than neural collapse (a low-rank latent is what LPC builds).

Per layer and condition, from ``bench.metrics.collapse.collapse_metrics``: NC1 (pinv,
truncated, Tr Σ_W/Tr Σ_B), CDNV, GNC2, effective and numerical rank of the centred
features, and the nearest-class-centre accuracy against the *training* class means of that
layer (true labels). Conditions:

* ``train``: the whole training split, accumulated batch by batch (``ClassMoments``: one
  streaming pass, O(K·d + d²) memory whatever the split's size; no subsample);
* ``clean``: the evaluation inputs some attack flipped (best-known), unperturbed;
* ``best_known``: the same inputs at their best-known (smallest verified L2) adversarial;
* ``best_known_noise``: the same inputs plus Gaussian-direction noise of the same per-input
  L2 norm (``bench.attacks.collapse.noise_like``), the baseline a perturbation of that size
  sets without an adversary.

Summary: ``first_leave`` (per condition, clean included as the reference: ``layer``, ``depth`` from 1, ``from_end``
with 1 = the logits) is the first layer, in depth order, where
the nearest-training-centre accuracy falls below ½ (most perturbed inputs sit nearer another
class's centre than their own); None with the reason when no layer does. ``erank_latent``
is the effective rank of the latent (z, or h without one) on the training split.

Cost: on digits (MLP 64-256-256, 1,151 training images, 359 attacked inputs) 0.14 s a run.
The training pass at CIFAR scale (``benchmarks/bench_layerwise.py``: 50,000 features, K = 10,
batches of 500) takes 0.09 / 0.25 / 0.9 / 2.4 s at d = 64 / 128 / 256 / 512 in ≤ 2 MiB of
accumulators, 0.8–2.7× the one-pass time on the whole (N, d) matrix (up to 195 MiB), with
NC1, CDNV and effective rank equal to 1e-15; the network's forward passes are extra.

Needs ``best_known`` earlier in the session (its adversarial inputs are handed over in memory).
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from bench.attacks.collapse import noise_like
from bench.core.errors import BenchError
from bench.evaluation.columns import RANK_GEOMETRY, Column
from bench.evaluation.hook import EvalContext, register_evaluator
from bench.metrics.collapse import ClassMoments, collapse_metrics, moments_of
from bench.metrics.layers import hidden_layers, layer_batches, layer_features
from bench.metrics.rank import RANK_RTOL

LEAVE_BELOW = 0.5
PERTURBED = ("clean", "best_known", "best_known_noise")   # clean: the reference (a saturated
# network's logits can fail the nearest-centre rule even on clean inputs)


@dataclass(frozen=True)
class LayerwiseOptions:
    batch_size: int = 500
    noise_seed: int = 0
    rank_rtol: float = RANK_RTOL           # numerical rank: singular values above rtol × the largest

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError(f"layerwise.batch_size must be >= 1, got {self.batch_size}")
        if not 0 < self.rank_rtol < 1:
            raise ValueError(f"layerwise.rank_rtol must be in (0, 1), got {self.rank_rtol}")


def num_classes_of(ctx: EvalContext) -> int:
    k = getattr(ctx, "num_classes", None) or getattr(getattr(ctx.model, "head", None), "num_classes", None)
    return int(k if k is not None else ctx.data.num_classes)


def classifier_weight_of(ctx: EvalContext) -> np.ndarray | None:
    """The (K, d) weight acting on the latent: the context's (when it carries one), else the head's."""
    weight = getattr(ctx, "classifier_weight", None)
    if weight is None:
        weight = getattr(getattr(getattr(ctx.model, "head", None), "classifier", None), "weight", None)
    return weight.detach().double().cpu().numpy() if isinstance(weight, torch.Tensor) else weight


def first_leave(per_layer: dict[str, dict], order: list[str]) -> tuple[str | None, int | None, str | None]:
    """(layer, 1-based depth, reason if none) of the first layer with NCC accuracy < LEAVE_BELOW."""
    for depth, name in enumerate(order, 1):
        acc = per_layer.get(name, {}).get("ncc_accuracy")
        if acc is not None and acc < LEAVE_BELOW:
            return name, depth, None
    return None, None, (f"the nearest-training-centre accuracy stays ≥ {LEAVE_BELOW:g} at every layer "
                        f"(the perturbed inputs stay nearest their own class centre)")


@register_evaluator("layerwise", options=LayerwiseOptions, kind="attack", requires=("best_known",), columns=(
    # detail columns: the report's "Layer by layer" section shows them (the main table is wide already)
    Column("erank_latent", "eff. rank of latent", ("erank_latent",), atol=0.05, section="detail",
           rank=RANK_GEOMETRY + 7),
    Column("first_leave_depth", "layer adversarials leave centre", ("first_leave", "best_known", "depth"),
           fmt="count", atol=0.5, rtol=0, section="detail", rank=RANK_GEOMETRY + 7),
    Column("first_leave_from_end", "adversarials leave centre, layers from the end",
           ("first_leave", "best_known", "from_end"), fmt="count", atol=0.5, rtol=0, section="detail",
           rank=RANK_GEOMETRY + 7),
    Column("clean_leave_from_end", "clean inputs leave centre, layers from the end",
           ("first_leave", "clean", "from_end"), fmt="count", atol=0.5, rtol=0, section="detail",
           rank=RANK_GEOMETRY + 7),
    Column("noise_leave_from_end", "noise leaves centre, layers from the end",
           ("first_leave", "best_known_noise", "from_end"), fmt="count", atol=0.5, rtol=0, section="detail",
           rank=RANK_GEOMETRY + 7),
    Column("erank:{0}", "eff. rank, {0} (train)", ("conditions", "train", "*", "effective_rank"), atol=0.05,
           section="detail", rank=RANK_GEOMETRY + 7),
    Column("ncc_adv:{0}", "NCC acc., {0}, at r_best (%)", ("conditions", "best_known", "*", "ncc_accuracy"),
           fmt="pct", atol=0.02, rtol=0, section="detail", rank=RANK_GEOMETRY + 7),
    Column("ncc_noise:{0}", "NCC acc., {0}, equal-norm noise (%)",
           ("conditions", "best_known_noise", "*", "ncc_accuracy"), fmt="pct", atol=0.02, rtol=0,
           section="detail", rank=RANK_GEOMETRY + 7),
    Column("cdnv_layer:{0}", "CDNV, {0} (train)", ("conditions", "train", "*", "cdnv"), atol=1e-6,
           section="detail", rank=RANK_GEOMETRY + 7),
))
def layerwise_evaluator(ctx: EvalContext, opts: LayerwiseOptions) -> dict:
    """NC1, CDNV, GNC2, effective rank and nearest-centre accuracy per layer: train, clean, r_best, equal-norm noise."""
    t0 = time.perf_counter()
    best = ctx.artifacts.get("best_known")
    if best is None or "best_known" not in ctx.results:
        raise BenchError("layerwise needs the adversarial inputs of this session's best_known evaluator: "
                         "list deepfool, attacks and best_known before it")
    k = num_classes_of(ctx)
    weight = classifier_weight_of(ctx)
    layers = hidden_layers(ctx.model)

    # training split: one streaming pass, per-layer moments
    x_train = ctx.data.train_x
    moments: dict[str, ClassMoments] = {}
    order: list[str] = []
    y_train = ctx.data.train_y
    for start, batch in zip(range(0, x_train.shape[0], opts.batch_size),
                            layer_batches(ctx.model, _Scaled(x_train, ctx.data.pixel_scale), device=ctx.device,
                                          batch_size=opts.batch_size, layers=layers)):
        yb = y_train[start:start + opts.batch_size]
        for name, feats in batch.items():
            if name not in moments:
                moments[name] = ClassMoments(k, feats.shape[1])
                order.append(name)
            moments[name].add(feats, yb)
    latent_layer = "z" if "z" in moments else (layers[-1][0] if layers else "logits")

    def weight_for(name: str):
        return weight if name == latent_layer else None

    conditions: dict[str, dict] = {"train": {}}
    for name, acc in moments.items():
        values = collapse_metrics(acc, classifier_weight=weight_for(name), rtol=opts.rank_rtol)
        values["ncc_accuracy_reason"] = "the training split defines the centres: NCC accuracy is taken on the others"
        conditions["train"][name] = values
    centres = {name: acc.means for name, acc in moments.items()}

    n = int(ctx.results["best_known"]["n_inputs"])
    x, y = ctx.test_inputs()
    x, y = x[:n], y[:n]
    rows = best["flipped"][:n].nonzero().squeeze(1)
    gen = torch.Generator().manual_seed(opts.noise_seed)
    inputs = {"clean": x[rows], "best_known": best["adv"][:n][rows]}
    inputs["best_known_noise"] = noise_like(x[rows], best["norm"][:n][rows], "L2", gen)
    labels = y[rows].numpy()
    for cond, xc in inputs.items():
        per_layer: dict[str, dict] = {}
        if xc.shape[0] == 0:
            conditions[cond] = {"n": 0, "reason": "no input was flipped by any attack"}
            continue
        feats = layer_features(ctx.model, xc, device=ctx.device, batch_size=opts.batch_size)
        for name in order:
            f = feats[name].numpy()
            per_layer[name] = collapse_metrics(moments_of(f, labels, k), classifier_weight=weight_for(name),
                                               centres=centres[name], x=f, y=labels, rtol=opts.rank_rtol)
        conditions[cond] = per_layer

    leave = {}
    for cond in PERTURBED:
        per_layer = conditions.get(cond, {})
        if "reason" in per_layer:
            name, depth, reason = None, None, per_layer["reason"]
        else:
            name, depth, reason = first_leave(per_layer, order)
        leave[cond] = {"layer": name, "depth": depth,
                       "from_end": None if depth is None else len(order) - depth + 1,   # 1 = the logits
                       **({"reason": reason} if reason else {})}
    erank = conditions["train"].get(latent_layer, {}).get("effective_rank")
    return {"layers": order, "latent_layer": latent_layer, "n_inputs": int(rows.numel()), "K": k,
            "erank_latent": erank, "first_leave": leave, "leave_below": LEAVE_BELOW,
            "features": "conv maps averaged over space; the training split in one streaming pass (all of it)",
            "centres": "training-split class means of each layer (true labels)", "noise_seed": opts.noise_seed,
            "conditions": conditions, "wall_s": time.perf_counter() - t0}


class _Scaled:
    """uint8 (or float) inputs read batch by batch as float32 in [0, 1] (no full float copy)."""

    def __init__(self, x: torch.Tensor, scale: float) -> None:
        self.x, self.scale, self.shape = x, scale, x.shape

    def __getitem__(self, index) -> torch.Tensor:
        return self.x[index].float() / self.scale
