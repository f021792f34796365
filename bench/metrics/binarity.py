"""Binarity of the latent code (the paper's Appendix D, Table IV).

Question: does each latent coordinate take one of two values (LPC's "binary encoding",
collapse points on hypercube vertices) or spread as one bump? Per dimension j:

1. Standardise the values of that dimension over the split: x = (z_j − mean) / std
   (population std). This is what makes the paper's numbers reproducible: one Gaussian
   fitted to standardised values has a mean log-likelihood of exactly −½ log(2πe) =
   −1.4189; a two-component fit can only do as well or better (two equal components
   are one Gaussian), so a unimodal dimension scores −1.419 or slightly above (the
   second component fits sampling noise), which is what Table IV reports for LinPen
   (−1.42). Two narrow peaks at ±1 of width σ score about −2.11 − log σ (σ = 0.1 →
   0.19, Table IV's LPC: 0.18 with a peak distance ≈ 20 = 2/0.1, also as reported).
2. Fit a 2-component Gaussian mixture — scikit-learn's ``GaussianMixture`` model and EM
   (reg_covar 1e-6, i.e. σ ≥ 1e-3 in standardised units, tol 1e-3) — on a seeded
   subsample of at most ``max_samples`` values (the same rows for every dimension). The
   fit starts from the exact 1-D two-means split of the sorted values (weights, means and
   variances of the two sides), so it does not depend on a random k-means start.
   Backends: "numpy" (default) runs sklearn's EM steps on all dimensions at once;
   "sklearn" calls ``GaussianMixture.fit`` per dimension. Both give the same parameters
   to ~1e-12 (tested); the numpy one is 3–10× faster (sklearn's per-call overhead
   dominates for wide latents: 256 dims of backbone features take seconds).
   EM crawls when the two components should merge (unimodal data): at sklearn's tol
   it stops where the mixture scores *below* the single Gaussian (−1.4213 vs −1.4189
   on a standard normal sample; still below at tol 1e-7). So each dimension also gets
   the one-Gaussian fit (mean and variance + reg_covar of the fit sample, written as two
   equal components with peak distance 0), and whichever scores higher on the fit
   sample is kept. ``n_stopped_short`` counts the dimensions where the single Gaussian
   won, i.e. where EM stopped short of its maximum; ``n_not_converged`` those where EM
   hit ``max_iter``. Comparing with the paper: Table IV's LinPen minima (−1.421 and
   −1.423) lie below −1.4189 too, so its fits stopped short the same way, and a
   unimodal dimension's peak distance (there 0.4–2.2, from a half-merged pair) reads 0
   here.
3. Score = the mean log-likelihood per value of the fitted mixture (what sklearn's
   ``score`` returns), over *all* values of the split, not just the subsample; it is
   evaluated for all dimensions at once (``mixture_log_likelihood``), which the tests
   check against ``GaussianMixture.score``.
4. σ₁, σ₂ the component standard deviations, peak distance |μ₁ − μ₂| / ((σ₁ + σ₂)/2).

Reported: mean and min over dimensions of the score and of the peak distance, the mean
of (σ₁ + σ₂)/2, the per-dimension std of the score, and the two fit counts above. A
dimension that is constant over the split has no mixture to fit: it is counted
(``n_constant_dims``) and left out.
"""
from __future__ import annotations

import warnings

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.mixture import GaussianMixture

from bench.core.errors import BenchError
from bench.metrics.inputs import as_latents, undefined

BINARITY_KEYS = ("gmm_score_mean", "gmm_score_min", "sigma_mean", "peaks_dist_mean", "peaks_dist_min")


def two_means_split(sorted_x: np.ndarray) -> np.ndarray:
    """For each column of an (n, D) column-sorted array, the n_left (1 ≤ n_left < n) that
    minimises the within-group sum of squares of {first n_left} ∪ {rest}: the exact
    1-D two-means clustering."""
    n = sorted_x.shape[0]
    s1 = np.cumsum(sorted_x, axis=0)
    s2 = np.cumsum(sorted_x ** 2, axis=0)
    left = np.arange(1, n, dtype=np.float64)[:, None]
    right = n - left
    ss_left = s2[:-1] - s1[:-1] ** 2 / left
    ss_right = (s2[-1] - s2[:-1]) - (s1[-1] - s1[:-1]) ** 2 / right
    return np.argmin(ss_left + ss_right, axis=0) + 1


def fit_dimension(x: np.ndarray, x_sorted: np.ndarray, n_left: int, *, seed: int, reg_covar: float,
                  tol: float, max_iter: int) -> tuple[GaussianMixture, bool]:
    """Seeded sklearn fit of one standardised dimension from its two-means split."""
    lo, hi = x_sorted[:n_left], x_sorted[n_left:]
    n = x_sorted.shape[0]
    var = np.array([lo.var(), hi.var()]) + reg_covar
    gmm = GaussianMixture(
        n_components=2, covariance_type="full", reg_covar=reg_covar, tol=tol, max_iter=max_iter,
        random_state=seed, init_params="random_from_data",   # every start value is given below
        weights_init=np.array([n_left / n, 1 - n_left / n]),
        means_init=np.array([[lo.mean()], [hi.mean()]]),
        precisions_init=(1.0 / var).reshape(2, 1, 1))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        gmm.fit(x[:, None])
    converged = not any(issubclass(w.category, ConvergenceWarning) for w in caught)
    return gmm, converged


def fit_all_dimensions(x: np.ndarray, weights: np.ndarray, means: np.ndarray, variances: np.ndarray, *,
                       reg_covar: float, tol: float, max_iter: int):
    """The same EM as sklearn's ``GaussianMixture`` (2 components, 1-D, ``covariance_type
    ="full"``), run on every column of ``x`` (n, D) at once from the given (2, D) start.

    Mirrors sklearn step for step: E-step, M-step (component counts + 10·eps, variances
    + reg_covar), then stop a column when the change of its mean log-likelihood (taken
    at the E-step) is below ``tol``. Converged columns drop out of later iterations.
    The tests check it against ``GaussianMixture`` column by column.
    Returns (weights, means, sigmas, converged) with (2, D), (2, D), (2, D), (D,) shapes.
    """
    weights, means, variances = weights.copy(), means.copy(), variances.copy()
    dims = x.shape[1]
    lower = np.full(dims, -np.inf)
    converged = np.zeros(dims, dtype=bool)
    active = np.arange(dims)
    eps10 = 10 * np.finfo(np.float64).eps
    for _ in range(max_iter):
        xa = x[:, active]
        w, mu, var = weights[:, active], means[:, active], variances[:, active]
        log_p = [np.log(w[c]) - 0.5 * np.log(2 * np.pi * var[c]) - 0.5 * (xa - mu[c]) ** 2 / var[c]
                 for c in range(2)]
        norm = np.logaddexp(log_p[0], log_p[1])
        resp = [np.exp(log_p[c] - norm) for c in range(2)]
        new_lower = norm.mean(axis=0)
        nk = np.stack([r.sum(axis=0) for r in resp]) + eps10
        mu = np.stack([(r * xa).sum(axis=0) for r in resp]) / nk
        var = np.stack([(r * (xa - mu[c]) ** 2).sum(axis=0) for c, r in enumerate(resp)]) / nk + reg_covar
        weights[:, active], means[:, active], variances[:, active] = nk / nk.sum(axis=0), mu, var
        done = np.abs(new_lower - lower[active]) < tol
        lower[active] = new_lower
        converged[active[done]] = True
        active = active[~done]
        if active.size == 0:
            break
    return weights, means, np.sqrt(variances), converged


def mixture_log_likelihood(x: np.ndarray, weights: np.ndarray, means: np.ndarray,
                           sigmas: np.ndarray) -> np.ndarray:
    """Mean over rows of log Σ_c w_c N(x; μ_c, σ_c²), per column of ``x`` (n, D);
    ``weights``, ``means``, ``sigmas`` are (2, D)."""
    terms = []
    for c in range(2):   # in-place passes: this runs over all N·D values of the split
        t = x - means[c]
        t /= sigmas[c]
        np.square(t, out=t)
        t *= -0.5
        t += np.log(weights[c]) - np.log(sigmas[c]) - 0.5 * np.log(2 * np.pi)
        terms.append(t)
    return np.logaddexp(terms[0], terms[1], out=terms[0]).mean(axis=0)


def keep_better_than_one_gaussian(fit_x: np.ndarray, weights: np.ndarray, means: np.ndarray,
                                  sigmas: np.ndarray, reg_covar: float):
    """Per column of ``fit_x`` (n, D), the 2-component fit or the single Gaussian (as two
    equal components), whichever has the higher mean log-likelihood on ``fit_x``.

    The two-component maximum is never below the one-component one, so a column where
    the Gaussian wins is one where EM stopped short. Returns (weights, means, sigmas,
    stopped_short) with (2, D) arrays and a (D,) bool mask.
    """
    one_mu = np.broadcast_to(fit_x.mean(axis=0), means.shape)
    one_sigma = np.broadcast_to(np.sqrt(fit_x.var(axis=0) + reg_covar), sigmas.shape)
    half = np.full(weights.shape, 0.5)
    two_ll = mixture_log_likelihood(fit_x, weights, means, sigmas)
    one_ll = mixture_log_likelihood(fit_x, half, one_mu, one_sigma)
    short = one_ll > two_ll
    pick = short[None, :]
    return (np.where(pick, half, weights), np.where(pick, one_mu, means),
            np.where(pick, one_sigma, sigmas), short)


def binarity(z, *, max_samples: int | None = 5000, seed: int = 0, reg_covar: float = 1e-6,
             tol: float = 1e-3, max_iter: int = 200, backend: str = "sklearn") -> dict:
    """Per-dimension 2-component Gaussian-mixture statistics (see the module docstring).

    ``backend``: "sklearn" fits one ``GaussianMixture`` per dimension; "numpy" runs the
    identical EM on all dimensions at once (``fit_all_dimensions``), which is much
    faster for wide latents (sklearn's per-fit overhead dominates at d = 256).
    """
    if backend not in ("sklearn", "numpy"):
        raise BenchError(f"binarity backend must be 'sklearn' or 'numpy', got {backend!r}")
    z = as_latents(z, "latents")
    n, d = z.shape
    if n < 4:
        raise BenchError(f"binarity needs at least 4 samples to fit two Gaussians, got {n}")
    mean = z.mean(axis=0)
    std = z.std(axis=0)
    varying = std > 0
    out: dict = {"n": int(n), "d": int(d), "n_constant_dims": int((~varying).sum()),
                 "standardised": True, "score": "mean log-likelihood per value (nats), all values"}
    if not varying.any():
        reason = "every latent dimension is constant over the split: no mixture to fit"
        return {**out, **undefined(BINARITY_KEYS, reason)}
    x = (z[:, varying] - mean[varying]) / std[varying]
    rng = np.random.default_rng(seed)
    rows = (np.sort(rng.choice(n, size=max_samples, replace=False))
            if max_samples is not None and n > max_samples else np.arange(n))
    fit_x = x[rows]
    fit_sorted = np.sort(fit_x, axis=0)
    splits = two_means_split(fit_sorted)
    dims = x.shape[1]
    if backend == "numpy":
        n_fit = fit_x.shape[0]
        left = np.arange(n_fit)[:, None] < splits[None, :]
        counts = np.stack([splits, n_fit - splits]).astype(np.float64)
        sums = np.stack([np.where(left, fit_sorted, 0).sum(0), np.where(left, 0, fit_sorted).sum(0)])
        start_means = sums / counts
        start_vars = np.stack([np.where(left, (fit_sorted - start_means[0]) ** 2, 0).sum(0),
                               np.where(left, 0, (fit_sorted - start_means[1]) ** 2).sum(0)]) / counts + reg_covar
        weights, mus, sigmas, converged = fit_all_dimensions(
            fit_x, counts / n_fit, start_means, start_vars, reg_covar=reg_covar, tol=tol, max_iter=max_iter)
        not_converged = int((~converged).sum())
    else:
        weights, mus, sigmas = np.empty((2, dims)), np.empty((2, dims)), np.empty((2, dims))
        not_converged = 0
        for j in range(dims):
            gmm, ok = fit_dimension(fit_x[:, j], fit_sorted[:, j], int(splits[j]), seed=seed,
                                    reg_covar=reg_covar, tol=tol, max_iter=max_iter)
            not_converged += not ok
            weights[:, j] = gmm.weights_
            mus[:, j] = gmm.means_.reshape(2)
            sigmas[:, j] = np.sqrt(gmm.covariances_.reshape(2))
    weights, mus, sigmas, short = keep_better_than_one_gaussian(fit_x, weights, mus, sigmas, reg_covar)
    scores = mixture_log_likelihood(x, weights, mus, sigmas)
    half_width = sigmas.mean(axis=0)
    dists = np.abs(mus[0] - mus[1]) / half_width
    return {**out, "n_fit": int(rows.size), "backend": backend, "n_not_converged": int(not_converged),
            "n_stopped_short": int(short.sum()),
            "gmm_score_mean": float(scores.mean()), "gmm_score_min": float(scores.min()),
            "gmm_score_std": float(scores.std()), "sigma_mean": float(half_width.mean()),
            "peaks_dist_mean": float(dists.mean()), "peaks_dist_min": float(dists.min())}
