"""Epoch time of ResNet-18 on CIFAR-10: bench's on-device pipeline vs a torchvision DataLoader.

Both pipelines train the same model (bench's CIFAR ResNet-18 with the NoPen head, AdamW)
on the same uint8 images with the same augmentation (random crop with 4-pixel zero
padding, horizontal flip) and the same precision settings, so the ratio measures the
data path alone:

* on-device: the whole training set as one uint8 tensor on the device; shuffling, crop
  and flip as batched tensor ops (``bench.data.DeviceLoader``); on CUDA bf16 autocast
  and channels_last, as ``bench run`` trains.
* DataLoader: the textbook torchvision recipe, a Dataset yielding PIL images through
  ``RandomCrop(32, padding=4)``, ``RandomHorizontalFlip()`` and ``ToTensor()``, worker
  processes and pinned memory, each batch copied to the device.
  ``--plain-baseline`` also trains it in float32 / NCHW (the usual starting point).

Usage:
    python benchmarks/bench_pipeline.py                         # synthetic CIFAR-sized data, full epoch
    python benchmarks/bench_pipeline.py --data-root ../shared/datasets/cifar10-jpeg --dataset imagefolder
    python benchmarks/bench_pipeline.py --limit 512 --batch-size 64 --repeats 3   # CPU smoke run, a few minutes

Images are random when no ``--data-root`` is given: the timing does not depend on them.
Each pipeline runs ``--warmup`` untimed steps first (cuDNN autotuning, worker start-up
is *included* in the timed epoch for the DataLoader as a real epoch would pay it).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.config.schema import DatasetConfig  # noqa: E402
from bench.suites import load_suite  # noqa: E402
from bench.data import DataSplits, DeviceLoader, load_dataset  # noqa: E402
from bench.core.device import autocast, configure, resolve_device  # noqa: E402
from bench.training.trainer import build_model, make_optimizer  # noqa: E402


class UInt8ImageDataset(torch.utils.data.Dataset):
    """(N, C, H, W) uint8 images served as PIL images, as torchvision's CIFAR10 does."""

    def __init__(self, x: np.ndarray, y: np.ndarray, transform) -> None:
        self.x = np.ascontiguousarray(x.transpose(0, 2, 3, 1))  # HWC for PIL
        self.y = y
        self.transform = transform

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int):
        from PIL import Image
        return self.transform(Image.fromarray(self.x[i])), int(self.y[i])


def synthetic(n_train: int, seed: int = 0) -> DataSplits:
    rng = np.random.default_rng(seed)
    t = torch.from_numpy
    x = rng.integers(0, 256, (n_train, 3, 32, 32), dtype=np.uint8)
    y = np.arange(n_train) % 10
    small = slice(0, 100)
    return DataSplits(name="synthetic-cifar10", classes=[str(i) for i in range(10)],
                      train_x=t(x), train_y=t(y), val_x=t(x[small]), val_y=t(y[small]),
                      test_x=t(x[small]), test_y=t(y[small]))


def train_steps(model, optimizer, batches, device, amp: str, channels_last: bool, limit: int | None = None) -> int:
    """Train on ``batches``; returns the number of examples seen."""
    model.train()
    seen = 0
    for i, (xb, yb) in enumerate(batches):
        if limit is not None and i >= limit:
            break
        xb = xb.to(device, non_blocking=True)
        yb = yb.to(device, non_blocking=True)
        if channels_last:
            xb = xb.contiguous(memory_format=torch.channels_last)
        with autocast(device, amp):
            out = model.forward_all(xb)
        loss = model.head.loss(out, yb)["total"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        seen += yb.shape[0]
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return seen


def fresh_model(suite, data, device, channels_last: bool):
    model = build_model(suite, "NoPen", data, seed=0).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model, make_optimizer(model, suite, 1e-3)


def run_device_pipeline(suite, data, device, args) -> tuple[float, int]:
    cuda = device.type == "cuda"
    amp, channels_last = ("bf16" if cuda else "off"), cuda
    model, optimizer = fresh_model(suite, data, device, channels_last)
    loader = DeviceLoader(data.train_x, data.train_y, args.batch_size, pixel_scale=data.pixel_scale,
                          device=device, shuffle=True, augment="crop_flip", padding=4,
                          channels_last=channels_last)
    loader.set_seed(0)
    train_steps(model, optimizer, loader, device, amp, channels_last, limit=args.warmup)
    loader.set_seed(1)
    t0 = time.perf_counter()
    seen = train_steps(model, optimizer, loader, device, amp, channels_last)
    return time.perf_counter() - t0, seen


def run_dataloader_pipeline(suite, data, device, args) -> tuple[float, int]:
    from torchvision import transforms
    cuda = device.type == "cuda"
    plain = args.plain_baseline or not cuda
    amp, channels_last = ("off", False) if plain else ("bf16", True)
    model, optimizer = fresh_model(suite, data, device, channels_last)
    transform = transforms.Compose([transforms.RandomCrop(32, padding=4), transforms.RandomHorizontalFlip(),
                                    transforms.ToTensor()])
    dataset = UInt8ImageDataset(data.train_x.numpy(), data.train_y.numpy(), transform)
    torch.manual_seed(0)

    def loader():
        return torch.utils.data.DataLoader(dataset, batch_size=args.batch_size, shuffle=True,
                                           num_workers=args.workers, pin_memory=cuda,
                                           persistent_workers=False, drop_last=False)
    train_steps(model, optimizer, loader(), device, amp, channels_last, limit=args.warmup)
    t0 = time.perf_counter()
    seen = train_steps(model, optimizer, loader(), device, amp, channels_last)
    return time.perf_counter() - t0, seen


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-root", help="CIFAR-10 data (default: random CIFAR-sized images)")
    p.add_argument("--dataset", default="cifar10", choices=["cifar10", "imagefolder"])
    p.add_argument("--limit", type=int, help="train on this many images (default: all; 50,000 synthetic)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--backbone", default="resnet18", help="bench backbone (resnet18; small_cnn for a quick look)")
    p.add_argument("--device", default="auto")
    p.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1), help="DataLoader workers")
    p.add_argument("--warmup", type=int, default=10, help="untimed steps before each timed epoch")
    p.add_argument("--repeats", type=int, default=1, help="timed epochs per pipeline, interleaved; median shown")
    p.add_argument("--plain-baseline", action="store_true", help="train the DataLoader pipeline in fp32/NCHW")
    args = p.parse_args(argv)

    device = resolve_device(args.device)
    suite = load_suite("cifar10", ["evaluation.evaluators=[]", "evaluation.settings={}",
                                   f"backbone.name={args.backbone}", f"recipe.batch_size={args.batch_size}"])
    configure(suite.runtime, device)
    if args.data_root:
        data = load_dataset(DatasetConfig(name=args.dataset, root=args.data_root, limit_train=args.limit))
        source = f"{args.dataset} from {args.data_root}"
    else:
        data = synthetic(args.limit or 50_000)
        source = "synthetic uint8 images (timing does not depend on content)"
    n = data.train_x.shape[0]
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    print(f"{args.backbone}, {n:,} training images of {source}, batch {args.batch_size}, on {name}")

    # interleaved repeats, median epoch: on a shared machine one epoch can be slowed
    # several-fold by other processes, and interleaving spreads that over both pipelines
    dev_runs, dl_runs = [], []
    for _ in range(args.repeats):
        dev_runs.append(run_device_pipeline(suite, data, device, args))
        dl_runs.append(run_dataloader_pipeline(suite, data, device, args))
    (dev_s, dev_n), (dl_s, dl_n) = (sorted(r)[len(r) // 2] for r in (dev_runs, dl_runs))
    cuda = device.type == "cuda"
    dev_mode = "bf16 autocast, channels_last" if cuda else "fp32 (CPU)"
    dl_mode = "fp32, NCHW" if (args.plain_baseline or not cuda) else "bf16 autocast, channels_last"
    rows = [("on-device uint8 + batched crop/flip", dev_mode, dev_s, dev_n),
            (f"torchvision DataLoader ({args.workers} workers)", dl_mode, dl_s, dl_n)]
    print(f"{'pipeline':44s} {'model':30s} {'epoch s':>9s} {'images/s':>10s}")
    for label, mode, secs, seen in rows:
        print(f"{label:44s} {mode:30s} {secs:9.2f} {seen / secs:10.0f}")
    print(f"ratio (DataLoader / on-device epoch time): {dl_s / dev_s:.2f}x"
          + (f" (median of {args.repeats} interleaved epochs each)" if args.repeats > 1 else ""))
    if n < 50_000:
        print(f"full 50,000-image epoch, extrapolated: on-device {dev_s * 50_000 / dev_n:.1f} s, "
              f"DataLoader {dl_s * 50_000 / dl_n:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
