"""The metric evaluators the suites name: geometry, entropy, binarity, lipschitz,
misclassification, weight_spectra.

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
  ``cv_norm``, ``cv_abs``; and ``n``, ``d``, ``K``, ``grouping``; the collapse figures that
  hold when d < K − 1 (``bench.metrics.collapse``): ``cdnv``, ``nc1_pinv``,
  ``nc1_truncated``, ``nc1_ratio``, ``gnc2``, ``unc3``, ``effective_rank``,
  ``numerical_rank``, ``ncc_accuracy`` (train centres, true labels) and ``validity`` (which
  of them hold at this d and K).
* ``entropy.<split>``: ``entropy`` (nats), ``entropy_per_dim``, ``zero_knn_fraction``,
  ``floored_fraction``, ``floor``, ``k``, ``n`` (samples used) and ``n_total``; the exact
  k-NN search runs on the suite's ``runtime.num_threads`` (torch's default when unset).
* ``binarity.<split>`` (default train): ``gmm_score_mean``/``_min``/``_std``,
  ``sigma_mean``, ``peaks_dist_mean``/``_min``, ``n_constant_dims``, ``n_stopped_short``
  (dimensions where EM stopped below the single Gaussian, which is kept instead) and
  ``n_not_converged`` (EM hit ``max_iter``).
* ``lipschitz``: ``mean``, ``max``, ``median``, ``n_inputs`` over the attack subset.
* ``misclassification`` (test split): per score (``msp``, ``neg_entropy``,
  ``neg_centre_distance``) ``auroc`` and ``aurc`` of correct vs wrong predictions, with
  ``n``, ``n_errors``; None with a reason below 5 errors (``bench.metrics.misclassification``).
* ``weight_spectra``: per Linear/Conv layer (module name) the effective and numerical rank
  and the normalised singular values of its weight (``bench.metrics.rank``).
"""
from __future__ import annotations

import contextlib
import functools
import time
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from bench.core.errors import BenchError
from bench.evaluation.columns import RANK_GEOMETRY, Column
from bench.evaluation.hook import EvalContext, register_evaluator
from bench.metrics.binarity import BINARITY_KEYS, binarity
from bench.metrics.collapse import COLLAPSE_KEYS, collapse_metrics, moments_of
from bench.metrics.entropy import kl_entropy
from bench.metrics.geometry import GEOMETRY_KEYS, class_means, geometry, nearest_mean
from bench.metrics.inputs import as_labels, as_latents, check_splits, undefined
from bench.metrics.lipschitz import lipschitz_summary, margin_gradient_norms
from bench.metrics.misclassification import MIN_ERRORS, detection, softmax_scores
from bench.metrics.rank import RANK_RTOL, weight_spectra

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
    # valid when d < K − 1 too (bench.metrics.collapse): detail columns, and the report's
    # "Neural collapse at every width" section
    Column("cdnv", "CDNV", ("train", "cdnv"), atol=1e-9, section="detail", rank=RANK_GEOMETRY + 4),
    Column("nc1_ratio", "NC1 Tr Σ_W/Tr Σ_B", ("train", "nc1_ratio"), atol=1e-9, section="detail",
           rank=RANK_GEOMETRY + 4),
    Column("nc1_truncated", "NC1 truncated pinv", ("train", "nc1_truncated"), atol=1e-6, section="detail",
           rank=RANK_GEOMETRY + 4),
    Column("gnc2", "GNC2", ("train", "gnc2"), atol=1e-4, section="detail", rank=RANK_GEOMETRY + 4),
    Column("unc3", "UNC3", ("train", "unc3"), atol=1e-3, section="detail", rank=RANK_GEOMETRY + 4),
    Column("erank", "eff. rank (train)", ("train", "effective_rank"), atol=0.05, section="detail",
           rank=RANK_GEOMETRY + 4),
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
            values.update(_collapse_values(z, y, k, weight, train_means, opts.min_per_class))
        except BenchError as exc:
            values = {"grouping": "true labels", "split": split, **undefined(GEOMETRY_KEYS + COLLAPSE_KEYS, str(exc))}
        out[split] = values
    return out


def _collapse_values(z, y, k: int, weight, train_means, min_per_class: int) -> dict:
    """The collapse figures valid at any d (the geometry keys they share are not repeated)."""
    z = as_latents(z, "latents")
    y = as_labels(y, z.shape[0], "labels")
    values = collapse_metrics(moments_of(z, y, k), classifier_weight=weight, centres=train_means, x=z, y=y,
                              min_per_class=min_per_class)
    return {key: v for key, v in values.items()
            if key.split("_reason")[0] in COLLAPSE_KEYS or key in ("validity", "rank_rtol")}


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


# ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class MisclassificationOptions:
    """Settings of the ``misclassification`` evaluator."""

    split: Literal["test", "val"] = "test"
    min_errors: int = MIN_ERRORS            # fewer wrong (or correct) inputs: no AUROC/AURC, the count
    batch_size: int = 1000

    def __post_init__(self) -> None:
        if self.min_errors < 1 or self.batch_size < 1:
            raise ValueError("misclassification.min_errors and batch_size must be >= 1")


@register_evaluator("misclassification", options=MisclassificationOptions, kind="metric", columns=(
    Column("msp_auroc", "misclass. AUROC (MSP)", ("msp", "auroc"), atol=0.02, section="detail",
           rank=RANK_GEOMETRY + 8),
    Column("msp_aurc", "AURC (MSP)", ("msp", "aurc"), atol=0.005, section="detail", rank=RANK_GEOMETRY + 8),
    Column("entropy_auroc", "misclass. AUROC (−entropy)", ("neg_entropy", "auroc"), atol=0.02, section="detail",
           rank=RANK_GEOMETRY + 8),
    Column("entropy_aurc", "AURC (−entropy)", ("neg_entropy", "aurc"), atol=0.005, section="detail",
           rank=RANK_GEOMETRY + 8),
    Column("centre_auroc", "misclass. AUROC (−centre dist.)", ("neg_centre_distance", "auroc"), atol=0.02,
           section="detail", rank=RANK_GEOMETRY + 8),
    Column("centre_aurc", "AURC (−centre dist.)", ("neg_centre_distance", "aurc"), atol=0.005, section="detail",
           rank=RANK_GEOMETRY + 8),
    Column("n_errors", "test errors", ("n_errors",), fmt="count", atol=1, rtol=0, section="detail",
           rank=RANK_GEOMETRY + 8),
))
@_timed
def misclassification_evaluator(ctx: EvalContext, opts: MisclassificationOptions) -> dict:
    """Misclassification detection: AUROC and AURC of MSP, −entropy and −distance to the nearest train class mean."""
    x_all, y_all = ctx.data.split(opts.split)
    logits = []
    with torch.no_grad():
        for start in range(0, x_all.shape[0], opts.batch_size):
            xb = x_all[start:start + opts.batch_size].float() / ctx.data.pixel_scale
            logits.append(ctx.model(xb.to(ctx.device)).detach().double().cpu())
    logits_np = torch.cat(logits).numpy()
    y = y_all.numpy()
    correct = logits_np.argmax(axis=1) == y
    scores = softmax_scores(logits_np)
    reasons = {}
    try:
        k = _num_classes(ctx)
        z_train = as_latents(ctx.latents["train"], "train latents")
        means, _ = class_means(z_train, as_labels(ctx.labels["train"], z_train.shape[0], "train labels"), k)
        z = as_latents(ctx.latents[opts.split], f"{opts.split} latents")
        nearest = nearest_mean(z, means)            # blocked: no (N, K, d) array
        scores["neg_centre_distance"] = -np.linalg.norm(z - means[nearest], axis=1)
    except (BenchError, KeyError) as exc:
        reasons["neg_centre_distance"] = f"no latent centre distance: {exc}"
    out = detection(scores, correct, min_errors=opts.min_errors)
    for name, why in reasons.items():
        out[name] = {"auroc": None, "auroc_reason": why, "aurc": None, "aurc_reason": why}
    out.update(split=opts.split, latent=ctx.latent_name, positives="correct predictions",
               scores={"msp": "max softmax probability", "neg_entropy": "Σ p log p (nats)",
                       "neg_centre_distance": f"−min_c ‖{ctx.latent_name} − μ_c‖₂, μ_c train class means"})
    return out


# ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class WeightSpectraOptions:
    """Settings of the ``weight_spectra`` evaluator."""

    rank_rtol: float = RANK_RTOL
    max_values: int = 128                  # singular values stored per layer (the largest)

    def __post_init__(self) -> None:
        if not 0 < self.rank_rtol < 1 or self.max_values < 1:
            raise ValueError("weight_spectra.rank_rtol must be in (0, 1) and max_values >= 1")


@register_evaluator("weight_spectra", options=WeightSpectraOptions, kind="metric", columns=(
    Column("weight_erank:{0}", "weight eff. rank, {0}", ("layers", "*", "effective_rank"), atol=0.05,
           section="detail", rank=RANK_GEOMETRY + 9),
))
@_timed
def weight_spectra_evaluator(ctx: EvalContext, opts: WeightSpectraOptions) -> dict:
    """Singular-value spectra, effective and numerical rank of every Linear/Conv weight matrix."""
    return {"layers": weight_spectra(ctx.model, rtol=opts.rank_rtol, max_values=opts.max_values),
            "rank_rtol": opts.rank_rtol, "weights": "Linear (out, in); Conv (out, in·k·k)"}
