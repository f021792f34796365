"""Neural-collapse metrics that stay defined when the feature width d is below K − 1, from
class moments that can be accumulated in one streaming pass.

Papyan, Han & Donoho's (2020) NC1 = Tr(Σ_W Σ_B⁺)/K and NC2 (equal norms and angles of a
simplex equiangular tight frame, cos = −1/(K − 1)) assume the class means can span K − 1
dimensions. With d < K − 1 (LPC's narrow latents: d = 32 for CIFAR-100's K = 100; d = 8
for digits' K = 10) a simplex ETF is unattainable, so NC2's max-angle term cannot reach 0,
and Σ_B is full rank in d dimensions with small eigenvalues that make the pseudo-inverse
NC1 ill-conditioned. These stay meaningful at every d (rhubarbwu/neural-collapse's
formulas are the reference; μ_c the class means, μ_G the global mean, σ_c² = mean squared
distance of class c's samples to μ_c):

* **CDNV** (Galanti, György & Hutter 2021, "On the role of neural collapse in transfer
  learning"): mean over class pairs i < j of (σ_i² + σ_j²) / (2‖μ_i − μ_j‖²). Valid at any d.
* **NC1 in three forms**: ``nc1_pinv`` = Tr(Σ_W Σ_B⁺)/K (numpy's pinv cut-off; as
  ``geometry``'s NC1); ``nc1_truncated`` = Tr(Σ_W Σ_B⁺)/K with Σ_B⁺ built from its top
  r = min(d, K − 1) eigen-directions only (drops the numerically-zero ones beyond the
  K − 1 a mean spread can have; at d < K − 1 it keeps all d, and inherits the
  ill-conditioning); ``nc1_ratio`` = Tr Σ_W / Tr Σ_B (Hui et al. 2022; Tirer et al. 2023):
  no inverse, valid at any d.
* **GNC2** hyperspherical uniformity (Liu et al. 2023, "Generalizing and decoupling neural
  collapse via hyperspherical uniformity gap", ICLR): the population variance, over class
  pairs i < j, of a kernel of the unit-normalised centred means u_c = (μ_c − μ_G)/‖μ_c − μ_G‖.
  Kernel: the Euclidean distance ‖u_i − u_j‖ (rhubarbwu's default; Liu et al. also use a
  log-inverse-distance energy). 0 = all pairs equally far apart (a simplex ETF when
  d ≥ K − 1); at d < K − 1 its minimum is above 0, but it still ranks how uniformly the
  means cover the sphere.
* **UNC3** uniform duality (Wu & Papyan 2024, "Linguistic collapse"): the coefficient of
  variation over classes of cos(w_c, μ_c − μ_G), w_c the classifier's row c. 0 = every
  classifier row equally aligned with its class mean; needs the classifier weight.
* ``ncc_accuracy``: accuracy of the nearest-class-centre rule argmin_c ‖x − μ_c‖ with the
  *training* means, against the true labels.

Which figure holds where (``validity(d, K)``): d ≥ K − 1: all of them, NC2's simplex-ETF
terms included; d < K − 1: CDNV, ``nc1_ratio``, GNC2, UNC3 and NCC accuracy; ``nc1_pinv``/
``nc1_truncated`` are reported but flagged ill-conditioned, and NC2 max-angle cannot reach 0.

Statistics: Σ_W = (1/N) Σ_i (x_i − μ_{y_i})(x_i − μ_{y_i})ᵀ, Σ_B = (1/K) Σ_c (μ_c − μ_G)(μ_c −
μ_G)ᵀ, as in ``bench.metrics.geometry``. ``ClassMoments`` accumulates them batch by batch
with Chan et al.'s pairwise update (per class: count, mean; summed over classes: the
within-class scatter), so no difference of large raw moments is ever taken: a collapsed
class with σ² ~ 1e-13 keeps its digits. Memory O(K·d + d²), one pass.
"""
from __future__ import annotations

import numpy as np

from bench.core.errors import BenchError
from bench.metrics.geometry import nc1 as nc1_pinv_of
from bench.metrics.geometry import nearest_mean
from bench.metrics.rank import RANK_RTOL, effective_rank, numerical_rank

COLLAPSE_KEYS = ("cdnv", "nc1_pinv", "nc1_truncated", "nc1_ratio", "gnc2", "unc3", "effective_rank",
                 "numerical_rank", "ncc_accuracy")


class ClassMoments:
    """Per-class counts and means and the summed within-class scatter, updated per batch."""

    def __init__(self, num_classes: int, dim: int) -> None:
        self.k, self.d = int(num_classes), int(dim)
        self.counts = np.zeros(self.k, dtype=np.int64)
        self.means = np.zeros((self.k, self.d))
        self.class_m2 = np.zeros(self.k)                 # Σ_{i in c} ‖x_i − μ_c‖²
        self.scatter_w = np.zeros((self.d, self.d))      # Σ_c Σ_{i in c} (x_i − μ_c)(x_i − μ_c)ᵀ
        self.nonfinite = 0

    def add(self, x, y) -> None:
        x = np.asarray(x.detach().cpu().numpy() if hasattr(x, "detach") else x, dtype=np.float64)
        y = np.asarray(y.detach().cpu().numpy() if hasattr(y, "detach") else y, dtype=np.int64)
        if x.ndim != 2 or x.shape[1] != self.d or y.shape != (x.shape[0],):
            raise BenchError(f"features of shape {tuple(x.shape)} / labels {tuple(y.shape)} do not match "
                             f"({self.d} dimensions)")
        if y.size and (y.min() < 0 or y.max() >= self.k):
            raise BenchError(f"a label is outside 0..{self.k - 1}")
        bad = ~np.isfinite(x).all(axis=1)
        if bad.any():
            self.nonfinite += int(bad.sum())
            x, y = x[~bad], y[~bad]
        for c in np.unique(y):
            xc = x[y == c]
            nb = xc.shape[0]
            mb = xc.mean(axis=0)
            centred = xc - mb
            na = self.counts[c]
            delta = mb - self.means[c]
            n = na + nb
            self.scatter_w += centred.T @ centred + (na * nb / n) * np.outer(delta, delta)
            self.class_m2[c] += float(np.einsum("ij,ij->", centred, centred)) + na * nb / n * float(delta @ delta)
            self.means[c] += delta * (nb / n)
            self.counts[c] = n

    # ----- derived statistics
    @property
    def n(self) -> int:
        return int(self.counts.sum())

    def global_mean(self) -> np.ndarray:
        return (self.counts[:, None] * self.means).sum(axis=0) / max(1, self.n)

    def sigma_w(self) -> np.ndarray:
        return self.scatter_w / self.n

    def sigma_b(self) -> np.ndarray:
        m = self.means - self.global_mean()
        return m.T @ m / self.k

    def class_variances(self) -> np.ndarray:
        return self.class_m2 / self.counts

    def total_covariance_eigenvalues(self) -> np.ndarray:
        """Eigenvalues (descending, ≥ 0) of the covariance of the centred features:
        (scatter_w + Σ_c n_c (μ_c − μ_G)(μ_c − μ_G)ᵀ) / N. Their square roots are the centred
        feature matrix's singular values up to the common factor √N."""
        m = self.means - self.global_mean()
        total = (self.scatter_w + (self.counts[:, None] * m).T @ m) / self.n
        return np.clip(np.linalg.eigvalsh(total)[::-1], 0.0, None)


def moments_of(x, y, num_classes: int) -> ClassMoments:
    x = np.asarray(x, dtype=np.float64)
    acc = ClassMoments(num_classes, x.shape[1])
    acc.add(x, y)
    return acc


def cdnv(means: np.ndarray, variances: np.ndarray) -> float:
    """Galanti et al.'s CDNV: mean over pairs i < j of (σ_i² + σ_j²) / (2‖μ_i − μ_j‖²)."""
    k = means.shape[0]
    iu = np.triu_indices(k, 1)
    diff = means[:, None, :] - means[None, :, :]
    dist2 = np.einsum("ijk,ijk->ij", diff, diff)[iu]
    if np.any(dist2 == 0):
        raise BenchError("two class means coincide: CDNV is unbounded")
    return float(np.mean((variances[:, None] + variances[None, :])[iu] / (2.0 * dist2)))


def nc1_truncated(sigma_w: np.ndarray, sigma_b: np.ndarray, num_classes: int) -> float:
    """Tr(Σ_W Σ_B⁺)/K with Σ_B⁺ from the top min(d, K − 1) eigen-directions of Σ_B (positive ones)."""
    values, vectors = np.linalg.eigh(sigma_b)
    r = min(sigma_b.shape[0], num_classes - 1)
    values, vectors = values[::-1][:r], vectors[:, ::-1][:, :r]
    keep = values > 0
    if not keep.any():
        raise BenchError("Σ_B is zero: NC1 is undefined")
    v, lam = vectors[:, keep], values[keep]
    # Tr(Σ_W V Λ⁻¹ Vᵀ) = Σ_j (v_jᵀ Σ_W v_j) / λ_j
    return float(np.sum(np.einsum("ij,ik,kj->j", v, sigma_w, v) / lam)) / num_classes


def gnc2(means: np.ndarray, global_mean: np.ndarray) -> float:
    """Variance over pairs i < j of ‖u_i − u_j‖ for the unit-normalised centred means."""
    m = means - global_mean
    norms = np.linalg.norm(m, axis=1)
    if np.any(norms == 0):
        raise BenchError("a centred class mean is zero: its direction is undefined")
    u = m / norms[:, None]
    k = u.shape[0]
    iu = np.triu_indices(k, 1)
    dist = np.sqrt(np.clip(2.0 - 2.0 * (u @ u.T), 0.0, None))[iu]
    return float(np.var(dist))


def unc3(weight: np.ndarray, means: np.ndarray, global_mean: np.ndarray) -> float:
    """Coefficient of variation over classes of cos(w_c, μ_c − μ_G)."""
    m = means - global_mean
    wn, mn = np.linalg.norm(weight, axis=1), np.linalg.norm(m, axis=1)
    if np.any(wn == 0) or np.any(mn == 0):
        raise BenchError("a classifier row or a centred class mean is zero: its cosine is undefined")
    cos = np.einsum("ij,ij->i", weight, m) / (wn * mn)
    mean = cos.mean()
    if mean == 0:
        raise BenchError("the mean cosine of classifier rows and class means is 0")
    return float(cos.std() / abs(mean))


def validity(d: int, k: int) -> str:
    if d >= k - 1:
        return (f"d = {d} ≥ K − 1 = {k - 1}: a simplex ETF is attainable; every NC figure holds "
                f"(NC1 pinv/truncated, NC2, CDNV, NC1 ratio, GNC2)")
    return (f"d = {d} < K − 1 = {k - 1}: no simplex ETF fits; CDNV, NC1 ratio (Tr Σ_W / Tr Σ_B), GNC2 and "
            f"UNC3 hold; NC1 pinv/truncated are ill-conditioned and NC2's max-angle cannot reach 0")


def _guard(out: dict, key: str, fn) -> None:
    try:
        value = fn()
    except BenchError as exc:
        out[key], out[f"{key}_reason"] = None, str(exc)
        return
    except np.linalg.LinAlgError as exc:
        out[key], out[f"{key}_reason"] = None, f"linear algebra failed: {exc}"
        return
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        out[key], out[f"{key}_reason"] = None, "not finite"
    else:
        out[key] = value


def collapse_metrics(acc: ClassMoments, *, classifier_weight: np.ndarray | None = None,
                     centres: np.ndarray | None = None, x: np.ndarray | None = None, y: np.ndarray | None = None,
                     rtol: float = RANK_RTOL, min_per_class: int = 2) -> dict:
    """Every COLLAPSE_KEYS value from one set of moments; a value that cannot be taken is None
    with a ``<key>_reason``. ``centres`` (the training means) and the features ``x``/labels ``y``
    give NCC accuracy; ``classifier_weight`` (K, d) gives UNC3."""
    k, d = acc.k, acc.d
    out: dict = {"n": acc.n, "d": d, "K": k}
    if acc.nonfinite:
        out["n_nonfinite"] = acc.nonfinite
    few = np.flatnonzero(acc.counts < min_per_class)
    if acc.n == 0 or few.size:
        c = int(few[0]) if few.size else 0
        reason = (f"class {c} has {int(acc.counts[c])} finite sample(s); within-class statistics need "
                  f"{min_per_class}") if acc.n else "no finite samples"
        out.update({key: None for key in COLLAPSE_KEYS})
        out.update({f"{key}_reason": reason for key in COLLAPSE_KEYS})
    else:
        sw, sb, gm = acc.sigma_w(), acc.sigma_b(), acc.global_mean()
        tb = float(np.trace(sb))
        out["validity"] = validity(d, k)
        out["sigma_w_trace"], out["sigma_b_trace"] = float(np.trace(sw)), tb
        _guard(out, "cdnv", lambda: cdnv(acc.means, acc.class_variances()))
        _guard(out, "nc1_pinv", lambda: nc1_pinv_of(sw, sb, k) if tb > 0 else _undefined("Σ_B is zero"))
        _guard(out, "nc1_truncated", lambda: nc1_truncated(sw, sb, k))
        _guard(out, "nc1_ratio", lambda: float(np.trace(sw)) / tb if tb > 0 else _undefined("Σ_B is zero"))
        _guard(out, "gnc2", lambda: gnc2(acc.means, gm))
        if classifier_weight is None or np.shape(classifier_weight) != (k, d):
            out["unc3"], out["unc3_reason"] = None, "no classifier weight acting on these features"
        else:
            _guard(out, "unc3", lambda: unc3(np.asarray(classifier_weight, dtype=np.float64), acc.means, gm))
        s = np.sqrt(acc.total_covariance_eigenvalues())
        _guard(out, "effective_rank", lambda: effective_rank(s) if s.max() > 0 else _undefined("zero variance"))
        out["numerical_rank"], out["rank_rtol"] = numerical_rank(s, rtol), rtol
    if centres is None or x is None or y is None:
        out.setdefault("ncc_accuracy", None)
        out.setdefault("ncc_accuracy_reason", "no training centres given")
    else:
        x = np.asarray(x, dtype=np.float64)
        finite = np.isfinite(x).all(axis=1)
        if not finite.all() or x.shape[0] == 0:
            out["ncc_accuracy"], out["ncc_accuracy_reason"] = None, "non-finite or no features"
        else:
            out["ncc_accuracy"] = float(np.mean(nearest_mean(x, centres) == np.asarray(y)))
            out.pop("ncc_accuracy_reason", None)
    return out


def _undefined(reason: str):
    raise BenchError(reason)
