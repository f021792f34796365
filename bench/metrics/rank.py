"""Rank of features and of weight matrices: effective rank, numerical rank, singular spectra.

Súkeník, Lampert & Mondelli (2024, "Neural collapse vs. low-rank bias: is deep neural
collapse really optimal?", NeurIPS) find that multi-layer regularisation prefers solutions
of *lower* rank than neural collapse (whose class means span K − 1 dimensions).

* **Effective rank** (Roy & Vetterli 2007, "The effective rank: a measure of effective
  dimensionality", EUSIPCO): with σ_1 ≥ … ≥ σ_r > 0 the singular values and p_i = σ_i / Σ_j σ_j,
  erank = exp(−Σ_i p_i log p_i); between 1 and the rank, scale-free.
* **Numerical rank** at relative threshold τ (default ``RANK_RTOL`` = 1e-3): the number of
  σ_i > τ·σ_1.

Features are *centred* (the global mean removed) before either is taken. A weight is the
matrix of its layer's map: a Linear's (out, in), a Conv2d's (out, in·k_h·k_w).
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

RANK_RTOL = 1e-3
MAX_SPECTRUM = 128          # singular values stored per weight matrix (the largest ones)


def effective_rank(singular_values) -> float | None:
    """Roy & Vetterli's effective rank of a spectrum; None when every value is zero."""
    s = np.asarray(singular_values, dtype=np.float64)
    s = s[s > 0]
    if s.size == 0:
        return None
    p = s / s.sum()
    return float(np.exp(-np.sum(p * np.log(p))))


def numerical_rank(singular_values, rtol: float = RANK_RTOL) -> int:
    s = np.asarray(singular_values, dtype=np.float64)
    if s.size == 0 or s.max() <= 0:
        return 0
    return int(np.sum(s > rtol * s.max()))


def weight_matrix(module: nn.Module) -> np.ndarray | None:
    weight = getattr(module, "weight", None)
    if not isinstance(weight, torch.Tensor) or not isinstance(module, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)):
        return None
    w = weight.detach().double().cpu()
    return w.reshape(w.shape[0], -1).numpy()


def weight_spectra(model: nn.Module, *, rtol: float = RANK_RTOL, max_values: int = MAX_SPECTRUM) -> dict:
    """Per Linear/Conv layer (by module name): shape, effective and numerical rank, the
    largest ``max_values`` singular values normalised by the first, and the largest itself."""
    out: dict = {}
    for name, module in model.named_modules():
        w = weight_matrix(module)
        if w is None:
            continue
        if not np.isfinite(w).all():
            out[name] = {"shape": list(w.shape), "effective_rank": None,
                         "effective_rank_reason": "non-finite weights"}
            continue
        s = np.linalg.svd(w, compute_uv=False)
        top = float(s[0]) if s.size else 0.0
        out[name] = {"shape": list(w.shape), "effective_rank": effective_rank(s),
                     "numerical_rank": numerical_rank(s, rtol), "sigma_max": top,
                     "spectrum": [float(v / top) for v in s[:max_values]] if top > 0 else []}
        if out[name]["effective_rank"] is None:
            out[name]["effective_rank_reason"] = "the weight matrix is zero"
    return out
