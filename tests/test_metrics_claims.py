"""Issue 21's metrics, each against an independent oracle: misclassification AUROC (scikit-learn)
and AURC (a naive loop over coverages and tie orders); CDNV, the NC1 forms and GNC2 in
closed form on constructed features; effective rank of known spectra; the layer-wise
evaluator's latent NC1 against the geometry evaluator's."""
from __future__ import annotations

import dataclasses
import itertools
import json
import math

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from bench.core.errors import BenchError
from bench.evaluation.hook import EvalContext
from bench.metrics.collapse import ClassMoments, cdnv, collapse_metrics, gnc2, moments_of, nc1_truncated, validity
from bench.metrics.geometry import geometry, within_class_covariance
from bench.metrics.layers import hidden_layers, layer_features
from bench.metrics.misclassification import aurc, auroc, detection, softmax_scores
from bench.metrics.rank import effective_rank, numerical_rank, weight_spectra


def make_context(**fields) -> EvalContext:
    """An EvalContext with whichever of suite/run the current dataclass still has (issue 20 drops them)."""
    names = {f.name for f in dataclasses.fields(EvalContext)}
    base = {"suite": None, "run": None}
    return EvalContext(**{k: v for k, v in base.items() if k in names}, **fields)


# ------------------------------------------------------------------ misclassification

def test_auroc_matches_sklearn_with_ties():
    rng = np.random.default_rng(0)
    for _ in range(5):
        scores = np.round(rng.normal(size=200), 1)            # many ties
        correct = rng.random(200) < 0.8
        assert auroc(scores, correct) == pytest.approx(roc_auc_score(correct, scores), abs=1e-12)


def _naive_aurc(scores, correct):
    """Mean over all orders of the tied inputs of (1/N) Σ_k risk(top k), by brute force."""
    scores, errors = np.asarray(scores), ~np.asarray(correct)
    values = []
    groups = [list(np.flatnonzero(scores == s)) for s in sorted(set(scores.tolist()), reverse=True)]
    for orders in itertools.product(*(itertools.permutations(g) for g in groups)):
        order = [i for g in orders for i in g]
        total = 0.0
        for k in range(1, len(order) + 1):
            total += sum(errors[i] for i in order[:k]) / k
        values.append(total / len(order))
    return float(np.mean(values))


def test_aurc_matches_a_naive_loop():
    rng = np.random.default_rng(1)
    scores = rng.normal(size=40)
    correct = rng.random(40) < 0.7
    assert aurc(scores, correct) == pytest.approx(_naive_aurc(scores, correct), abs=1e-12)
    tied = np.array([0.9, 0.5, 0.5, 0.5, 0.2, 0.2, 0.1, 0.9])
    ok = np.array([True, False, True, True, False, True, False, True])
    assert aurc(tied, ok) == pytest.approx(_naive_aurc(tied, ok), abs=1e-12)
    # a perfect ranking's AURC: the errors come last
    assert aurc(np.arange(10.0), np.arange(10) >= 3) == pytest.approx(
        np.mean([max(0, 3 - (10 - k)) / k for k in range(1, 11)]))


def test_softmax_scores_and_too_few_errors():
    logits = np.array([[2.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    s = softmax_scores(logits)
    p = np.exp(2) / (np.exp(2) + 2)
    assert s["msp"][0] == pytest.approx(p) and s["msp"][1] == pytest.approx(1 / 3)
    assert s["neg_entropy"][1] == pytest.approx(-math.log(3))
    correct = np.array([True] * 50 + [False] * 4)
    out = detection({"msp": np.linspace(0, 1, 54)}, correct)
    assert out["n_errors"] == 4 and out["msp"]["auroc"] is None and "only 4" in out["msp"]["auroc_reason"]
    json.dumps(out)


# ------------------------------------------------------------------ collapse figures, closed forms

def _simplex(k: int) -> np.ndarray:
    """K unit vectors of a simplex ETF in K − 1 dimensions."""
    m = np.eye(k) - 1.0 / k
    u, s, _ = np.linalg.svd(m)
    pts = u[:, :k - 1] * s[:k - 1]
    return pts / np.linalg.norm(pts, axis=1, keepdims=True)


def _clouds(centres: np.ndarray, spread) -> tuple[np.ndarray, np.ndarray]:
    """Per class 2d samples centre ± s_c·e_j: class mean exactly the centre, σ_c² = s_c², Σ_W = mean s_c²/d · I."""
    k, d = centres.shape
    spread = np.broadcast_to(np.asarray(spread, dtype=np.float64), (k,))
    x, y = [], []
    for c in range(k):
        for j in range(d):
            for sign in (1.0, -1.0):
                x.append(centres[c] + sign * spread[c] * np.eye(d)[j])
                y.append(c)
    return np.array(x), np.array(y)


def test_perfect_simplex_closed_forms():
    k, s = 5, 0.1
    centres = _simplex(k)
    x, y = _clouds(centres, s)
    out = collapse_metrics(moments_of(x, y, k), classifier_weight=centres, centres=centres, x=x, y=y)
    d = k - 1
    dist2 = 2.0 * k / (k - 1)                           # squared distance between ETF vertices
    assert out["cdnv"] == pytest.approx(s ** 2 / dist2, rel=1e-10)
    assert out["nc1_ratio"] == pytest.approx(s ** 2, rel=1e-10)       # Tr Σ_B = 1 for unit vertices
    assert out["nc1_pinv"] == pytest.approx((s ** 2 / d) * (k - 1) * (k - 1) / k, rel=1e-8)
    assert out["nc1_truncated"] == pytest.approx(out["nc1_pinv"], rel=1e-8)
    assert out["gnc2"] == pytest.approx(0.0, abs=1e-12)               # every pair equally far
    assert out["unc3"] == pytest.approx(0.0, abs=1e-12)               # classifier = class means
    assert out["ncc_accuracy"] == 1.0
    assert "d = 4 ≥ K − 1 = 4" in out["validity"]
    collapsed = collapse_metrics(moments_of(*_clouds(centres, 0.0), k))
    for key in ("cdnv", "nc1_ratio", "nc1_pinv"):                    # zero up to the means' rounding
        assert collapsed[key] == pytest.approx(0.0, abs=1e-28)


def test_points_on_a_circle_d_below_k_minus_1():
    k, s = 6, 0.05                                       # d = 2 < K − 1 = 5
    angles = 2 * np.pi * np.arange(k) / k
    centres = np.stack([np.cos(angles), np.sin(angles)], axis=1)
    x, y = _clouds(centres, s)
    out = collapse_metrics(moments_of(x, y, k))
    pairs = [(i, j) for i in range(k) for j in range(i + 1, k)]
    chord = np.array([2 * np.sin(np.pi * (j - i) / k) for i, j in pairs])
    assert out["gnc2"] == pytest.approx(float(np.var(chord)), rel=1e-10)
    assert out["cdnv"] == pytest.approx(float(np.mean(2 * s ** 2 / (2 * chord ** 2))), rel=1e-10)
    # Σ_B = I/2 on the circle, Σ_W = s²/2 · I: Tr(Σ_W Σ_B⁻¹)/K = 2 s²/K
    assert out["nc1_pinv"] == pytest.approx(2 * s ** 2 / k, rel=1e-8)
    assert out["nc1_truncated"] == pytest.approx(2 * s ** 2 / k, rel=1e-8)
    assert out["nc1_ratio"] == pytest.approx(s ** 2, rel=1e-10)
    assert "d = 2 < K − 1 = 5" in out["validity"] and "CDNV" in validity(2, 6)


def test_one_collapsed_class():
    k, s = 4, 0.2
    centres = _simplex(k)
    spread = np.array([0.0, s, s, s])                   # class 0 collapsed to one point
    x, y = _clouds(centres, spread)
    out = collapse_metrics(moments_of(x, y, k))
    dist2 = 2.0 * k / (k - 1)
    # (K − 1) pairs with the collapsed class: s²/(2D²); C(K − 1, 2) others: s²/D²
    expected = ((k - 1) * s ** 2 / (2 * dist2) + (k - 1) * (k - 2) / 2 * s ** 2 / dist2) / (k * (k - 1) / 2)
    assert out["cdnv"] == pytest.approx(expected, rel=1e-10)
    assert out["nc1_ratio"] == pytest.approx(3 * s ** 2 / 4, rel=1e-10)


def test_truncated_pinv_drops_directions_beyond_k_minus_1():
    sigma_b = np.diag([2.0, 1.0, 1e-20])                # K = 3: at most 2 directions
    sigma_w = np.eye(3)
    assert nc1_truncated(sigma_w, sigma_b, 3) == pytest.approx((1 / 2 + 1) / 3)


def test_streaming_moments_equal_one_pass_and_keep_collapsed_digits():
    rng = np.random.default_rng(3)
    k, d = 4, 6
    y = rng.integers(0, k, 500)
    x = rng.normal(size=(500, d)) * 1e-7 + 1e3 + np.arange(k)[y, None]     # tiny spread, huge offset
    whole = moments_of(x, y, k)
    parts = ClassMoments(k, d)
    for start in range(0, 500, 37):
        parts.add(x[start:start + 37], y[start:start + 37])
    means = np.stack([x[y == c].mean(axis=0) for c in range(k)])
    direct = within_class_covariance(x, y, means)
    # both sides carry the 1e3 offset's rounding (≈ 1e-13 per coordinate, i.e. 1e-6 of the spread);
    # raw moments E[xxᵀ] − μμᵀ would lose everything here (errors ≈ 1e6 · 2e-16 ≫ Σ_W ≈ 1e-14)
    scale = np.trace(direct) / d
    np.testing.assert_allclose(parts.sigma_w(), direct, rtol=0, atol=1e-4 * scale)
    np.testing.assert_allclose(whole.sigma_w(), direct, rtol=0, atol=1e-4 * scale)
    np.testing.assert_allclose(parts.means, means, rtol=0, atol=1e-9)


def test_bad_inputs_give_reasons_never_nan():
    x = np.array([[0.0, 1.0], [1.0, 0.0], [np.nan, 0.0], [1.0, 1.0]])
    y = np.array([0, 1, 1, 1])
    out = collapse_metrics(moments_of(x, y, 2))          # class 0: a single sample
    assert out["cdnv"] is None and "1 finite sample" in out["cdnv_reason"] and out["n_nonfinite"] == 1
    same = collapse_metrics(moments_of(np.ones((6, 3)), np.array([0, 0, 0, 1, 1, 1]), 2))   # zero variance
    assert same["cdnv"] is None and "coincide" in same["cdnv_reason"]
    assert same["nc1_ratio"] is None and same["effective_rank"] is None
    json.dumps(out, allow_nan=False), json.dumps(same, allow_nan=False)
    with pytest.raises(BenchError):
        cdnv(np.zeros((2, 2)), np.zeros(2))
    with pytest.raises(BenchError):
        gnc2(np.zeros((3, 2)), np.zeros(2))


def test_nc1_pinv_equals_geometry_nc1():
    rng = np.random.default_rng(4)
    y = np.repeat(np.arange(5), 30)
    z = rng.normal(size=(150, 7)) + 3 * rng.normal(size=(5, 7))[y]
    geo = geometry(z, y, 5)
    ours = collapse_metrics(moments_of(z, y, 5))
    assert ours["nc1_pinv"] == pytest.approx(geo["nc1"], rel=1e-9)
    assert ours["sigma_w_trace"] == pytest.approx(geo["sigma_w_trace"], rel=1e-12)


# ------------------------------------------------------------------ rank

def test_effective_rank_of_known_singular_values():
    rng = np.random.default_rng(5)
    s = np.array([4.0, 2.0, 1.0, 1.0, 0.0])
    u, _ = np.linalg.qr(rng.normal(size=(8, 5)))
    v, _ = np.linalg.qr(rng.normal(size=(5, 5)))
    a = u @ np.diag(s) @ v.T
    p = np.array([4, 2, 1, 1]) / 8
    assert effective_rank(np.linalg.svd(a, compute_uv=False)) == pytest.approx(math.exp(-np.sum(p * np.log(p))))
    assert effective_rank(np.ones(7)) == pytest.approx(7.0)
    assert numerical_rank(s) == 4 and numerical_rank([1.0, 1e-4], rtol=1e-3) == 1
    assert effective_rank(np.zeros(3)) is None


def test_feature_rank_from_moments_matches_the_svd_of_centred_features():
    rng = np.random.default_rng(6)
    y = rng.integers(0, 3, 200)
    x = rng.normal(size=(200, 5)) @ np.diag([5, 3, 1, 0.5, 0.1]) + rng.normal(size=(3, 5))[y]
    out = collapse_metrics(moments_of(x, y, 3))
    s = np.linalg.svd(x - x.mean(axis=0), compute_uv=False)
    assert out["effective_rank"] == pytest.approx(effective_rank(s), rel=1e-9)


def test_weight_spectra_of_a_linear_layer():
    layer = torch.nn.Linear(3, 3, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.diag(torch.tensor([3.0, 2.0, 1.0])))
    out = weight_spectra(torch.nn.Sequential(layer, torch.nn.Conv2d(2, 4, 3)))
    assert out["0"]["spectrum"] == pytest.approx([1.0, 2 / 3, 1 / 3])
    assert out["0"]["effective_rank"] == pytest.approx(math.exp(-sum(p * math.log(p) for p in (.5, 1 / 3, 1 / 6))))
    assert out["1"]["shape"] == [4, 18]


# ------------------------------------------------------------------ layers of the built-in backbones

def test_hidden_layers_of_the_builtin_backbones():
    from bench.models.backbones import MLP, CifarResNet, BasicBlock, SmallCNN
    assert len(hidden_layers(MLP((1, 8, 8), (16, 16, 16)))) == 3
    assert len(hidden_layers(SmallCNN((3, 32, 32), (4, 8, 16)))) == 3          # 2 max-pools + the global pool
    assert [n for n, _ in hidden_layers(CifarResNet(BasicBlock, (1, 1, 1, 1)))] == ["stem", "stage1", "stage2",
                                                                                    "stage3", "stage4"]


@pytest.fixture(scope="module")
def lpc_session():
    """A briefly trained LPC classifier on digits, with deepfool, attacks and best_known run."""
    from attack_helpers import attacked_digits_context
    torch.set_num_threads(1)
    names = {f.name for f in dataclasses.fields(EvalContext)}
    return attacked_digits_context("LPC-NARROW", [0.5], latent_name="z",
                                   **{k: None for k in ("suite", "run") if k in names})


@pytest.mark.slow
def test_layerwise_latent_nc1_equals_geometry_nc1(lpc_session):
    from bench.evaluation.hook import EVALUATORS, evaluator_options
    ctx = lpc_session
    lw = EVALUATORS.get("layerwise")(ctx, evaluator_options("layerwise", {}))
    geo = EVALUATORS.get("geometry")(ctx, evaluator_options("geometry", {}))
    assert lw["layers"] == ["layer1", "layer2", "z", "logits"] and lw["latent_layer"] == "z"
    assert lw["conditions"]["train"]["z"]["nc1_pinv"] == pytest.approx(geo["train"]["nc1"], rel=1e-8)
    assert lw["conditions"]["train"]["z"]["cdnv"] == pytest.approx(geo["train"]["cdnv"], rel=1e-8)
    assert lw["erank_latent"] == pytest.approx(geo["train"]["effective_rank"], rel=1e-8)
    # clean NCC accuracy at z on the attacked inputs, by hand from the features and the train means
    rows = ctx.artifacts["best_known"]["flipped"][:ctx.results["best_known"]["n_inputs"]].nonzero().squeeze(1)
    x, y = ctx.test_inputs()
    feats = layer_features(ctx.model, x[rows], device=ctx.device)
    y = y[rows].numpy()
    z_train = ctx.latents["train"].double().numpy()
    means = np.stack([z_train[ctx.labels["train"].numpy() == c].mean(0) for c in range(10)])
    nearest = ((feats["z"].numpy()[:, None, :] - means[None]) ** 2).sum(2).argmin(1)
    assert lw["conditions"]["clean"]["z"]["ncc_accuracy"] == pytest.approx(float(np.mean(nearest == y)))
    assert lw["first_leave"]["best_known"]["depth"] is None or 1 <= lw["first_leave"]["best_known"]["depth"] <= 4
    json.dumps(lw, allow_nan=False)
    mis = EVALUATORS.get("misclassification")(ctx, evaluator_options("misclassification", {}))
    logits = ctx.model(ctx.data.test_x.float() / ctx.data.pixel_scale).detach().double().numpy()
    correct = logits.argmax(1) == ctx.data.test_y.numpy()
    if mis["msp"]["auroc"] is not None:
        assert mis["msp"]["auroc"] == pytest.approx(roc_auc_score(correct, softmax_scores(logits)["msp"]), abs=1e-9)
    else:
        assert mis["n_errors"] < 5
    json.dumps(mis, allow_nan=False)


# ------------------------------------------------------------------ the claims

def test_new_claims_enter_only_with_their_evaluators_and_use_welch():
    from scipy import stats as scipy_stats
    from bench.reporting.claims import FAILS, HOLDS, SKIPPED, evaluate_claims
    from bench.reporting.stats import Stat
    base = {"LPC": {"test_acc": Stat.of([0.9, 0.91])}, "NoPen": {"test_acc": Stat.of([0.9, 0.92])}}
    assert not any(c.key.startswith(("misclassification", "low_rank", "late_leave"))
                   for c in evaluate_claims(base, {}))
    lpc, nopen = [0.90, 0.91, 0.92], [0.95, 0.96, 0.97]
    stats = {"LPC": {"msp_auroc": Stat.of(lpc), "erank_latent": Stat.of([8.0, 8.5, 9.0])},
             "NoPen": {"msp_auroc": Stat.of(nopen), "erank_latent": Stat.of([40.0, 44.0, 48.0]),
                       "first_leave_from_end": Stat.of([1, 1, 1]), "clean_leave_from_end": Stat.of([1, 1, 1])}}
    claims = {c.key: c for c in evaluate_claims(stats, {})}
    welch = scipy_stats.ttest_ind(lpc, nopen, equal_var=False, alternative="less")
    mis = claims["misclassification_lpc_vs_nopen"]
    assert mis.status == FAILS and f"p = {welch.pvalue:.3g}" in mis.detail
    assert claims["low_rank_latent"].status == HOLDS
    assert claims["late_leave_nopen"].status == SKIPPED          # clean inputs leave there too
    stats["NoPen"].pop("clean_leave_from_end")
    assert {c.key: c for c in evaluate_claims(stats, {})}["late_leave_nopen"].status == HOLDS
