"""Metrics against independent oracles: naive per-sample loops, closed forms, scipy directly.

Entropy tolerance (Kozachenko–Leonenko, k = 20, N = 4,000, rotated Gaussians with axis
scales in [0.7, 1.4]): |Ĥ − H|/d < 0.03 nats at d = 2 and < 0.05 at d = 8. At d = 32 the
estimator is known to over-estimate at finite N (the 20th neighbour is far on the scale
of the density's variation); we measured ≈ +0.1 nats/dim for an isotropic Gaussian at
N = 5,000 and assert 0 < (Ĥ − H)/d < 0.2.
"""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from scipy import stats
from scipy.spatial.distance import cdist

from bench.core.errors import BenchError
from bench.metrics import (binarity, correlate, geometry, kl_entropy, knn_radius, margin_gradient_norms)
from bench.metrics.binarity import fit_dimension, mixture_log_likelihood, two_means_split
from bench.metrics.correlation import _rowwise_pearson, analyse_suite
from bench.metrics.geometry import GEOMETRY_KEYS


def clustered(n=240, d=5, k=4, sep=3.0, seed=0):
    rng = np.random.default_rng(seed)
    y = np.concatenate([np.arange(k), rng.integers(0, k, n - k)])   # every class present
    z = rng.standard_normal((k, d))[y] * sep + rng.standard_normal((n, d)) * rng.uniform(0.5, 2.0, d)
    return z.astype(np.float32).astype(np.float64), y


# ------------------------------------------------------------------ naive oracles
def naive_geometry(z, y, k, w, pred):
    n, d = len(z), len(z[0])
    sums, counts = [[0.0] * d for _ in range(k)], [0] * k
    for i in range(n):
        counts[y[i]] += 1
        for j in range(d):
            sums[y[i]][j] += z[i][j]
    means = [[s / counts[c] for s in sums[c]] for c in range(k)]
    gmean = [sum(z[i][j] for i in range(n)) / n for j in range(d)]
    ratios = []
    for i in range(n):
        own = math.dist(z[i], means[y[i]])
        other = min(math.dist(z[i], means[c]) for c in range(k) if c != y[i])
        ratios.append(other / own)
    sw = [[0.0] * d for _ in range(d)]
    for i in range(n):
        diff = [z[i][j] - means[y[i]][j] for j in range(d)]
        for a in range(d):
            for b in range(d):
                sw[a][b] += diff[a] * diff[b] / n
    sb = [[0.0] * d for _ in range(d)]
    for c in range(k):
        diff = [means[c][j] - gmean[j] for j in range(d)]
        for a in range(d):
            for b in range(d):
                sb[a][b] += diff[a] * diff[b] / k
    sw, sb = np.array(sw), np.array(sb)
    centred = [[means[c][j] - gmean[j] for j in range(d)] for c in range(k)]
    norms = [math.sqrt(sum(v * v for v in m)) for m in centred]
    cosines = [sum(a * b for a, b in zip(centred[c], centred[e])) / (norms[c] * norms[e])
               for c in range(k) for e in range(k) if c != e]
    mean_norm = sum(norms) / k
    mean_cos = sum(cosines) / len(cosines)
    wf = math.sqrt(sum(v * v for row in w for v in row))
    mf = math.sqrt(sum(v * v for row in centred for v in row))
    nc3 = math.sqrt(sum((w[c][j] / wf - centred[c][j] / mf) ** 2 for c in range(k) for j in range(d)))
    disagree = 0
    for i in range(n):
        ncc = min(range(k), key=lambda c: math.dist(z[i], means[c]))
        disagree += ncc != pred[i]
    row_norms = [math.sqrt(sum(v * v for v in z[i])) for i in range(n)]
    absz = [abs(v) for row in z for v in row]

    def cv(values):
        m = sum(values) / len(values)
        return math.sqrt(sum((v - m) ** 2 for v in values) / len(values)) / m

    return {"R_mean": sum(ratios) / n, "R_median": float(np.median(ratios)),
            "sigma_w_trace": float(np.trace(sw)), "sigma_w_mean_entry": float(sw.mean()),
            "sigma_b_trace": float(np.trace(sb)),
            "nc1": float(np.trace(sw @ np.linalg.pinv(sb))) / k,
            "nc2_equinorm": math.sqrt(sum((v - mean_norm) ** 2 for v in norms) / k) / mean_norm,
            "nc2_equiangular": math.sqrt(sum((v - mean_cos) ** 2 for v in cosines) / len(cosines)),
            "nc2_max_angle": sum(abs(v + 1 / (k - 1)) for v in cosines) / len(cosines),
            "nc3": nc3, "nc4": disagree / n, "cv_norm": cv(row_norms), "cv_abs": cv(absz)}


@pytest.mark.parametrize("n,d,k", [(240, 5, 4), (150, 2, 6)])   # Σ_B rank-deficient, and d < K − 1
def test_geometry_matches_naive_loops(n, d, k):
    z, y = clustered(n, d, k, seed=d)
    rng = np.random.default_rng(1)
    w = rng.standard_normal((k, d))
    pred = np.where(rng.random(n) < 0.8, y, rng.integers(0, k, n))
    got = geometry(z, y, k, classifier_weight=w, predictions=pred)
    want = naive_geometry(z.tolist(), y.tolist(), k, w.tolist(), pred.tolist())
    for key, value in want.items():
        assert got[key] == pytest.approx(value, rel=1e-9, abs=1e-12), key
    assert got["nc1_per_dim"] == pytest.approx(want["nc1"] / d, rel=1e-9)
    assert got["n_on_own_mean"] == 0 and got["grouping"] == "true labels"
    assert set(GEOMETRY_KEYS) <= set(got)


def test_geometry_collapsed_class_is_counted_not_infinite():
    z, y = clustered(200, 4, 3)
    z[y == 1] = z[y == 1][0]                      # class 1 collapsed to one bit-identical point
    got = geometry(z, y, 3)
    assert got["n_on_own_mean"] == int((y == 1).sum())
    assert math.isfinite(got["R_mean"]) and "R_note" in got
    z_all = np.repeat(np.eye(3, 4), [70, 70, 60], axis=0)   # every class collapsed
    got = geometry(z_all, np.repeat(np.arange(3), [70, 70, 60]), 3)
    assert got["R_mean"] is None and "unbounded" in got["R_mean_reason"]
    assert got["sigma_w_trace"] == 0.0 and got["nc1"] == 0.0


def test_geometry_test_split_nc4_uses_given_means():
    z, y = clustered(200, 4, 3)
    far = np.full((3, 4), 100.0)
    far[0] = 0.0                                  # nearest-centre rule says class 0 everywhere
    got = geometry(z, y, 3, predictions=np.zeros(200, dtype=int), ncc_means=far)
    assert got["nc4"] == 0.0 and got["nc4_means"] == "train class means"


# ------------------------------------------------------------------ bad inputs
def test_bad_inputs_raise_clear_errors():
    z, y = clustered(100, 3, 3)
    with pytest.raises(BenchError, match="class 2 has 1 sample"):
        geometry(np.vstack([z[y != 2], z[y == 2][:1]]), np.concatenate([y[y != 2], [2]]), 3)
    with pytest.raises(BenchError, match="no samples in the test split"):
        geometry(z[y != 1], y[y != 1], 3, split="test")
    bad = z.copy()
    bad[7, 1] = np.nan
    with pytest.raises(BenchError, match="non-finite"):
        geometry(bad, y, 3)
    with pytest.raises(BenchError, match="non-finite"):
        kl_entropy(bad)
    with pytest.raises(BenchError, match="more than 20 samples"):
        kl_entropy(z[:20], 20)
    with pytest.raises(BenchError, match="out of range"):
        geometry(z, y, 2)
    with pytest.raises(BenchError, match="at least 4 samples"):
        binarity(z[:3])


def test_evaluators_record_none_with_reason(tmp_path):
    from bench.evaluation.hook import EVALUATORS, EvalContext, evaluator_options
    from bench.metrics.metric_evaluators import GeometryOptions

    z, y = clustered(120, 4, 3)
    zt = torch.tensor(z, dtype=torch.float32)
    yt = torch.tensor(y)
    keep = yt != 2                                 # the test split lacks class 2
    ctx = EvalContext(model=torch.nn.Identity(), data=type("D", (), {"num_classes": 3})(),
                      device=torch.device("cpu"), latents={"train": zt, "test": zt[keep]},
                      labels={"train": yt, "test": yt[keep]}, predictions={"train": yt, "test": yt[keep]},
                      subset=torch.arange(10))
    geo = EVALUATORS.get("geometry")(ctx, GeometryOptions())
    assert geo["train"]["R_mean"] > 1
    assert geo["test"]["R_mean"] is None and "class" in geo["test"]["R_mean_reason"]
    assert all(geo["test"][key] is None for key in GEOMETRY_KEYS)
    ent = EVALUATORS.get("entropy")(ctx, evaluator_options("entropy", {"entropy": {"k": 100}}))
    assert ent["train"]["entropy"] > -10 and ent["test"]["entropy"] is None
    assert "more than 100" in ent["test"]["entropy_reason"]
    json.dumps(geo), json.dumps(ent)               # JSON-able, no NaN sneaking through
    with pytest.raises(BenchError, match="entropy.k"):
        evaluator_options("entropy", {"entropy": {"k": 0}})


# ------------------------------------------------------------------ entropy
def test_knn_exact_against_brute_force():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 4, 900)
    for sep in (0.0, 2.0, 50.0):                  # overlapping, touching, separated classes
        z = rng.standard_normal((4, 24))[y] * sep + rng.standard_normal((900, 24))
        z[:40] = z[40:80]                         # exact duplicates
        dist = np.sort(cdist(z, z), axis=1)       # column 0 is the point itself
        want = dist[:, 20]
        for groups in (y, None):
            for tile in (1024, 100):              # one tile; many tiles, pruned pairs
                got, method = knn_radius(z, 20, groups, tile=tile)
                assert "tiled" in method
                np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
        got, method = knn_radius(z[:, :6], 20, threads=1)
        assert "cKDTree, 1 thread" in method
        np.testing.assert_allclose(got, np.sort(cdist(z[:, :6], z[:, :6]), axis=1)[:, 20], rtol=1e-12)


def _near_ties(d=20, centres=30, shell=60, step=1e-10, seed=5):
    """Each centre has ``shell`` points at distances 1, 1 + step, 1 + 2·step, … (shuffled):
    float32 (resolution 6e-8) cannot order them, float64 can."""
    rng = np.random.default_rng(seed)
    points = []
    for c in rng.standard_normal((centres, d)) * 10:
        dirs = rng.standard_normal((shell, d))
        dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
        points += [c, *(c + dirs * (1 + rng.permutation(shell) * step)[:, None])]
    return np.array(points)


@pytest.mark.parametrize("tile", [64, 4096])
def test_knn_resolves_ties_below_float32_resolution(tile, monkeypatch):
    z = _near_ties()
    want = np.sort(cdist(z, z), axis=1)
    for k in (1, 5, 20, 40):
        got, _ = knn_radius(z, k, tile=tile)
        np.testing.assert_allclose(got, want[:, k], rtol=1e-12)
        centres = np.arange(0, len(z), 61)      # their k-th distance is 1 + j·1e-10, j = k − 1
        np.testing.assert_allclose(got[centres] - 1, (k - 1) * 1e-10, rtol=1e-4, atol=1e-14)
    # the rounding bound is what makes it exact: without it the float32 shortlist misses
    from bench.metrics import knn
    original = knn._TiledSearch.__init__

    def no_bound(self, *args, **kwargs):
        original(self, *args, **kwargs)
        self.eps = self.abs_err = 0.0
    monkeypatch.setattr(knn._TiledSearch, "__init__", no_bound)
    wrong = 0
    for k in (5, 20, 40):
        try:
            wrong += int(np.sum(~np.isclose(knn_radius(z, k, tile=tile)[0], want[:, k], rtol=1e-12)))
        except BenchError:                      # a point left with fewer than k candidates
            wrong += 1
    assert wrong > 0


def test_knn_edge_cases():
    rng = np.random.default_rng(0)
    same = np.ones((50, 12))
    assert np.all(knn_radius(same, 20)[0] == 0)                 # all identical: k copies capped
    z = rng.standard_normal((2000, 10))
    z[:1500] = z[0]                                             # 1,500 copies of one point
    z[1500:1510] = z[1500]                                      # 10 copies: fewer than k
    want = np.sort(cdist(z, z), axis=1)[:, 20]
    np.testing.assert_allclose(knn_radius(z, 20, tile=256)[0], want, rtol=1e-12)
    for scale, offset in ((1e-30, 0.0), (1e25, 1e27)):          # float32 under/overflow territory
        x = rng.standard_normal((600, 10)) * scale + offset
        np.testing.assert_allclose(knn_radius(x, 5, tile=128)[0], np.sort(cdist(x, x), axis=1)[:, 5],
                                   rtol=1e-12)
    tiny = rng.standard_normal((22, 9))                         # n = k + 2: every point a candidate
    np.testing.assert_allclose(knn_radius(tiny, 20)[0], np.sort(cdist(tiny, tiny), axis=1)[:, 20], rtol=1e-12)
    with pytest.raises(BenchError, match="more than 20"):
        knn_radius(tiny[:20], 20)


def test_entropy_evaluator_runs_the_knn_on_the_suite_threads():
    from types import SimpleNamespace

    from bench.evaluation.hook import EVALUATORS, EvalContext, evaluator_options
    z, y = clustered(300, 12, 3)
    zt, yt = torch.tensor(z, dtype=torch.float32), torch.tensor(y)
    before = torch.get_num_threads()
    for threads, want in ((1, "1 thread(s)"), (0, f"{before} thread(s)")):     # 0: torch's own setting
        ctx = EvalContext(num_threads=threads or None, model=torch.nn.Identity(), data=SimpleNamespace(num_classes=3),
                          device=torch.device("cpu"), latents={"train": zt, "test": zt}, labels={"train": yt, "test": yt},
                          predictions={"train": yt, "test": yt}, subset=torch.arange(10))
        ent = EVALUATORS.get("entropy")(ctx, evaluator_options("entropy", {"entropy": {"k": 5}}))
        assert ent["train"]["method"].endswith(want + ")") and torch.get_num_threads() == before


def test_knn_honours_threads():
    z = np.random.default_rng(1).standard_normal((300, 16))
    before = torch.get_num_threads()
    got, method = knn_radius(z, 5, threads=1)
    assert "1 thread" in method and torch.get_num_threads() == before
    assert knn_radius(z, 5)[1].endswith(f"{before} thread(s))")


@pytest.mark.parametrize("d,low,high", [(2, -0.03, 0.03), (8, -0.05, 0.05), (32, 0.0, 0.2)])
def test_kl_entropy_against_gaussian_closed_form(d, low, high):
    rng = np.random.default_rng(d)
    scales = rng.uniform(0.7, 1.4, d)
    rotation = np.linalg.qr(rng.standard_normal((d, d)))[0]
    z = rng.standard_normal((4000, d)) * scales @ rotation.T + 5.0
    true = 0.5 * d * math.log(2 * math.pi * math.e) + np.log(scales).sum()
    got = kl_entropy(z, 20)
    assert got["n"] == 4000 and got["zero_knn_fraction"] == 0.0
    assert low < (got["entropy"] - true) / d < high
    assert got["entropy_per_dim"] == pytest.approx(got["entropy"] / d)


def test_kl_entropy_duplicates_floor_and_scale():
    rng = np.random.default_rng(0)
    z = rng.standard_normal((600, 3))
    z[:300] = z[0]                                 # half the samples bit-identical
    got = kl_entropy(z, 20)
    assert got["zero_knn_fraction"] == pytest.approx(0.5, abs=0.01)
    assert math.isfinite(got["entropy"]) and got["floor"] == pytest.approx(1e-6 * got["spread"])
    scaled = kl_entropy(z * 1000.0, 20)            # the floor scales with the data
    assert scaled["entropy"] == pytest.approx(got["entropy"] + 3 * math.log(1000.0), rel=1e-9)
    same = kl_entropy(np.ones((50, 3)), 20)
    assert same["entropy"] is None and "identical" in same["entropy_reason"]
    sub = kl_entropy(rng.standard_normal((3000, 2)), 20, max_samples=1000, seed=1)
    assert sub["n"] == 1000 and sub["n_total"] == 3000 and sub["subsampled"]


# ------------------------------------------------------------------ binarity
ONE_GAUSSIAN = -0.5 * math.log(2 * math.pi * math.e)   # mean log-likelihood of N(0, 1) fitted to standardised data


def test_binarity_two_peaks_vs_one_gaussian():
    rng = np.random.default_rng(0)
    code = np.sign(rng.standard_normal((6000, 6)))
    two = binarity(code + 0.1 * rng.standard_normal((6000, 6)))
    one = binarity(rng.standard_normal((6000, 6)) * 3 + 1)
    # standardised peaks at ±1 of width 0.1: score ≈ −2.11 − log 0.1 ≈ 0.19, distance ≈ 20
    assert two["gmm_score_min"] > 0.1 and two["peaks_dist_min"] > 15 and two["sigma_mean"] < 0.15
    assert two["n_stopped_short"] == 0 and two["n_not_converged"] == 0
    # one bump: the single Gaussian, −½ log(2πe) = −1.419 whatever its scale, peak distance 0
    assert one["gmm_score_mean"] == pytest.approx(ONE_GAUSSIAN, abs=1e-3)
    assert one["peaks_dist_mean"] < 3
    const = binarity(np.c_[rng.standard_normal(50), np.zeros(50)])
    assert const["n_constant_dims"] == 1


@pytest.mark.parametrize("backend", ["numpy", "sklearn"])
def test_binarity_never_scores_below_one_gaussian(backend):
    """Two components contain one (two equal halves), so a fitted mixture scores at least
    the one-Gaussian maximum, which for standardised data is exactly −½ log(2πe). EM from
    the two-means start stopped at −1.4213 on this sample (issue #13)."""
    z = np.random.default_rng(0).standard_normal((6000, 6)) * 3 + 1
    got = binarity(z, max_samples=None, backend=backend)         # fitted and scored on the same values
    per_dim_floor = ONE_GAUSSIAN - 1e-9                          # reg_covar moves it by ~1e-13
    assert got["gmm_score_min"] >= per_dim_floor
    assert got["gmm_score_mean"] < ONE_GAUSSIAN + 0.01          # and not much above: one bump
    assert got["n_stopped_short"] == 6 and got["peaks_dist_min"] == 0.0
    # the EM alone stops short, the failure this guards against
    from bench.metrics.binarity import fit_all_dimensions, mixture_log_likelihood as mll
    x = (z - z.mean(0)) / z.std(0)
    xs = np.sort(x, axis=0)
    split = two_means_split(xs)
    left = np.arange(len(x))[:, None] < split[None, :]
    counts = np.stack([split, len(x) - split]).astype(float)
    means = np.stack([np.where(left, xs, 0).sum(0), np.where(left, 0, xs).sum(0)]) / counts
    var = np.stack([np.where(left, (xs - means[0]) ** 2, 0).sum(0),
                    np.where(left, 0, (xs - means[1]) ** 2).sum(0)]) / counts + 1e-6
    w, mu, sig, _ = fit_all_dimensions(x, counts / len(x), means, var, reg_covar=1e-6, tol=1e-3, max_iter=200)
    assert mll(x, w, mu, sig).min() < per_dim_floor - 1e-3


def test_binarity_pieces_against_sklearn_and_brute_force():
    rng = np.random.default_rng(1)
    x = np.concatenate([rng.normal(-1, 0.3, 300), rng.normal(2, 0.5, 100)])
    x = (x - x.mean()) / x.std()
    xs = np.sort(x)
    split = int(two_means_split(xs[:, None])[0])
    sse = [((xs[:j] - xs[:j].mean()) ** 2).sum() + ((xs[j:] - xs[j:].mean()) ** 2).sum() for j in range(1, 400)]
    assert split == int(np.argmin(sse)) + 1
    gmm, converged = fit_dimension(x, xs, split, seed=0, reg_covar=1e-6, tol=1e-3, max_iter=200)
    assert converged
    two = binarity(np.c_[x, x ** 2, np.sin(3 * x)], backend="numpy")
    ref = binarity(np.c_[x, x ** 2, np.sin(3 * x)], backend="sklearn")   # one GaussianMixture per dimension
    for key in ("gmm_score_mean", "gmm_score_min", "sigma_mean", "peaks_dist_mean", "peaks_dist_min"):
        assert two[key] == pytest.approx(ref[key], rel=1e-9), key
    mine = mixture_log_likelihood(x[:, None], gmm.weights_[:, None], gmm.means_.reshape(2, 1),
                                  np.sqrt(gmm.covariances_.reshape(2, 1)))
    assert mine[0] == pytest.approx(gmm.score(x[:, None]), rel=1e-10)


# ------------------------------------------------------------------ Lipschitz
def test_lipschitz_of_a_linear_model_is_exact():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 5, bias=False))
    x = torch.rand(37, 3, 4)
    y = torch.randint(0, 5, (37,))
    norms = margin_gradient_norms(model, x, y, batch_size=8)
    w = model[1].weight.detach().double()
    logits = model(x).detach()
    for i in range(37):
        runner_up = max((j for j in range(5) if j != y[i]), key=lambda j: logits[i, j])
        assert norms[i] == pytest.approx(float((w[y[i]] - w[runner_up]).norm()), rel=1e-6)
    assert all(p.grad is None for p in model.parameters())


# ------------------------------------------------------------------ correlation
def test_correlate_matches_scipy():
    rng = np.random.default_rng(0)
    x = rng.lognormal(size=15)
    y = 2 * x + rng.normal(size=15)
    got = correlate(x, y, n_boot=500, seed=3)
    p = stats.pearsonr(x, y)
    s = stats.spearmanr(x, y)
    assert got["pearson"]["r"] == pytest.approx(p.statistic) and got["pearson"]["p"] == pytest.approx(p.pvalue)
    assert got["spearman"]["r"] == pytest.approx(s.statistic) and got["spearman"]["p"] == pytest.approx(s.pvalue)
    lo, hi = got["pearson"]["ci95"]
    assert lo < got["pearson"]["r"] < hi
    assert correlate(x, y, n_boot=500, seed=3) == got          # seeded
    bx, by = rng.normal(size=(4, 15)), rng.normal(size=(4, 15))
    np.testing.assert_allclose(_rowwise_pearson(bx, by), [np.corrcoef(a, b)[0, 1] for a, b in zip(bx, by)])
    assert correlate([1, 2], [3, 4])["pearson"] is None
    assert "constant" in correlate([1, 1, 1, 1], [1, 2, 3, 4])["pearson_reason"]
    assert "constant" in correlate([0.1, 0.1, 0.1], [1, 2, 3])["pearson_reason"]


def test_correlate_drops_resamples_that_repeat_one_value():
    """n = 3, non-dyadic values: a resample (0.1, 0.1, 0.1) has a float mean ≠ 0.1, so its
    centred values are ~1e-17, not 0; decided on the denominator it entered the CI as
    r = ±1 (issue #13: 84 of 215 such resamples did)."""
    x, y = np.array([0.1, 0.2, 0.7]), np.array([0.3, 0.1, 0.9])
    got = correlate(x, y, n_boot=1000, seed=0)
    draws = np.random.default_rng(0).integers(0, 3, size=(1000, 3))   # the resamples correlate draws
    constant = np.array([len(set(x[i])) == 1 or len(set(y[i])) == 1 for i in draws])
    assert 0 < constant.sum() == got["pearson"]["n_boot_degenerate"] == got["spearman"]["n_boot_degenerate"]
    kept = [stats.pearsonr(x[i], y[i]).statistic for i in draws[~constant]]
    assert got["pearson"]["ci95"] == pytest.approx(list(np.quantile(kept, [0.025, 0.975])))
    # the trap is real: for these resamples the centred sum of squares is not 0
    centred = x[draws[constant]] - x[draws[constant]].mean(axis=1, keepdims=True)
    assert np.any((centred ** 2).sum(axis=1) > 0)
    assert np.all(np.isnan(_rowwise_pearson(x[draws[constant]], y[draws[constant]])))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_correlate_refuses_non_finite_values(bad):
    with pytest.raises(BenchError, match=r"finite.*y has 1 NaN/inf value\(s\) \(first at index 2"):
        correlate([1.0, 2.0, 3.0, 4.0], [1.0, 2.0, bad, 4.0])


def _record(tmp_path, plugin, seed, r_train, rho, status="done"):
    from bench.runs.folder import RunRecord
    ev = {"geometry": {"train": {"R_mean": r_train}, "test": {"R_mean": r_train * 0.9}}}
    if rho is not None:
        ev["deepfool"] = {"rho_mean": rho}
    return RunRecord(tmp_path / plugin / f"seed{seed}", {"run": {"suite": "s", "plugin": plugin, "seed": seed,
                                                                  "lr": 1e-3}},
                     {"status": status, "evaluations": ev})


def test_analyse_suite(tmp_path):
    r = [2.0, 3.0, 30.0, 200.0, 300.0, 1.9]
    rho = [0.01, 0.02, 0.2, 0.5, 0.6, 0.009]
    records = [_record(tmp_path, f"P{i}", 0, a, b) for i, (a, b) in enumerate(zip(r, rho))]
    records.append(_record(tmp_path, "Failed", 0, 5.0, 0.1, status="failed"))
    records.append(_record(tmp_path, "NoRho", 0, 5.0, None))
    records.append(_record(tmp_path, "NanR", 0, float("nan"), 0.1))   # left out and counted, never passed on
    out = analyse_suite(records)
    train = out["train"]
    assert out["status"] == "ok" and out["n_done"] == 8 and len(out["points"]) == 8
    assert train["n_runs"] == 6 and train["n_missing"] == 2
    assert train["R_vs_rho"]["pearson"]["r"] == pytest.approx(stats.pearsonr(r, rho).statistic)
    assert train["logR_vs_logrho"]["pearson"]["r"] == pytest.approx(stats.pearsonr(np.log(r), np.log(rho)).statistic)
    assert out["test"]["R_vs_rho"]["spearman"]["r"] == pytest.approx(1.0)
    json.dumps(out)
    none = analyse_suite([_record(tmp_path, "A", s, 2.0 + s, None) for s in range(4)])
    assert none["status"] == "not available" and "deepfool" in none["train"]["reason"]


# ------------------------------------------------------------------ the command on a trained run
@pytest.mark.slow
def test_bench_metrics_on_a_trained_run(tmp_path, capsys):
    from bench.cli.main import main
    from bench.suites import load_suite
    from bench.runs.folder import RunSpec
    from bench.training.trainer import train_run

    suite = load_suite("digits", ["recipe.epochs=2", "plugins=[LPC]", "seeds=[0]", "evaluation.subset_size=64",
                                  "evaluation.evaluators=[]"])
    outcome = train_run(suite, RunSpec("digits", "LPC", 0, suite.lrs[0]), tmp_path)
    assert outcome.status == "done" and outcome.result["evaluations"] == {}
    assert main(["metrics", "--runs", str(tmp_path), "--quiet", "--set", "entropy.k=10"]) == 0
    assert capsys.readouterr().out == ""                                # --quiet: nothing on stdout
    result = json.loads(next(tmp_path.rglob("result.json")).read_text())
    ev = result["evaluations"]
    assert set(ev) == {"geometry", "entropy", "binarity", "lipschitz", "misclassification", "weight_spectra"}
    assert ev["geometry"]["train"]["R_mean"] > 0 and ev["geometry"]["latent"] == "z"
    assert ev["entropy"]["train"]["k"] == 10 and ev["lipschitz"]["n_inputs"] == 64
    assert result["test_acc"] == outcome.result["test_acc"]          # the rest of result.json kept
    analysis = json.loads((tmp_path / "digits" / "analysis.json").read_text())
    assert analysis["status"] == "not available"                       # no deepfool in this suite
    assert main(["metrics", "--runs", str(tmp_path), "--set", "entropy.k=0"]) == 2
