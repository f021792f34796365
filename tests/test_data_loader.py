"""The on-device pipeline: batched crop+flip against a per-image torchvision reference."""
from __future__ import annotations

import pytest
import torch
from torchvision.transforms.v2 import functional as TF

from bench.data.loader import DeviceLoader, crop_flip, draw_crop_flip, random_crop_flip


def _reference(x: torch.Tensor, padding: int, generator: torch.Generator) -> torch.Tensor:
    """Image by image, with torchvision's functional ops and the documented draw order."""
    b, _, h, w = x.shape
    dy = torch.randint(0, 2 * padding + 1, (b,), generator=generator)
    dx = torch.randint(0, 2 * padding + 1, (b,), generator=generator)
    flip = torch.rand((b,), generator=generator) < 0.5
    out = []
    for i in range(b):
        image = TF.crop(TF.pad(x[i], [padding]), int(dy[i]), int(dx[i]), h, w)
        out.append(TF.horizontal_flip(image) if flip[i] else image)
    return torch.stack(out)


@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
@pytest.mark.parametrize("shape,padding", [((64, 3, 32, 32), 4), ((9, 1, 7, 5), 2), ((5, 2, 4, 4), 0)])
def test_batched_crop_flip_equals_per_image_reference(shape, padding, dtype):
    x = torch.randint(0, 256, shape, generator=torch.Generator().manual_seed(1)).to(dtype)
    got = random_crop_flip(x, padding, torch.Generator().manual_seed(7))
    want = _reference(x, padding, torch.Generator().manual_seed(7))
    assert got.dtype == dtype and got.is_contiguous()
    assert torch.equal(got, want)


def test_every_offset_and_flip_is_reachable():
    x = torch.arange(3 * 6 * 6, dtype=torch.float32).reshape(1, 3, 6, 6).expand(400, -1, -1, -1)
    dy, dx, flip = draw_crop_flip(400, 2, torch.Generator().manual_seed(0), "cpu")
    assert set(dy.tolist()) == set(dx.tolist()) == set(range(5)) and 0 < int(flip.sum()) < 400
    out = crop_flip(x, 2, dy, dx, flip)
    centred = (dy == 2) & (dx == 2)
    assert torch.equal(out[centred & ~flip], x[centred & ~flip])
    assert torch.equal(out[centred & flip], x[centred & flip].flip(-1))


def test_channels_last_layout_same_values():
    x = torch.randint(0, 256, (8, 3, 10, 10), dtype=torch.uint8)
    a = random_crop_flip(x, 3, torch.Generator().manual_seed(3))
    b = random_crop_flip(x, 3, torch.Generator().manual_seed(3), channels_last=True)
    assert b.is_contiguous(memory_format=torch.channels_last) and torch.equal(a, b)


def test_loader_is_seeded_and_matches_reference():
    x = torch.randint(0, 256, (50, 3, 8, 8), dtype=torch.uint8)
    y = torch.arange(50)
    loader = DeviceLoader(x, y, 16, pixel_scale=255.0, shuffle=True, augment="crop_flip", padding=2)
    loader.set_seed(11)
    first = list(loader)
    loader.set_seed(11)
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(first, list(loader)))
    # replay: the permutation, then each batch's draws, from one generator
    g = torch.Generator().manual_seed(11)
    order = torch.randperm(50, generator=g)
    for i, (xb, yb) in enumerate(first):
        idx = order[i * 16:(i + 1) * 16]
        assert torch.equal(yb, y[idx])
        expected = _reference(x[idx], 2, g).float() / 255
        assert xb.dtype == torch.float32 and torch.equal(xb, expected)
    loader.set_seed(12)
    assert not torch.equal(first[0][0], next(iter(loader))[0])


def test_lone_last_example_is_dropped_when_shuffling():
    x, y = torch.zeros(33, 1, 4, 4, dtype=torch.uint8), torch.zeros(33, dtype=torch.long)
    train = DeviceLoader(x, y, 16, pixel_scale=255.0, shuffle=True)
    train.set_seed(0)
    assert len(train) == 2 and sum(len(b[1]) for b in train) == 32
    plain = DeviceLoader(x, y, 16, pixel_scale=255.0)
    assert len(plain) == 3 and sum(len(b[1]) for b in plain) == 33
    with pytest.raises(RuntimeError, match="set_seed"):
        next(iter(DeviceLoader(x, y, 16, pixel_scale=255.0, shuffle=True)))
