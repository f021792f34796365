"""Latent geometry: class separation ratio R, Σ_W, Σ_B, neural collapse NC1–NC4, and
coefficients of variation.

Conventions used by every function here (and recorded in the results):

* **Grouping by true labels.** Class c is the set of samples whose *true* label is c
  (not the predicted label, which would count a misclassified sample towards the class
  it was confused with and flatter every number). Each split is measured against its
  own class means; only NC4's nearest-centre rule uses the training means.
* **Statistics over samples.** With N samples, K classes, μ_c the mean latent of class c
  and μ_G the mean of *all* samples (Papyan, Han & Donoho 2020, "Prevalence of neural
  collapse during the terminal phase of deep learning training", PNAS 117(40)):

      Σ_W = (1/N) Σ_i (z_i − μ_{y_i})(z_i − μ_{y_i})ᵀ
      Σ_B = (1/K) Σ_c (μ_c − μ_G)(μ_c − μ_G)ᵀ

  (for balanced classes μ_G is also the mean of the class means).
* float64 throughout; the latents are float32 and convert exactly.
* Nothing becomes inf/NaN silently: an undefined value is ``None`` with a
  ``<key>_reason`` string beside it.
"""
from __future__ import annotations

import numpy as np

from bench.core.errors import BenchError
from bench.metrics.inputs import as_labels, as_latents, class_counts

GEOMETRY_KEYS = ("R_mean", "R_median", "n_on_own_mean", "sigma_w_trace", "sigma_w_mean_entry",
                 "sigma_b_trace", "nc1", "nc1_per_dim", "nc2_equinorm", "nc2_equiangular",
                 "nc2_max_angle", "nc3", "nc4", "cv_norm", "cv_abs")

# rows per block when an (N, K) distance table would be large
_BLOCK_BYTES = 32 * 2**20


def class_means(z: np.ndarray, y: np.ndarray, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """(K, d) class means and (K,) counts; every class must be present (BenchError otherwise)."""
    counts = class_counts(y, num_classes)
    order = np.argsort(y, kind="stable")
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    sums = np.add.reduceat(z[order], starts, axis=0)
    return sums / counts[:, None], counts


def _sq_dist_to_means(zc: np.ndarray, mc: np.ndarray) -> np.ndarray:
    """Squared distances (N, K) by expansion; only used to *rank* means, never as a value."""
    return (np.einsum("ij,ij->i", zc, zc)[:, None] - 2.0 * zc @ mc.T
            + np.einsum("ij,ij->i", mc, mc)[None, :])


def nearest_mean(z: np.ndarray, means: np.ndarray, exclude: np.ndarray | None = None) -> np.ndarray:
    """Index of the nearest mean for each sample (optionally never the one in ``exclude``).

    Data and means are centred on the means' centroid first so the expansion
    ‖a‖² − 2a·b + ‖b‖² does not lose precision to a large common offset.
    """
    centre = means.mean(axis=0)
    mc = means - centre
    rows = max(1, _BLOCK_BYTES // (8 * max(1, means.shape[0])))
    out = np.empty(z.shape[0], dtype=np.int64)
    for s in range(0, z.shape[0], rows):
        d2 = _sq_dist_to_means(z[s:s + rows] - centre, mc)
        if exclude is not None:
            d2[np.arange(d2.shape[0]), exclude[s:s + rows]] = np.inf
        out[s:s + rows] = d2.argmin(axis=1)
    return out


def separation_ratios(z: np.ndarray, y: np.ndarray, means: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-sample class separation ratio R_i (paper eq. 8) and the on-own-mean mask.

    R_i = min_{c ≠ y_i} ‖z_i − μ_c‖ / ‖z_i − μ_{y_i}‖, grouping by the true label y_i.
    Both distances are computed from coordinate differences (exact in float64), the
    expansion is only used to find which other mean is nearest. A sample sitting
    exactly on its own class mean (denominator 0; happens when a class has collapsed
    to bit-identical latents) has no finite R: it is flagged in the returned mask and
    its R_i is NaN — callers count it and leave it out of averages, never silently.
    """
    own = np.linalg.norm(z - means[y], axis=1)
    other_idx = nearest_mean(z, means, exclude=y)
    other = np.linalg.norm(z - means[other_idx], axis=1)
    on_own = own == 0.0
    ratio = np.full(z.shape[0], np.nan)
    np.divide(other, own, out=ratio, where=~on_own)
    return ratio, on_own


def within_class_covariance(z: np.ndarray, y: np.ndarray, means: np.ndarray) -> np.ndarray:
    """Σ_W = (1/N) Σ_i (z_i − μ_{y_i})(z_i − μ_{y_i})ᵀ, a (d, d) matrix (Papyan et al. 2020).

    Its trace is the mean squared distance of a sample to its class mean; the paper's
    table reports instead the *mean entry* of this matrix (sum of all d² entries / d²),
    which mixes variances with covariances of either sign. We report both, named.
    """
    centred = z - means[y]
    return centred.T @ centred / z.shape[0]


def between_class_covariance(means: np.ndarray, global_mean: np.ndarray) -> np.ndarray:
    """Σ_B = (1/K) Σ_c (μ_c − μ_G)(μ_c − μ_G)ᵀ with μ_G the mean of all samples (Papyan et al. 2020)."""
    m = means - global_mean
    return m.T @ m / means.shape[0]


def nc1(sigma_w: np.ndarray, sigma_b: np.ndarray, num_classes: int) -> float:
    """NC1 = Tr(Σ_W Σ_B⁺) / K (Papyan et al. 2020): within-class variability measured in the
    directions (and units) of the class-mean spread; → 0 under neural collapse.

    Σ_B⁺ is the Moore–Penrose pseudo-inverse (Σ_B has rank ≤ K − 1), with numpy's
    default cut-off for small eigenvalues. The paper also divides by d to compare layers
    of different widths (``nc1_per_dim`` in the results).
    """
    pinv = np.linalg.pinv(sigma_b, hermitian=True)
    # Tr(A B) = Σ_ij A_ij B_ji without forming the product
    return float(np.sum(sigma_w * pinv.T)) / num_classes


def nc2(means: np.ndarray, global_mean: np.ndarray) -> dict:
    """Papyan et al. (2020) NC2 on the centred class means M_c = μ_c − μ_G.

    * equinorm: std_c ‖M_c‖ / mean_c ‖M_c‖ (coefficient of variation; 0 = equal norms)
    * equiangular: std over pairs c ≠ c' of cos(M_c, M_c') (0 = all angles equal)
    * max_angle: mean over pairs c ≠ c' of |cos(M_c, M_c') + 1/(K − 1)|
      (0 = the simplex equiangular tight frame, the largest possible equal angles)
    Standard deviations are population ones (ddof = 0).
    """
    m = means - global_mean
    k = m.shape[0]
    norms = np.linalg.norm(m, axis=1)
    if np.any(norms == 0):
        reason = "a centred class mean is zero (a class mean equals the global mean): angles are undefined"
        return {"nc2_equinorm": None, "nc2_equinorm_reason": reason,
                "nc2_equiangular": None, "nc2_equiangular_reason": reason,
                "nc2_max_angle": None, "nc2_max_angle_reason": reason}
    unit = m / norms[:, None]
    cos = unit @ unit.T
    off = cos[~np.eye(k, dtype=bool)]
    return {"nc2_equinorm": float(norms.std() / norms.mean()),
            "nc2_equiangular": float(off.std()),
            "nc2_max_angle": float(np.mean(np.abs(off + 1.0 / (k - 1))))}


def nc3(weight: np.ndarray, means: np.ndarray, global_mean: np.ndarray) -> float | None:
    """NC3 self-duality (Papyan et al. 2020): ‖ W/‖W‖_F − M/‖M‖_F ‖_F with W the (K, d)
    classifier weight (row c = class c) and M the (K, d) centred class means.
    0 = the classifier is (up to scale) the matrix of centred class means; at most 2.
    Returns None when either matrix is zero.
    """
    m = means - global_mean
    wn, mn = np.linalg.norm(weight), np.linalg.norm(m)
    if wn == 0 or mn == 0:
        return None
    return float(np.linalg.norm(weight / wn - m / mn))


def nc4(z: np.ndarray, ncc_means: np.ndarray, predictions: np.ndarray) -> float:
    """NC4 (Papyan et al. 2020): fraction of samples on which the nearest-class-centre rule
    argmin_c ‖z − μ_c‖ *disagrees* with the network's prediction; → 0 under collapse.
    ``ncc_means`` are the training-split class means (the rule the network's training
    data defines), whichever split ``z`` comes from.
    """
    ncc = nearest_mean(z, ncc_means)
    return float(np.mean(ncc != predictions))


def coefficients_of_variation(z: np.ndarray) -> dict:
    """cv_norm = std_i ‖z_i‖ / mean_i ‖z_i‖ (norms about the origin: do all collapse points
    sit at one radius?) and cv_abs = std / mean of all N·d entries |z_ij| (a binary ±a
    code gives 0). Population standard deviations."""
    out: dict = {}
    norms = np.linalg.norm(z, axis=1)
    absz = np.abs(z)
    for key, values in (("cv_norm", norms), ("cv_abs", absz)):
        mean = values.mean()
        if mean == 0:
            out[key] = None
            out[f"{key}_reason"] = "every latent is zero: the coefficient of variation is undefined"
        else:
            out[key] = float(values.std() / mean)
    return out


def geometry(z, y, num_classes: int, *, classifier_weight=None, predictions=None,
             ncc_means: np.ndarray | None = None, min_per_class: int = 2, split: str = "this") -> dict:
    """Every geometry number of one split, as a JSON-able dict (keys: GEOMETRY_KEYS + context).

    Raises BenchError for unusable input (non-finite latents, a class with fewer than
    ``min_per_class`` samples or none at all, labels out of range). ``classifier_weight``
    (K, d) enables NC3; ``predictions`` enables NC4 (with ``ncc_means``, default this
    split's own class means).
    """
    z = as_latents(z, f"{split} latents")
    y = as_labels(y, z.shape[0], f"{split} labels")
    n, d = z.shape
    class_counts(y, num_classes, split=split, min_per_class=min_per_class)
    means, counts = class_means(z, y, num_classes)
    global_mean = z.mean(axis=0)
    out: dict = {"grouping": "true labels", "split": split, "n": int(n), "d": int(d), "K": int(num_classes),
                 "min_class_count": int(counts.min())}

    ratio, on_own = separation_ratios(z, y, means)
    out["n_on_own_mean"] = int(on_own.sum())
    if on_own.all():
        reason = "every sample sits exactly on its own class mean (complete collapse): R is unbounded"
        out.update(R_mean=None, R_mean_reason=reason, R_median=None, R_median_reason=reason)
    else:
        finite = ratio[~on_own]
        out["R_mean"] = float(finite.mean())
        out["R_median"] = float(np.median(finite))
        if on_own.any():
            out["R_note"] = (f"{int(on_own.sum())} sample(s) sit exactly on their own class mean "
                             f"(R infinite) and are left out of R_mean/R_median")

    sigma_w = within_class_covariance(z, y, means)
    sigma_b = between_class_covariance(means, global_mean)
    out["sigma_w_trace"] = float(np.trace(sigma_w))
    out["sigma_w_mean_entry"] = float(sigma_w.mean())
    out["sigma_b_trace"] = float(np.trace(sigma_b))
    if out["sigma_b_trace"] == 0:
        reason = "all class means coincide (Σ_B = 0): NC1 is undefined"
        out.update(nc1=None, nc1_reason=reason, nc1_per_dim=None, nc1_per_dim_reason=reason)
    else:
        value = nc1(sigma_w, sigma_b, num_classes)
        out["nc1"] = value
        out["nc1_per_dim"] = value / d
    out.update(nc2(means, global_mean))

    if classifier_weight is None:
        out.update(nc3=None, nc3_reason="no classifier weight given")
    else:
        w = as_latents(classifier_weight, "classifier weight")
        if w.shape != (num_classes, d):
            out.update(nc3=None, nc3_reason=f"classifier weight has shape {tuple(w.shape)}, "
                                            f"expected ({num_classes}, {d}) to match the latent")
        else:
            value = nc3(w, means, global_mean)
            if value is None:
                out.update(nc3=None, nc3_reason="the classifier weight or the centred class means are all zero")
            else:
                out["nc3"] = value

    if predictions is None:
        out.update(nc4=None, nc4_reason="no network predictions given")
    else:
        pred = as_labels(predictions, n, f"{split} predictions")
        ref = means if ncc_means is None else np.asarray(ncc_means, dtype=np.float64)
        if ref.shape != (num_classes, d):
            raise BenchError(f"ncc_means has shape {tuple(ref.shape)}, expected ({num_classes}, {d})")
        out["nc4"] = nc4(z, ref, pred)
        out["nc4_means"] = "train class means" if ncc_means is not None else f"{split} class means"

    out.update(coefficients_of_variation(z))
    return out
