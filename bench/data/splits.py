"""Data held as uint8 tensors, split into train / validation / test."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

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

