"""An on-device batch loader: the dataset lives as a uint8 tensor on the training device.

Shuffling, random crop (zero padding) and horizontal flips are done on whole batches
with tensor ops and a seeded ``torch.Generator``; there is no per-image Python and no
worker process. The same code runs on CPU and GPU.
"""
from __future__ import annotations

from typing import Iterator

import torch


def random_crop_flip(x: torch.Tensor, padding: int, generator: torch.Generator) -> torch.Tensor:
    """Random ``H×W`` crop of the zero-padded batch and a random horizontal flip, per image.

    Draws, in this order: the vertical offsets (B,), the horizontal offsets (B,), the
    flip coins (B,), all from ``generator`` on ``x``'s device. Offsets are in [0, 2·padding].
    """
    b, c, h, w = x.shape
    device = x.device
    dy = torch.randint(0, 2 * padding + 1, (b,), generator=generator, device=device)
    dx = torch.randint(0, 2 * padding + 1, (b,), generator=generator, device=device)
    flip = torch.rand((b,), generator=generator, device=device) < 0.5
    if padding:
        x = torch.nn.functional.pad(x, (padding, padding, padding, padding))
    rows = (dy[:, None] + torch.arange(h, device=device)[None, :])            # (B, H)
    cols = (dx[:, None] + torch.arange(w, device=device)[None, :])            # (B, W)
    cols = torch.where(flip[:, None], cols.flip(1), cols)
    batch_index = torch.arange(b, device=device)[:, None, None]
    # gather rows then columns: (B, C, H, W) out of the padded (B, C, H+2p, W+2p)
    out = x.permute(0, 2, 3, 1)[batch_index, rows[:, :, None], cols[:, None, :]]
    return out.permute(0, 3, 1, 2).contiguous()


class DeviceLoader:
    """Iterates over (x in [0, 1] float, y) batches of a uint8 dataset held on ``device``."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, batch_size: int, *, pixel_scale: float,
                 device: torch.device | str = "cpu", shuffle: bool = False,
                 augment: str = "none", padding: int = 4, drop_last: bool = False) -> None:
        self.device = torch.device(device)
        self.x = x.to(self.device)
        self.y = y.to(self.device)
        self.batch_size = batch_size
        self.pixel_scale = float(pixel_scale)
        self.shuffle = shuffle
        self.augment = augment
        self.padding = padding
        self.drop_last = drop_last
        self.generator: torch.Generator | None = None

    def set_seed(self, seed: int) -> None:
        """Seed the shuffle/augmentation draws; called once per epoch by the trainer."""
        self.generator = torch.Generator(device=self.device)
        self.generator.manual_seed(seed)

    def __len__(self) -> int:
        n = self.x.shape[0]
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n = self.x.shape[0]
        if self.shuffle or self.augment != "none":
            if self.generator is None:
                raise RuntimeError("DeviceLoader.set_seed() must be called before a shuffled/augmented pass")
        order = (torch.randperm(n, generator=self.generator, device=self.device)
                 if self.shuffle else torch.arange(n, device=self.device))
        for i in range(len(self)):
            idx = order[i * self.batch_size:(i + 1) * self.batch_size]
            xb = self.x[idx].float().div_(self.pixel_scale)
            if self.augment == "crop_flip" and xb.dim() == 4:
                xb = random_crop_flip(xb, self.padding, self.generator)
            yield xb, self.y[idx]
