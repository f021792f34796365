"""Exact k-th-nearest-neighbour distances, for the Kozachenko–Leonenko entropy.

``knn_radius(z, k)`` returns, for every row of z, the Euclidean distance to its k-th
nearest *other* row, exactly (float64, from coordinate differences). Two paths:

* "cKDTree" (scipy) for d ≤ ``kdtree_max_dim`` (default 8), where a k-d tree prunes
  well (50,000 points, one thread: 0.7 s at d = 4 and 2.3 s at d = 8, against 3.8 s
  tiled; 6.9 s at d = 10, against 4.1 s). It runs with ``threads`` workers (default:
  torch's thread count, which the harness sets from the suite's ``runtime.num_threads``),
  never "all cores": on a shared machine ``workers=-1`` ran about 4× slower than a
  one-thread brute force (issue #13).
* "tiled" for larger d, where a k-d tree degenerates to a slow brute force (50,000 × 16:
  45 s on one thread here). The points are cut into tiles of ≤ ``tile`` rows by
  recursive median splits of the highest-variance coordinate (within each label group
  when the groups are at least a quarter tile), so a tile is spatially compact. Every
  pair of tiles is compared once, through one float32 matrix product whose rows serve
  the first tile's points and whose columns the second's, and only entries that can
  matter are kept:

  1. an upper bound τ_i ≥ ρ_k(i)² for every point: the k-th smallest of upper bounds of
     k distinct points, taken from its own tile and an evenly spaced sample of the data;
  2. a pair of tiles whose bounding balls are farther apart than every τ of both is
     skipped; otherwise each entry whose *lower* bound is ≤ τ_i becomes a candidate
     (minima over groups of 32 entries say where to look, so a block is read twice —
     once per orientation — and only the groups that can hold one are searched);
  3. per point, τ'_i = the k-th smallest upper bound among its candidates; candidates
     whose lower bound exceeds τ'_i are dropped, the rest recomputed in float64 from
     coordinate differences, and ρ_k(i) is the k-th smallest of those.

  Why this is exact: every float32 squared distance D̃ is within E of the true D (below),
  so [D̃ − E, D̃ + E] brackets D. Take j with D_ij ≤ ρ_k(i)². Its lower bound D̃_ij − E
  ≤ ρ_k(i)² ≤ τ_i, and its tiles' gap is ≤ √D_ij, so the pair was compared and j became
  a candidate; and ρ_k(i)² ≤ τ'_i (k distinct candidates have D ≤ their upper bound ≤
  τ'_i), so j survives step 3. The k nearest points are therefore all recomputed, and
  the k-th smallest exact distance among the candidates is ρ_k(i). Only float64 rounding
  of the coordinates (relative 1e-16) remains, as in any brute force. Bit-identical rows
  are first capped at k + 1 copies (``_cap_duplicates``), which changes no ρ_k and keeps
  collapsed latents from making every copy every other copy's candidate.

  The bound E. D̃ is one float32 dot product of length d + 2 on centred, rescaled
  coordinates ([q, ‖q‖², 1] · [−2r, 1, ‖r‖²]); rounding the inputs to float32 moves it by
  at most 2.1u(‖q‖ + ‖r‖)², the summation (any order, FMA or not) by γ_{d+1}(1 + 3u)
  (‖q‖ + ‖r‖)², with u = 2⁻²⁴ and γ_m = mu/(1 − mu) (Higham, *Accuracy and Stability of
  Numerical Algorithms*, §3.1). E is twice their sum with ‖q‖, ‖r‖ replaced by the radii
  of the two tiles about the shared centre, which is why tiles are centred and small.
  torch's float32 matmul precision is held at "highest" meanwhile (no bfloat16/TF32).

Thread use: all work is torch (matrix products, reductions) and numpy on the calling
thread; torch uses ``threads`` threads (default: its current setting).
"""
from __future__ import annotations

import contextlib
import math

import numpy as np
import torch
from scipy.spatial import cKDTree

from bench.core.errors import BenchError

TILE = 1024            # rows per tile: one 1024 × 1024 float32 block is 4 MiB (cache-sized)
CHUNK = 32             # entries per chunk minimum
SAMPLE = 4096          # evenly spaced points every tile is compared with for τ
_U = 2.0 ** -24        # float32 unit roundoff
# padding rows hold this instead of inf: a BLAS kernel may multiply padding by 0, and
# inf · 0 is NaN; padded entries come out ≥ _PAD, far above any threshold (≤ _CAP)
_PAD = 1e30
_CAP = 1e28


@contextlib.contextmanager
def torch_threads(threads: int | None):
    """Run torch with ``threads`` threads (None: leave the current setting); fp32 matmul
    precision "highest" throughout, as the error bound assumes true float32 products."""
    old_threads, old_precision = torch.get_num_threads(), torch.get_float32_matmul_precision()
    try:
        if threads:
            torch.set_num_threads(int(threads))
        torch.set_float32_matmul_precision("highest")
        yield
    finally:
        torch.set_num_threads(old_threads)
        torch.set_float32_matmul_precision(old_precision)


def knn_radius(z: np.ndarray, k: int, groups: np.ndarray | None = None, *, kdtree_max_dim: int = 8,
               threads: int | None = None, tile: int = TILE) -> tuple[np.ndarray, str]:
    """Exact distance from each row of ``z`` to its k-th nearest other row (float64).

    ``groups`` (any labels) only seeds the tiling when the groups are large enough to
    fill tiles; the answer does not depend on it. ``threads``: CPU threads (default:
    ``torch.get_num_threads()``). Returns (distances, method).
    """
    z = np.ascontiguousarray(z, dtype=np.float64)
    n, d = z.shape
    if k < 1:
        raise BenchError(f"k must be >= 1, got {k}")
    if n <= k:
        raise BenchError(f"the {k}-th nearest neighbour needs more than {k} samples, got {n}")
    threads = int(threads) if threads else torch.get_num_threads()
    if d <= kdtree_max_dim:
        # each point is its own first neighbour at distance 0 (or a duplicate of it is;
        # either way the (k+1)-th smallest distance including self is the k-th excluding it)
        dist, _ = cKDTree(z).query(z, k=[k + 1], workers=threads)
        return dist[:, 0].astype(np.float64), f"exact (scipy cKDTree, {threads} thread(s))"
    method = f"exact (tiled float32 bounds + float64, {threads} thread(s))"
    keep, location = _cap_duplicates(z, k + 1)
    with torch_threads(threads):
        rho = _TiledSearch(z[keep], k, None if groups is None else np.asarray(groups)[keep], tile).run()
    # copies of one location have the same neighbours, hence the same ρ_k
    first = np.full(int(location.max()) + 1, -1)
    first[location[keep][::-1]] = np.arange(len(keep))[::-1]
    return rho[first[location]], method


def _cap_duplicates(z: np.ndarray, cap: int) -> tuple[np.ndarray, np.ndarray]:
    """(indices keeping at most ``cap`` copies of each bit-identical row, location id per row).

    Collapsed latents can hold thousands of identical rows, each the others' neighbour at
    distance 0. With cap = k + 1 copies a point keeps k zero-distance neighbours (so ρ_k = 0
    where it should be) and no other point's k-th distance changes: it never needs more
    than k copies of one location. The search then stays O(candidates) instead of O(copies²).
    """
    rows = np.ascontiguousarray(z).view(np.dtype((np.void, z.dtype.itemsize * z.shape[1]))).ravel()
    _, location, counts = np.unique(rows, return_inverse=True, return_counts=True)
    location = location.ravel()
    if counts.max() <= cap:
        return np.arange(len(z)), location
    order = np.argsort(location, kind="stable")
    start = np.concatenate([[0], np.cumsum(counts)[:-1]])
    rank = np.empty(len(z), dtype=np.int64)
    rank[order] = np.arange(len(z)) - start[location[order]]
    return np.flatnonzero(rank < cap), location


def bisect(x: np.ndarray, parts: list[np.ndarray], size: int) -> list[np.ndarray]:
    """Split every index array of ``parts`` into ⌈len/size⌉ pieces of near-equal size, by
    recursive splits of the highest-variance coordinate (pieces in a fixed order)."""
    out, stack = [], [(idx, -(-len(idx) // size)) for idx in reversed(parts)]
    while stack:
        idx, pieces = stack.pop()
        if pieces <= 1:
            out.append(np.sort(idx))
            continue
        coord = int(np.argmax(x[idx].var(axis=0)))
        left = pieces // 2
        cut = len(idx) * left // pieces
        order = np.argpartition(x[idx, coord], cut)
        stack.extend([(idx[order[cut:]], pieces - left), (idx[order[:cut]], left)])
    return out


class _TiledSearch:
    """State of one exact search (see the module docstring); ``run()`` returns ρ_k."""

    def __init__(self, z: np.ndarray, k: int, groups, tile: int) -> None:
        n, d = z.shape
        self.z, self.k, self.n, self.d = z, k, n, d
        centred = z - z.mean(axis=0)
        spread = math.sqrt(float(np.mean(np.einsum("ij,ij->i", centred, centred))))
        # unit RMS spread: float32 neither overflows nor underflows whatever z's scale
        x = centred / spread if spread > 0 else centred
        # 2 × (input rounding + summation error) per unit of (‖q‖ + ‖r‖)², and an absolute
        # term for float32 underflow of tiny coordinates
        m = d + 1
        self.eps = 2.0 * (m * _U / (1 - m * _U) * (1 + 3 * _U) + 2.1 * _U)
        self.abs_err = 1e-30
        parts = [np.arange(n)]
        if groups is not None:
            _, inverse = np.unique(np.asarray(groups), return_inverse=True)
            members = [np.flatnonzero(inverse == g) for g in range(int(inverse.max()) + 1)]
            if min(len(g) for g in members) >= tile // 4:     # small groups would make tiny tiles
                parts = members
        self.tiles = bisect(x, parts, tile)
        self.tile_x = [torch.from_numpy(x[idx]) for idx in self.tiles]        # float64, per tile
        self.centres = [t.mean(dim=0) for t in self.tile_x]
        self.refs = [self._operand(t, c, query=False) for t, c in zip(self.tile_x, self.centres)]
        self.radii = np.array([norm for _, norm in self.refs])
        self.x = x
        self.candidates: list[list[tuple[np.ndarray, np.ndarray, np.ndarray, float]]] = [[] for _ in self.tiles]

    # ----- float32 operands --------------------------------------------------------
    def _operand(self, x: torch.Tensor, centre: torch.Tensor, *, query: bool) -> tuple[torch.Tensor, float]:
        """(rows padded to a multiple of CHUNK, d + 2) float32 and the rows' max norm about
        ``centre``: queries [q, ‖q‖², 1], references [−2r, 1, ‖r‖²]; padding rows give ≥ _PAD."""
        v = x - centre
        sq = (v * v).sum(dim=1)
        rows, d = -(-x.shape[0] // CHUNK) * CHUNK, self.d
        out = torch.zeros((rows, d + 2), dtype=torch.float32)
        if query:
            out[:x.shape[0], :d] = v
            out[:, d], out[:, d + 1] = _PAD, 1.0
            out[:x.shape[0], d] = sq
        else:
            out[:x.shape[0], :d] = -2.0 * v
            out[:, d], out[:, d + 1] = 1.0, _PAD
            out[:x.shape[0], d + 1] = sq
        return out, float(sq.max().sqrt())

    def _block(self, a: int, b: int) -> tuple[torch.Tensor, float]:
        """D̃ (padded a × padded b) ≈ squared distances, and its error bound E."""
        (q, q_norm), (r, r_norm) = self._operand(self.tile_x[a], self.centres[b], query=True), self.refs[b]
        return q @ r.T, self.eps * (q_norm + r_norm) ** 2 + self.abs_err

    # ----- pass 1: an upper bound τ of ρ_k² per point ------------------------------
    def _upper_bounds(self) -> np.ndarray:
        """τ_i ≥ ρ_k(i)²: the k-th smallest of upper bounds D̃ + E of k distinct points,
        the chunk minima of i's own tile and of an evenly spaced sample of the rest."""
        k = self.k
        tile_of = np.empty(self.n, dtype=np.int64)
        for t, idx in enumerate(self.tiles):
            tile_of[idx] = t
        sample = np.unique(np.linspace(0, self.n - 1, min(SAMPLE, self.n)).astype(np.int64))
        ref, s_norm = self._operand(torch.from_numpy(self.x[sample]), torch.zeros(self.d, dtype=torch.float64),
                                    query=False)
        tau = np.empty(self.n)
        for a, idx in enumerate(self.tiles):
            rows = len(idx)
            own, own_err = self._block(a, a)
            own[torch.arange(rows), torch.arange(rows)] = torch.inf      # not its own neighbour
            bounds = [self._chunk_min_rows(own)[:rows].double() + own_err]
            q, q_norm = self._operand(self.tile_x[a], torch.zeros(self.d, dtype=torch.float64), query=True)
            far = q @ ref.T
            far[:, torch.from_numpy(np.flatnonzero(tile_of[sample] == a))] = torch.inf  # counted in `own`
            bounds.append(self._chunk_min_rows(far)[:rows].double() + self.eps * (q_norm + s_norm) ** 2)
            both = torch.cat(bounds, dim=1)
            tau[idx] = both.kthvalue(k, dim=1).values.numpy() if both.shape[1] >= k else np.inf
            self._extract(a, a, own, own_err, tau[idx], None)
        return np.minimum(tau, _CAP)

    @staticmethod
    def _chunk_min_rows(block: torch.Tensor) -> torch.Tensor:
        """Minimum of each row over each of its CHUNK strided column groups: (rows, cols / CHUNK)."""
        rows, cols = block.shape
        return block.view(rows, CHUNK, cols // CHUNK).amin(dim=1)

    # ----- pass 2: candidates from every pair of tiles ------------------------------
    def _extract(self, a: int, b: int, block: torch.Tensor, err: float, tau_a: np.ndarray,
                 tau_b: np.ndarray | None) -> None:
        """Record the entries of ``block`` whose lower bound D̃ − E is ≤ τ: for the rows
        (points of tile a) and, when ``tau_b`` is given, for the columns (tile b).

        Chunk minima say which groups of CHUNK entries can hold one; those groups are
        gathered, unless they are most of the block, which is then compared whole."""
        rows, cols = block.shape
        thr_a = self._threshold(tau_a, err, rows)
        hit_r, hit_s = torch.nonzero(self._chunk_min_rows(block) <= thr_a[:, None], as_tuple=True)
        if 4 * hit_r.numel() * CHUNK > block.numel():
            r, c = torch.nonzero(block <= thr_a[:, None], as_tuple=True)
            self._record(a, r, self.tiles[b], c, block[r, c], err)
        elif hit_r.numel():
            col = hit_s[:, None] + (cols // CHUNK) * torch.arange(CHUNK)
            values = block[hit_r[:, None], col]
            h, t = torch.nonzero(values <= thr_a[hit_r][:, None], as_tuple=True)
            self._record(a, hit_r[h], self.tiles[b], col[h, t], values[h, t], err)
        if tau_b is None:
            return
        thr_b = self._threshold(tau_b, err, cols)
        step = rows // CHUNK
        hit_s, hit_c = torch.nonzero(block.view(CHUNK, step, cols).amin(dim=0) <= thr_b[None, :], as_tuple=True)
        if 4 * hit_c.numel() * CHUNK > block.numel():
            r, c = torch.nonzero(block <= thr_b[None, :], as_tuple=True)
            self._record(b, c, self.tiles[a], r, block[r, c], err)
        elif hit_c.numel():
            row = hit_s[:, None] + step * torch.arange(CHUNK)
            values = block[row, hit_c[:, None]]
            h, t = torch.nonzero(values <= thr_b[hit_c][:, None], as_tuple=True)
            self._record(b, hit_c[h], self.tiles[a], row[h, t], values[h, t], err)

    @staticmethod
    def _threshold(tau: np.ndarray, err: float, padded: int) -> torch.Tensor:
        """float32 thresholds τ + E rounded up (padding rows: −inf, nothing passes)."""
        thr = np.full(padded, -np.inf, dtype=np.float32)
        up = np.minimum(tau + err, _CAP).astype(np.float32)
        thr[:len(tau)] = np.nextafter(up, np.float32(np.inf))
        return torch.from_numpy(thr)

    def _record(self, tile: int, local: torch.Tensor, other: np.ndarray, pos: torch.Tensor,
                values: torch.Tensor, err: float) -> None:
        if local.numel():
            self.candidates[tile].append((local.numpy(), other[pos.numpy()], values.numpy(), err))

    # ----- pass 3: exact distances of the surviving candidates ----------------------
    def _finish(self, a: int) -> np.ndarray:
        """Exact ρ_k of tile a's points from its candidates."""
        k, idx = self.k, self.tiles[a]
        found, self.candidates[a] = self.candidates[a], []
        local = np.concatenate([c[0] for c in found])
        other = np.concatenate([c[1] for c in found])
        approx = np.concatenate([c[2] for c in found]).astype(np.float64)
        err = np.concatenate([np.full(len(c[0]), c[3]) for c in found])
        kth_upper = kth_per_row(local, approx + err, k, len(idx))
        keep = approx - err <= kth_upper[local]
        local, other = local[keep], other[keep]
        diff = self.z[idx[local]] - self.z[other]
        return np.sqrt(kth_per_row(local, np.einsum("ij,ij->i", diff, diff), k, len(idx)))

    def run(self) -> np.ndarray:
        tau = self._upper_bounds()
        tau_max = np.array([tau[idx].max() for idx in self.tiles])
        centres = torch.stack(self.centres).numpy()
        gaps = np.linalg.norm(centres[:, None, :] - centres[None, :, :], axis=2)
        gaps = np.maximum(gaps - self.radii[:, None] - self.radii[None, :], 0.0) * (1 - 1e-9)
        rho = np.empty(self.n)
        for a in range(len(self.tiles)):
            for b in range(a + 1, len(self.tiles)):
                # every point of b is at least gaps[a, b] from every point of a
                if gaps[a, b] ** 2 > max(tau_max[a], tau_max[b]):
                    continue
                block, err = self._block(a, b)
                self._extract(a, b, block, err, tau[self.tiles[a]], tau[self.tiles[b]])
            rho[self.tiles[a]] = self._finish(a)     # every pair with tile a is done
        return rho


def kth_per_row(rows: np.ndarray, values: np.ndarray, k: int, n_rows: int) -> np.ndarray:
    """k-th smallest (1-based) of ``values`` within each row id 0..n_rows−1."""
    counts = np.bincount(rows, minlength=n_rows)
    if counts.min() < k:   # impossible by construction (module docstring); never guess
        raise BenchError(f"internal error in the exact k-NN search: a point has {counts.min()} < {k} candidates")
    order = np.argsort(rows, kind="stable")
    start = np.concatenate([[0], np.cumsum(counts)[:-1]])
    if counts.max() * n_rows <= 8 * len(rows):     # rows of similar length: one dense partition
        sorted_rows = rows[order]
        dense = np.full((n_rows, counts.max()), np.inf)
        dense[sorted_rows, np.arange(len(rows)) - start[sorted_rows]] = values[order]
        return np.partition(dense, k - 1, axis=1)[:, k - 1]
    order = np.lexsort((values, rows))
    return values[order][start + k - 1]
