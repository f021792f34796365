"""Data held as uint8 tensors, split into train / validation / test, and the split helpers
every dataset uses (``stratified_split``, ``stratified_subset``, ``splits_from_arrays``).

One rule for all datasets: ``limit_train`` keeps a stratified N of the training set
*before* the validation hold-out (so validation shrinks with it), ``limit_test`` a
stratified N of the test set; without limits the splits do not depend on them.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from bench.config.schema import DatasetConfig
from bench.core.errors import BenchError


@dataclass
class DataSplits:
    """A classification dataset as integer tensors; ``x / pixel_scale`` is in [0, 1].

    Images are (N, C, H, W) uint8. ``mean``/``std`` are per-channel statistics of the
    training split in [0, 1] units; the model normalises inside its forward, so attacks
    work in [0, 1] pixel space.
    """

    name: str
    classes: list[str]
    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    pixel_scale: float = 255.0

    def __post_init__(self) -> None:
        for split in ("train", "val", "test"):
            x, y = getattr(self, f"{split}_x"), getattr(self, f"{split}_y")
            if x.shape[0] != y.shape[0]:
                raise BenchError(f"{self.name}: {split} has {x.shape[0]} inputs but {y.shape[0]} labels")
            if x.shape[0] == 0:
                raise BenchError(f"{self.name}: the {split} split is empty")
        if len(self.classes) < 2:
            found = f" ({', '.join(map(repr, self.classes))})" if self.classes else ""
            raise BenchError(f"{self.name}: a classifier needs at least 2 classes, found {len(self.classes)}{found}")
        if self.train_x.shape[1:] != self.test_x.shape[1:]:
            raise BenchError(f"{self.name}: train and test inputs have different shapes")

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.train_x.shape[1:])

    def channel_stats(self) -> tuple[list[float], list[float]]:
        x = self.train_x.double() / self.pixel_scale
        dims = [0] + list(range(2, x.dim()))
        mean = x.mean(dim=dims)
        std = x.std(dim=dims).clamp_min(1e-3)
        return mean.tolist(), std.tolist()

    def split(self, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        if name not in ("train", "val", "test"):
            raise ValueError(f"unknown split {name!r}")
        return getattr(self, f"{name}_x"), getattr(self, f"{name}_y")


def stratified_split(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (keep, held_out): ``fraction`` of each class held out, seeded, sorted."""
    rng = np.random.default_rng(seed)
    keep, held = [], []
    for cls in np.unique(labels):
        idx = np.flatnonzero(labels == cls)
        rng.shuffle(idx)
        n_held = max(1, int(round(fraction * len(idx))))
        if n_held >= len(idx):
            raise BenchError(f"class {cls} has {len(idx)} examples: too few to hold out {fraction:.0%}")
        held.append(idx[:n_held])
        keep.append(idx[n_held:])
    return np.sort(np.concatenate(keep)), np.sort(np.concatenate(held))



def stratified_subset(labels: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Sorted indices of exactly ``n`` examples with the class proportions of ``labels``.

    Per-class quotas by largest remainder; within a class a seeded permutation, so the
    subset for a smaller ``n`` is contained in the one for a larger ``n``.
    """
    if n >= len(labels):
        return np.arange(len(labels))
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(labels, return_counts=True)
    quota = counts * (n / len(labels))
    take = np.floor(quota).astype(np.int64)
    leftover = n - int(take.sum())
    take[np.argsort(-(quota - take), kind="stable")[:leftover]] += 1
    picks = [rng.permutation(np.flatnonzero(labels == c))[:k] for c, k in zip(classes, take)]
    return np.sort(np.concatenate(picks))


def splits_from_arrays(name: str, classes: list[str], train_x: np.ndarray, train_y: np.ndarray,
                       test_x: np.ndarray, test_y: np.ndarray, cfg: DatasetConfig,
                       pixel_scale: float = 255.0, val_seed: int | None = None) -> DataSplits:
    """Train/val/test ``DataSplits`` from full (N, C, H, W) uint8 arrays.

    ``limit_train`` keeps a stratified subset of the training set *before* the validation
    hold-out (so validation shrinks with it); ``limit_test`` a stratified subset of test.
    The validation hold-out is seeded by ``val_seed`` (default ``cfg.split_seed``).
    """
    k = len(classes)
    pool = np.arange(len(train_y))
    if cfg.limit_train is not None:
        if cfg.limit_train < 2 * k:
            raise BenchError(f"{name}: --limit-train {cfg.limit_train} is too small for {k} classes "
                             f"(need at least {2 * k}: one training and one validation example per class)")
        pool = stratified_subset(train_y, cfg.limit_train, cfg.split_seed + 1)
    seed = cfg.split_seed if val_seed is None else val_seed
    train_rel, val_rel = stratified_split(train_y[pool], cfg.val_fraction, seed)
    train, val = pool[train_rel], pool[val_rel]
    test = np.arange(len(test_y))
    if cfg.limit_test is not None:
        test = stratified_subset(test_y, cfg.limit_test, cfg.split_seed + 2)

    def t(a: np.ndarray, idx: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(a[idx]))

    return DataSplits(name=name, classes=list(classes),
                      train_x=t(train_x, train), train_y=t(train_y.astype(np.int64), train),
                      val_x=t(train_x, val), val_y=t(train_y.astype(np.int64), val),
                      test_x=t(test_x, test), test_y=t(test_y.astype(np.int64), test),
                      pixel_scale=pixel_scale)
