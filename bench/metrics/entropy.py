"""Kozachenko–Leonenko k-nearest-neighbour entropy of the latents, in nats.

    H = ψ(N) − ψ(k) + log V_d + (d/N) Σ_i log ρ_k(i)

with ρ_k(i) the Euclidean distance from sample i to its k-th nearest *other* sample,
V_d = π^{d/2} / Γ(d/2 + 1) the volume of the unit d-ball and ψ the digamma function
(Kozachenko & Leonenko 1987; the form of Kraskov, Stögbauer & Grassberger 2004, eq. 20).
The results report H/d ("entropy_per_dim"), as the paper does.

Exactness. ρ_k is an *exact* k-NN distance (float64, from coordinate differences),
never an approximation: ``bench.metrics.knn.knn_radius`` uses scipy's cKDTree for d ≤ 8
and above that a tiled search whose float32 matrix products only *shortlist*
candidates, with a rounding bound that provably keeps the k nearest (see that module;
the tests check it against brute force, near-ties included). Both honour the thread
count (``threads``, default torch's, which the harness sets from the suite's
``runtime.num_threads``). At 50,000 × 16 and 50,000 × 64 the search takes seconds on
one thread (``benchmarks/bench_metrics.py --knn`` prints the figures).

Duplicates. Collapsed latents can be bit-identical, making ρ_k = 0 and log ρ_k = −∞.
Each ρ_k is floored at ``floor = floor_rel × s`` where s = sqrt(mean_i ‖z_i − z̄‖²) is the
RMS spread of the latents about their centroid. The floor is scale-relative, so H/d
stays invariant to a rescaling of z (H shifts by d·log a, as it should), and the default
floor_rel = 1e-6 sits about ten times above float32 resolution (≈ 6e-8 relative):
distances below it are rounding noise of the stored latents, not geometry. The fraction
of exactly-zero ρ_k and the fraction floored are reported beside the value.

Bias. Like every k-NN entropy estimator, KL is biased at finite N when d is large
(the k-th neighbour is far relative to the scale on which the density varies); values
are comparable between runs with the same N, k and d, not as absolute entropies at
d ≳ 30. ``tests/test_metrics.py`` states the measured bias for Gaussians.
"""
from __future__ import annotations

import math

import numpy as np
from scipy.special import digamma, gammaln

from bench.core.errors import BenchError
from bench.metrics.inputs import as_latents
from bench.metrics.knn import knn_radius


def log_unit_ball_volume(d: int) -> float:
    """log V_d, V_d = π^{d/2} / Γ(d/2 + 1)."""
    return 0.5 * d * math.log(math.pi) - float(gammaln(0.5 * d + 1.0))


def kl_entropy(z, k: int = 20, *, groups=None, floor_rel: float = 1e-6, max_samples: int | None = None,
               seed: int = 0, threads: int | None = None) -> dict:
    """Kozachenko–Leonenko entropy (nats) of the rows of ``z``; see the module docstring.

    ``max_samples``: estimate on a seeded uniform subsample of at most this many rows
    (the estimator is consistent for any N; ``n`` in the result is the N used, and
    ψ(N) uses it). ``groups`` (labels) only organise the k-NN search. ``threads``: CPU
    threads for it (default: ``torch.get_num_threads()``). Raises BenchError for
    non-finite latents or k ≥ N.
    """
    z = as_latents(z, "latents")
    if not (isinstance(k, int) and k >= 1):
        raise BenchError(f"k must be a positive integer, got {k!r}")
    if not floor_rel > 0:
        raise BenchError(f"floor_rel must be > 0, got {floor_rel}")
    n_all, d = z.shape
    groups = None if groups is None else np.asarray(groups)
    subsampled = max_samples is not None and n_all > max_samples
    if subsampled:
        rows = np.sort(np.random.default_rng(seed).choice(n_all, size=max_samples, replace=False))
        z = z[rows]
        groups = None if groups is None else groups[rows]
    n = z.shape[0]
    if n <= k:
        raise BenchError(f"entropy with k = {k} needs more than {k} samples, got {n}")
    out = {"k": k, "n": int(n), "n_total": int(n_all), "d": int(d), "subsampled": bool(subsampled),
           "units": "nats", "floor_rel": floor_rel}
    spread = float(np.sqrt(np.mean(np.sum((z - z.mean(axis=0)) ** 2, axis=1))))
    if spread == 0:
        reason = "all latents are identical: the entropy is -inf"
        return {**out, "entropy": None, "entropy_reason": reason, "entropy_per_dim": None,
                "entropy_per_dim_reason": reason, "zero_knn_fraction": 1.0, "floored_fraction": 1.0,
                "floor": None, "floor_reason": reason}
    rho, method = knn_radius(z, k, groups, threads=threads)
    floor = floor_rel * spread
    h = (float(digamma(n)) - float(digamma(k)) + log_unit_ball_volume(d)
         + d * float(np.mean(np.log(np.maximum(rho, floor)))))
    return {**out, "entropy": h, "entropy_per_dim": h / d, "method": method,
            "zero_knn_fraction": float(np.mean(rho == 0)), "floored_fraction": float(np.mean(rho < floor)),
            "floor": floor, "spread": spread}
