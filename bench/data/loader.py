"""An on-device batch loader: the dataset lives as a uint8 tensor on the training device.

Shuffling, random crop (zero padding) and horizontal flips (``augment``: none, crop, or
crop_flip; a flip only where a suite asks for it, since mirroring changes what a digit or
a letter is) are done on whole batches
with tensor ops and a seeded ``torch.Generator``; there is no per-image Python and no
worker process. The same code runs on CPU and GPU. (This is how the fastest CIFAR
trainers avoid the data-loader bottleneck: a 50,000-image CIFAR set is 150 MB as
uint8, small next to any GPU's memory.)

Per batch: gather the shuffled indices, crop and flip the *uint8* images (a quarter of
the bytes of float32), then convert to float in [0, 1]. Normalisation by the channel
mean/std happens inside the model, so attacks work in [0, 1] pixel space.
"""
from __future__ import annotations

from typing import Iterator

import torch


def draw_crop_flip(batch: int, padding: int, generator: torch.Generator | None,
                   device: torch.device | str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The random draws of one batch, in this order: vertical offsets (B,), horizontal
    offsets (B,), flip coins (B,). Offsets are in [0, 2·padding]; ``flip`` is boolean."""
    dy = torch.randint(0, 2 * padding + 1, (batch,), generator=generator, device=device)
    dx = torch.randint(0, 2 * padding + 1, (batch,), generator=generator, device=device)
    flip = torch.rand((batch,), generator=generator, device=device) < 0.5
    return dy, dx, flip


def crop_flip(x: torch.Tensor, padding: int, dy: torch.Tensor, dx: torch.Tensor,
              flip: torch.Tensor, *, channels_last: bool = False) -> torch.Tensor:
    """Crop ``H×W`` at (dy, dx) out of each zero-padded image, then mirror where ``flip``.

    One gather for the whole batch, any dtype. The gather naturally yields (B, H, W, C)
    memory; ``channels_last=True`` keeps that layout (what cuDNN wants) instead of
    copying back to NCHW.
    """
    b, _, h, w = x.shape
    device = x.device
    if padding:
        x = torch.nn.functional.pad(x, (padding, padding, padding, padding))
    rows = dy[:, None] + torch.arange(h, device=device)[None, :]            # (B, H)
    cols = dx[:, None] + torch.arange(w, device=device)[None, :]            # (B, W)
    # a flipped crop reads its columns right to left
    cols = torch.where(flip[:, None], cols.flip(1), cols)
    batch_index = torch.arange(b, device=device)[:, None, None]
    out = x.permute(0, 2, 3, 1)[batch_index, rows[:, :, None], cols[:, None, :]]  # (B, H, W, C)
    out = out.permute(0, 3, 1, 2)
    return out if channels_last else out.contiguous()


def random_crop_flip(x: torch.Tensor, padding: int, generator: torch.Generator | None, *,
                     channels_last: bool = False) -> torch.Tensor:
    """Random ``H×W`` crop of the zero-padded batch and a random horizontal flip, per image.

    Same result as torchvision's ``RandomCrop(H, padding)`` + ``RandomHorizontalFlip()``
    applied image by image, with the draws of :func:`draw_crop_flip` (tested).
    """
    dy, dx, flip = draw_crop_flip(x.shape[0], padding, generator, x.device)
    return crop_flip(x, padding, dy, dx, flip, channels_last=channels_last)


AUGMENTATIONS = ("none", "crop", "crop_flip")
FLOAT_CACHE_BYTES = 64 * 2**20


class DeviceLoader:
    """Iterates over (x in [0, 1] float32, y) batches of a uint8 dataset held on ``device``.

    ``set_seed(s)`` before each shuffled or augmented pass: the permutation and the crop
    and flip draws then depend only on ``s`` (and the device type's generator), so a
    resumed run sees the same batches. ``batches(start)`` starts a pass at batch
    ``start``, with exactly the batches (and augmentation draws) a full pass has from
    there on: a run resumed in the middle of a pass continues it. In a shuffled pass a
    last batch of a single example is dropped: batch norm cannot train on one example.
    """

    def __init__(self, x: torch.Tensor, y: torch.Tensor, batch_size: int, *, pixel_scale: float,
                 device: torch.device | str = "cpu", shuffle: bool = False,
                 augment: str = "none", padding: int = 4, drop_last: bool = False,
                 channels_last: bool = False) -> None:
        if augment not in AUGMENTATIONS:
            raise ValueError(f"unknown augmentation {augment!r} ({', '.join(AUGMENTATIONS)})")
        self.device = torch.device(device)
        self.x = x.to(self.device)
        self.y = y.to(self.device)
        self.batch_size = batch_size
        self.pixel_scale = float(pixel_scale)
        self.shuffle = shuffle
        self.augment = augment
        self.padding = padding
        self.drop_last = drop_last
        self.channels_last = channels_last and self.x.dim() == 4
        self.generator: torch.Generator | None = None
        # small data without augmentation: convert to float once; a batch is then one gather of
        # the very values x[idx].float() / pixel_scale gives (the step loop of a tiny model
        # is dominated by such per-batch overheads)
        self.x_float: torch.Tensor | None = None
        if (augment == "none" and not self.channels_last
                and self.x.numel() * 4 <= FLOAT_CACHE_BYTES):
            self.x_float = self.x.float().div_(self.pixel_scale)

    def set_seed(self, seed: int) -> None:
        """Seed the shuffle/augmentation draws; called once per epoch by the trainer."""
        self.generator = torch.Generator(device=self.device)
        self.generator.manual_seed(seed)

    def __len__(self) -> int:
        n = self.x.shape[0]
        full, rest = divmod(n, self.batch_size)
        if self.drop_last or (self.shuffle and rest == 1 and full > 0):
            return full
        return full + (rest > 0)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return self.batches(0)

    def batches(self, start: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The pass's batches from batch ``start`` on (0 <= start <= len(self))."""
        n = self.x.shape[0]
        if not 0 <= start <= len(self):
            raise ValueError(f"start batch {start} is outside a pass of {len(self)} batches")
        if self.shuffle or self.augment != "none":
            if self.generator is None:
                raise RuntimeError("DeviceLoader.set_seed() must be called before a shuffled/augmented pass")
        order = (torch.randperm(n, generator=self.generator, device=self.device)
                 if self.shuffle else torch.arange(n, device=self.device))
        augmented = self.augment in ("crop", "crop_flip") and self.x.dim() == 4
        if augmented:  # replay the skipped batches' draws, so that the generator is where a full pass has it
            for i in range(start):
                size = min(self.batch_size, n - i * self.batch_size)
                draw_crop_flip(size, self.padding, self.generator, self.device)
        for i in range(start, len(self)):
            idx = order[i * self.batch_size:(i + 1) * self.batch_size]
            if self.x_float is not None:
                yield self.x_float.index_select(0, idx), self.y.index_select(0, idx)
                continue
            xb = self.x.index_select(0, idx)  # = x[idx], without advanced indexing's overhead
            if augmented:
                # "crop" draws what crop_flip draws (the same crops) and ignores the coins
                dy, dx, flip = draw_crop_flip(xb.shape[0], self.padding, self.generator, self.device)
                if self.augment == "crop":
                    flip = torch.zeros_like(flip)
                xb = crop_flip(xb, self.padding, dy, dx, flip, channels_last=self.channels_last)
            elif self.channels_last:
                xb = xb.contiguous(memory_format=torch.channels_last)
            # .float() keeps the memory format; the division is in place on the new tensor
            yield xb.float().div_(self.pixel_scale), self.y.index_select(0, idx)
