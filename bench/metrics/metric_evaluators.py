"""The metric evaluators the suites name: geometry, entropy, binarity, lipschitz.

Each one reads the latents the harness computed (``ctx.latents[split]``: z for plugins
with a penultimate layer, the backbone features h otherwise; ``ctx.latent_name`` says
which) and returns a JSON-able dict keyed by split. Bad data in one split (a class
missing, too few samples, a non-finite latent) never aborts the run's evaluation: that
split's values are ``None`` with a ``<key>_reason`` beside each. Bad *settings* are
errors when the suite loads (the option dataclasses check them).

Result keys (``result.json["evaluations"]``; every evaluator also records ``wall_s``):

* ``geometry.<split>`` (default splits train, test; the leaderboard's headline is train):
  ``R_mean``/``R_median`` — class separation ratio over samples, each split grouped by
  its true labels and measured against that split's own class means;
  ``n_on_own_mean`` — samples exactly on their own class mean (infinite R, left out of
  the averages); ``sigma_w_trace`` — Tr Σ_W, the mean squared distance to the class mean;
  ``sigma_w_mean_entry`` — mean of Σ_W's d² entries (the paper's table); ``sigma_b_trace``;
  ``nc1`` = Tr(Σ_W Σ_B⁺)/K and ``nc1_per_dim`` = nc1/d; ``nc2_equinorm``,
  ``nc2_equiangular``, ``nc2_max_angle``; ``nc3`` (self-duality with the classifier);
  ``nc4`` — disagreement of the nearest-*train*-class-mean rule with the network;
  ``cv_norm``, ``cv_abs``; and ``n``, ``d``, ``K``, ``grouping``.
* ``entropy.<split>``: ``entropy`` (nats), ``entropy_per_dim``, ``zero_knn_fraction``,
  ``floored_fraction``, ``floor``, ``k``, ``n`` (samples used) and ``n_total``; the exact
  k-NN search runs on the suite's ``runtime.num_threads`` (torch's default when unset).
* ``binarity.<split>`` (default train): ``gmm_score_mean``/``_min``/``_std``,
  ``sigma_mean``, ``peaks_dist_mean``/``_min``, ``n_constant_dims``, ``n_stopped_short``
  (dimensions where EM stopped below the single Gaussian, which is kept instead) and
  ``n_not_converged`` (EM hit ``max_iter``).
* ``lipschitz``: ``mean``, ``max``, ``median``, ``n_inputs`` over the attack subset.
"""
from __future__ import annotations

import contextlib
import functools
import time
from dataclasses import dataclass
from typing import Literal

import numpy as np

from bench.core.errors import BenchError
from bench.evaluation.columns import RANK_GEOMETRY, Column
from bench.evaluation.hook import EvalContext, register_evaluator
from bench.metrics.binarity import BINARITY_KEYS, binarity
from bench.metrics.entropy import kl_entropy
from bench.metrics.geometry import GEOMETRY_KEYS, class_means, geometry
from bench.metrics.inputs import as_labels, as_latents, check_splits, undefined
from bench.metrics.lipschitz import lipschitz_summary, margin_gradient_norms

ENTROPY_KEYS = ("entropy", "entropy_per_dim", "zero_knn_fraction", "floor")
LIPSCHITZ_KEYS = ("mean", "max", "median")


def _blas_threads(ctx: EvalContext):
    """Apply the suite's ``runtime.num_threads`` to numpy/scipy's BLAS too (the harness sets
    torch's). On a machine shared with other jobs, a multi-threaded BLAS can spin-wait
    for a descheduled thread and run 10–100× slower than one thread: set it to 1 there."""
    threads = _suite_threads(ctx)
    if not threads:
        return contextlib.nullcontext()
    from threadpoolctl import threadpool_limits
    return threadpool_limits(limits=threads)


def _suite_threads(ctx: EvalContext) -> int | None:
    """The suite's ``runtime.num_threads`` (None when unset: the libraries' defaults)."""
    return int(ctx.num_threads) if ctx.num_threads else None


def _timed(fn):
    """Run under the suite's thread setting; record the wall time as ``wall_s`` in the result."""
    @functools.wraps(fn)
    def wrapper(ctx, opts):
        t0 = time.perf_counter()
        with _blas_threads(ctx):
            out = fn(ctx, opts)
        out["wall_s"] = time.perf_counter() - t0
        return out
    return wrapper


def _num_classes(ctx: EvalContext) -> int:
    return int(ctx.num_classes if ctx.num_classes is not None else ctx.data.num_classes)


def _split_latents(ctx: EvalContext, split: str):
    if split not in ctx.latents or split not in ctx.labels:
        raise BenchError(f"no {split} latents were computed for this run")
    return ctx.latents[split], ctx.labels[split]


def _classifier_weight(ctx: EvalContext) -> tuple[np.ndarray | None, str]:
    """The final layer's (K, d) weight as it acts on the latent, for NC3."""
    if ctx.classifier_weight is None:
        return None, "the model has no classifier weight acting on the latent"
    w = ctx.classifier_weight.detach().double().cpu().numpy()
    if ctx.classifier_rows_normalised:
        # a cosine classifier uses only each row's direction: compare that with the means
        norms = np.linalg.norm(w, axis=1, keepdims=True)
        return np.divide(w, norms, out=np.zeros_like(w), where=norms > 0), "row-normalised weight (cosine classifier)"
    return w, "weight"


# ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class GeometryOptions:
    """Settings of the ``geometry`` evaluator."""

    splits: tuple[str, ...] = ("train", "test")
    min_per_class: int = 2        # fewer samples in a class: that split's values are None + reason

    def __post_init__(self) -> None:
        check_splits(self.splits, "geometry.splits")
        if self.min_per_class < 1:
            raise ValueError(f"geometry.min_per_class must be >= 1, got {self.min_per_class}")


@register_evaluator("geometry", options=GeometryOptions, kind="metric", columns=(
    Column("R", "R", ("train", "R_mean"), atol=0.01, section="geometry", rank=RANK_GEOMETRY),
    Column("sigma_w_trace", "Σ_W trace", ("train", "sigma_w_trace"), atol=1e-9, section="geometry", rank=RANK_GEOMETRY + 1),
    Column("sigma_w_mean_entry", "Σ_W mean entry", ("train", "sigma_w_mean_entry"), atol=1e-12, section="detail",
           rank=RANK_GEOMETRY + 1),
    Column("cv_norm", "CV ‖z‖", ("train", "cv_norm"), atol=1e-3, section="geometry", rank=RANK_GEOMETRY + 2),
    Column("cv_abs", "CV |z_ij|", ("train", "cv_abs"), atol=1e-3, section="detail", rank=RANK_GEOMETRY + 2),
    Column("nc1", "NC1", ("train", "nc1"), atol=1e-6, section="geometry", rank=RANK_GEOMETRY + 4),
))
@_timed
def geometry_evaluator(ctx: EvalContext, opts: GeometryOptions) -> dict:
    """Class separation R, Σ_W, Σ_B, neural collapse NC1–NC4, coefficients of variation (true-label groups)."""
    k = _num_classes(ctx)
    weight, weight_kind = _classifier_weight(ctx)
    out: dict = {"latent": ctx.latent_name, "grouping": "true labels", "headline_split": "train",
                 "nc3_classifier": weight_kind, "nc4": "fraction of samples where the nearest train "
                 "class mean disagrees with the network's prediction"}
    train_means, train_problem = None, None
    try:
        z, y = _split_latents(ctx, "train")
        z = as_latents(z, "train latents")
        train_means, _ = class_means(z, as_labels(y, z.shape[0], "train labels"), k)
    except BenchError as exc:
        train_problem = f"train class means unavailable: {exc}"
    for split in opts.splits:
        try:
            z, y = _split_latents(ctx, split)
            pred = ctx.predictions.get(split)
            values = geometry(z, y, k, classifier_weight=weight, predictions=pred,
                              ncc_means=train_means if split != "train" else None,
                              min_per_class=opts.min_per_class, split=split)
            if split != "train" and train_problem is not None:
                values.update(nc4=None, nc4_reason=train_problem)
                values.pop("nc4_means", None)
            if weight is None:
                values["nc3_reason"] = weight_kind
        except BenchError as exc:
            values = {"grouping": "true labels", "split": split, **undefined(GEOMETRY_KEYS, str(exc))}
        out[split] = values
    return out


def _per_split(ctx: EvalContext, splits, compute, keys, always: dict | None = None) -> dict:
    """``{"latent": …, split: compute(z, y)}``; a split whose data make the metric undefined
    gets every key as None with the reason, and the other splits are still computed."""
    out: dict = {"latent": ctx.latent_name}
    for split in splits:
        try:
            z, y = _split_latents(ctx, split)
            out[split] = compute(z, y)
        except BenchError as exc:
            out[split] = {**(always or {}), **undefined(keys, str(exc))}
    return out


# ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class EntropyOptions:
    """Settings of the ``entropy`` evaluator (Kozachenko–Leonenko)."""

    k: int = 20
    splits: tuple[str, ...] = ("train", "test")
    floor_rel: float = 1e-6                 # ρ_k floor, relative to the latents' RMS spread
    # seeded uniform subsample above this many samples: bounds the exact k-NN cost (N²d
    # when classes overlap), and on CIFAR gives train and test the same N (KL's bias
    # depends on N, so the two splits' H/d stay comparable)
    max_samples: int | None = 10000
    seed: int = 0

    def __post_init__(self) -> None:
        check_splits(self.splits, "entropy.splits")
        if self.k < 1:
            raise ValueError(f"entropy.k must be >= 1, got {self.k}")
        if not self.floor_rel > 0:
            raise ValueError(f"entropy.floor_rel must be > 0, got {self.floor_rel}")
        if self.max_samples is not None and self.max_samples <= self.k:
            raise ValueError(f"entropy.max_samples must exceed k = {self.k}, got {self.max_samples}")


@register_evaluator("entropy", options=EntropyOptions, kind="metric", columns=(
    Column("entropy_per_dim", "H/d (nats)", ("train", "entropy_per_dim"), atol=0.02, section="geometry", rank=RANK_GEOMETRY + 3),
    Column("zero_knn_fraction", "zero k-NN dist. (%)", ("train", "zero_knn_fraction"), fmt="pct", atol=0.01,
           rtol=0.0, section="detail", rank=RANK_GEOMETRY + 3),
))
@_timed
def entropy_evaluator(ctx: EvalContext, opts: EntropyOptions) -> dict:
    """Kozachenko–Leonenko k-NN entropy of the latents (nats, and per dimension), exact k-NN."""
    def compute(z, y):
        return kl_entropy(z, opts.k, groups=y.numpy() if hasattr(y, "numpy") else y,
                          floor_rel=opts.floor_rel, max_samples=opts.max_samples, seed=opts.seed,
                          threads=_suite_threads(ctx))
    return _per_split(ctx, opts.splits, compute, ENTROPY_KEYS, {"k": opts.k})


# ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class BinarityOptions:
    """Settings of the ``binarity`` evaluator (2-Gaussian mixture per latent dimension)."""

    splits: tuple[str, ...] = ("train",)
    max_samples: int | None = 5000          # mixture fitted on a seeded subsample; scored on all values
    seed: int = 0
    max_iter: int = 200
    tol: float = 1e-3
    backend: Literal["numpy", "sklearn"] = "numpy"   # same EM; numpy fits all dimensions at once

    def __post_init__(self) -> None:
        check_splits(self.splits, "binarity.splits")
        if self.max_samples is not None and self.max_samples < 4:
            raise ValueError(f"binarity.max_samples must be >= 4, got {self.max_samples}")
        if self.max_iter < 1 or not self.tol > 0:
            raise ValueError("binarity.max_iter must be >= 1 and binarity.tol > 0")


@register_evaluator("binarity", options=BinarityOptions, kind="metric", columns=(
    Column("gmm_score_mean", "binarity score", ("train", "gmm_score_mean"), atol=0.02, section="geometry", rank=RANK_GEOMETRY + 5),
    Column("gmm_score_min", "binarity score (min)", ("train", "gmm_score_min"), atol=0.02, section="detail",
           rank=RANK_GEOMETRY + 5),
    Column("sigma_mean", "GMM σ (mean)", ("train", "sigma_mean"), atol=1e-6, section="detail", rank=RANK_GEOMETRY + 5),
    Column("peaks_dist_mean", "peak distance", ("train", "peaks_dist_mean"), atol=0.05, section="detail",
           rank=RANK_GEOMETRY + 5),
    Column("peaks_dist_min", "peak distance (min)", ("train", "peaks_dist_min"), atol=0.05, section="detail",
           rank=RANK_GEOMETRY + 5),
))
@_timed
def binarity_evaluator(ctx: EvalContext, opts: BinarityOptions) -> dict:
    """Binary encoding: per-dimension 2-Gaussian mixture score, σ and peak distance (paper App. D)."""
    def compute(z, _labels):
        return binarity(z, max_samples=opts.max_samples, seed=opts.seed,
                        max_iter=opts.max_iter, tol=opts.tol, backend=opts.backend)
    return _per_split(ctx, opts.splits, compute, BINARITY_KEYS)


# ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class LipschitzOptions:
    """Settings of the ``lipschitz`` evaluator."""

    batch_size: int = 256
    max_inputs: int | None = None           # default: the whole attack subset

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError(f"lipschitz.batch_size must be >= 1, got {self.batch_size}")
        if self.max_inputs is not None and self.max_inputs < 1:
            raise ValueError(f"lipschitz.max_inputs must be >= 1, got {self.max_inputs}")


@register_evaluator("lipschitz", options=LipschitzOptions, kind="metric", columns=(
    Column("lipschitz_mean", "Lipschitz (mean)", ("mean",), atol=1e-3, section="detail", rank=RANK_GEOMETRY + 6),
))
@_timed
def lipschitz_evaluator(ctx: EvalContext, opts: LipschitzOptions) -> dict:
    """Local Lipschitz estimate: mean/max of ‖∇ₓ(f_y − max_{j≠y} f_j)‖₂ over the attack subset."""
    subset = ctx.subset if opts.max_inputs is None else ctx.subset[:opts.max_inputs]
    x, y = ctx.test_inputs(subset)
    try:
        norms = margin_gradient_norms(ctx.model, x, y, batch_size=opts.batch_size, device=ctx.device)
    except BenchError as exc:
        return {"n_inputs": int(x.shape[0]), **undefined(LIPSCHITZ_KEYS, str(exc))}
    return {**lipschitz_summary(norms), "inputs": "attack subset of the test split"}
