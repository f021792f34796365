"""Input checks shared by the metrics: one clear BenchError instead of a crash inside numpy.

Every metric works in float64 on host memory: latents arrive as float32 (N, d) tensors
and float32 → float64 is exact, so a class whose latents are bit-identical has a class
mean that is bit-identical to them as well (sums of up to 2**29 equal float32 values
are exact in float64).
"""
from __future__ import annotations

from typing import Any, Iterable

import numpy as np

from bench.core.errors import BenchError

SPLITS = ("train", "val", "test")


def as_latents(z: Any, what: str = "latents") -> np.ndarray:
    """(N, d) float64 array from a tensor/array; rejects wrong shapes and non-finite values."""
    if hasattr(z, "detach"):
        z = z.detach().cpu().numpy()
    arr = np.asarray(z, dtype=np.float64)
    if arr.ndim != 2:
        raise BenchError(f"{what}: expected a (samples, dimensions) array, got shape {tuple(arr.shape)}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise BenchError(f"{what}: empty array of shape {tuple(arr.shape)}")
    finite = np.isfinite(arr)
    if not finite.all():
        bad_rows = np.flatnonzero(~finite.all(axis=1))
        shown = ", ".join(str(int(i)) for i in bad_rows[:5]) + (" …" if bad_rows.size > 5 else "")
        raise BenchError(f"{what}: {int((~finite).sum())} non-finite value(s) in {bad_rows.size} sample(s) "
                         f"(rows {shown}); the model's outputs are not usable (diverged training?)")
    return arr


def as_labels(y: Any, n: int, what: str = "labels") -> np.ndarray:
    """(N,) int64 labels matching N samples."""
    if hasattr(y, "detach"):
        y = y.detach().cpu().numpy()
    arr = np.asarray(y)
    if arr.ndim != 1 or arr.shape[0] != n:
        raise BenchError(f"{what}: expected {n} labels, got shape {tuple(arr.shape)}")
    if not np.issubdtype(arr.dtype, np.integer):
        raise BenchError(f"{what}: labels must be integers, got dtype {arr.dtype}")
    if n and arr.min() < 0:
        raise BenchError(f"{what}: negative label {int(arr.min())}")
    return arr.astype(np.int64, copy=False)


def class_counts(y: np.ndarray, num_classes: int, *, split: str = "this", min_per_class: int = 1) -> np.ndarray:
    """Samples per class; every class 0..K-1 must have at least ``min_per_class`` of them."""
    if num_classes < 2:
        raise BenchError(f"need at least 2 classes, got {num_classes}")
    if y.size and y.max() >= num_classes:
        raise BenchError(f"label {int(y.max())} in the {split} split is out of range for {num_classes} classes")
    counts = np.bincount(y, minlength=num_classes)
    missing = np.flatnonzero(counts == 0)
    if missing.size:
        shown = ", ".join(str(int(c)) for c in missing[:10]) + (" …" if missing.size > 10 else "")
        raise BenchError(f"{missing.size} class(es) have no samples in the {split} split ({shown}); "
                         f"class means are undefined (is dataset.limit_* too small?)")
    small = np.flatnonzero(counts < min_per_class)
    if small.size:
        c = int(small[0])
        raise BenchError(f"class {c} has {int(counts[c])} sample(s) in the {split} split; "
                         f"within-class statistics need at least {min_per_class} per class")
    return counts


def undefined(keys: Iterable[str], reason: str) -> dict:
    """Every key set to None, each with a ``<key>_reason`` beside it (never a silent NaN)."""
    out: dict = {}
    for key in keys:
        out[key] = None
        out[f"{key}_reason"] = reason
    return out


def check_splits(splits: tuple[str, ...], what: str) -> None:
    if not splits:
        raise ValueError(f"{what}: need at least one split")
    for s in splits:
        if s not in SPLITS:
            raise ValueError(f"{what}: unknown split {s!r} (known: {', '.join(SPLITS)})")
    if len(set(splits)) != len(splits):
        raise ValueError(f"{what}: splits repeat")
