"""Kozachenko–Leonenko k-nearest-neighbour entropy of the latents, in nats.

    H = ψ(N) − ψ(k) + log V_d + (d/N) Σ_i log ρ_k(i)

with ρ_k(i) the Euclidean distance from sample i to its k-th nearest *other* sample,
V_d = π^{d/2} / Γ(d/2 + 1) the volume of the unit d-ball and ψ the digamma function
(Kozachenko & Leonenko 1987; the form of Kraskov, Stögbauer & Grassberger 2004, eq. 20).
The results report H/d ("entropy_per_dim"), as the paper does.

Exactness. All arithmetic is float64. ρ_k is an *exact* k-NN distance, never a squared
distance and never an approximation:

* d ≤ ``kdtree_max_dim`` (16): scipy's cKDTree, which computes true distances.
* larger d: a blocked exact search (``knn_radius``). Points are grouped (by class when
  labels are given); each query block is compared with each reference block through
  the Gram expansion on block-centred coordinates to shortlist ``k + extra``
  candidates, whose distances are then recomputed once from coordinate differences.
  A whole reference block is skipped for a query only when the triangle inequality
  proves it cannot hold a point closer than the query's current k-th candidate
  (‖q − c_b‖ − r_b ≥ that distance, c_b and r_b the block's centre and radius, with a
  slack covering the expansion's rounding). For well-separated classes (collapsed
  latents) this skips almost everything; for overlapping ones it degrades gracefully
  to the full N² comparison. The result is the true ρ_k up to float64 rounding at the
  scale of the data (a shortlist can only err between points whose squared distances
  differ by less than ~1e-13 of the squared spread; the tests check it against brute
  force to 1e-12).

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
import torch
from scipy.spatial import cKDTree
from scipy.special import digamma, gammaln

from bench.core.errors import BenchError
from bench.metrics.inputs import as_latents

_BLOCK_BYTES = 64 * 2**20        # one (queries × references) float64 distance tile
_MAX_QUERY_ROWS = 4096           # query rows per tile


def log_unit_ball_volume(d: int) -> float:
    """log V_d, V_d = π^{d/2} / Γ(d/2 + 1)."""
    return 0.5 * d * math.log(math.pi) - float(gammaln(0.5 * d + 1.0))


def knn_radius(z: np.ndarray, k: int, groups: np.ndarray | None = None, *,
               kdtree_max_dim: int = 16, extra: int = 8) -> tuple[np.ndarray, str]:
    """Exact distance from each row of ``z`` to its k-th nearest other row (float64).

    ``groups`` (any integer labels) only organises the search; the answer does not
    depend on it. Returns (distances, method).
    """
    n, d = z.shape
    if k < 1:
        raise BenchError(f"k must be >= 1, got {k}")
    if n <= k:
        raise BenchError(f"the {k}-th nearest neighbour needs more than {k} samples, got {n}")
    if d <= kdtree_max_dim:
        # each point is its own first neighbour at distance 0 (or a duplicate of it is;
        # either way the (k+1)-th smallest distance including self is the k-th excluding it)
        dist, _ = cKDTree(z).query(z, k=[k + 1], workers=-1)
        return dist[:, 0].astype(np.float64), "exact (scipy cKDTree)"
    return _blocked_knn(z, k, groups, extra), "exact (blocked distances)"


def _smallest(values: np.ndarray, count: int) -> np.ndarray:
    """Column indices of the ``count`` smallest entries of each row (unordered).

    Measured here: numpy's argpartition is faster on short rows, torch's top-k (on a
    zero-copy view) on long ones.
    """
    cols = values.shape[1]
    if count >= cols:
        return np.broadcast_to(np.arange(cols), values.shape).copy()
    if cols < 4096:
        return np.argpartition(values, count - 1, axis=1)[:, :count]
    return torch.from_numpy(values).topk(count, dim=1, largest=False, sorted=False).indices.numpy()


def _kth(values: np.ndarray, k: int) -> np.ndarray:
    """k-th smallest (1-based) of each row."""
    return np.partition(values, k - 1, axis=1)[:, k - 1]


def _blocked_knn(z: np.ndarray, k: int, groups: np.ndarray | None, extra: int) -> np.ndarray:
    x = np.ascontiguousarray(z, dtype=np.float64)
    n, d = x.shape
    m = min(k + extra, n - 1)                      # candidates kept per query
    if groups is None:
        inverse = np.zeros(n, dtype=np.int64)
    else:
        _, inverse = np.unique(np.asarray(groups), return_inverse=True)
    order = np.argsort(inverse, kind="stable")
    bounds = np.concatenate([[0], np.cumsum(np.bincount(inverse))])
    members = [order[bounds[g]:bounds[g + 1]] for g in range(len(bounds) - 1)]
    centres = np.stack([x[idx].mean(axis=0) for idx in members])
    radii = np.array([np.linalg.norm(x[idx] - c, axis=1).max() for idx, c in zip(members, centres)])
    # Candidate lists hold squared distances from the expansion, whose error is at most
    # ~4·d·eps·(‖q − c‖² + ‖r − c‖²) with every point within 2·spread of any block centre:
    # this slack keeps the pruning bound an upper bound of the true k-th distance.
    spread = np.linalg.norm(x - x.mean(axis=0), axis=1).max()
    slack = 32.0 * (d + 2) * np.finfo(np.float64).eps * spread ** 2

    best_d2 = np.full((n, m), np.inf)
    best_i = np.full((n, m), -1, dtype=np.int64)
    for a, idx_a in enumerate(members):
        _merge_block(x, idx_a, idx_a, centres[a], best_d2, best_i, m, same=True)
        if len(members) == 1:
            continue
        # a block whose every point is provably farther than a query's current k-th
        # candidate cannot change that query's ρ_k; the others are merged in one pass
        upper = np.sqrt(np.maximum(_kth(best_d2[idx_a], k), 0.0) + slack)
        lower = np.linalg.norm(x[idx_a][:, None, :] - centres[None, :, :], axis=2) - radii[None, :]
        need = lower * (1 - 1e-12) < upper[:, None]
        need[:, a] = False
        blocks = np.flatnonzero(need.any(axis=0))
        if blocks.size:
            refs = np.concatenate([members[b] for b in blocks])
            _merge_block(x, idx_a[need.any(axis=1)], refs, centres[a], best_d2, best_i, m, same=False)
    # the distances that count are recomputed once, from coordinate differences
    exact = np.empty((n, m))
    rows = max(1, _BLOCK_BYTES // (8 * m * d))
    for s in range(0, n, rows):
        diff = x[best_i[s:s + rows]] - x[s:s + rows, None, :]
        exact[s:s + rows] = np.sqrt(np.einsum("ijk,ijk->ij", diff, diff))
    return _kth(exact, k)


def _merge_block(x, queries, refs, centre, best_d2, best_i, m, *, same: bool) -> None:
    """Fold the nearest points of reference block ``refs`` into the queries' candidate lists."""
    r = x[refs] - centre
    r_sq = np.einsum("ij,ij->i", r, r)
    rows = max(1, min(_MAX_QUERY_ROWS, _BLOCK_BYTES // (8 * refs.size)))
    take = min(m, refs.size - (1 if same else 0))
    if take <= 0:
        return
    for s in range(0, queries.size, rows):
        qi = queries[s:s + rows]
        q = x[qi] - centre
        # squared distances by expansion on block-centred coordinates (a shortlist; the
        # final distances are recomputed exactly)
        d2 = q @ r.T
        d2 *= -2.0
        d2 += r_sq[None, :]
        d2 += np.einsum("ij,ij->i", q, q)[:, None]
        if same:  # queries are the block itself, in order: a point is not its own neighbour
            d2[np.arange(qi.size), np.arange(s, s + qi.size)] = np.inf
        cols = _smallest(d2, take)
        all_d2 = np.concatenate([best_d2[qi], np.take_along_axis(d2, cols, axis=1)], axis=1)
        all_i = np.concatenate([best_i[qi], refs[cols]], axis=1)
        keep = _smallest(all_d2, m)
        best_d2[qi] = np.take_along_axis(all_d2, keep, axis=1)
        best_i[qi] = np.take_along_axis(all_i, keep, axis=1)


def kl_entropy(z, k: int = 20, *, groups=None, floor_rel: float = 1e-6, max_samples: int | None = None,
               seed: int = 0, kdtree_max_dim: int = 16) -> dict:
    """Kozachenko–Leonenko entropy (nats) of the rows of ``z``; see the module docstring.

    ``max_samples``: estimate on a seeded uniform subsample of at most this many rows
    (the estimator is consistent for any N; ``n`` in the result is the N used, and
    ψ(N) uses it). Raises BenchError for non-finite latents or k ≥ N.
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
    rho, method = knn_radius(z, k, groups, kdtree_max_dim=kdtree_max_dim)
    floor = floor_rel * spread
    h = (float(digamma(n)) - float(digamma(k)) + log_unit_ball_volume(d)
         + d * float(np.mean(np.log(np.maximum(rho, floor)))))
    return {**out, "entropy": h, "entropy_per_dim": h / d, "method": method,
            "zero_knn_fraction": float(np.mean(rho == 0)), "floored_fraction": float(np.mean(rho < floor)),
            "floor": floor, "spread": spread}
