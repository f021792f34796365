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


def synthetic(n_train: int, seed: int = 0, num_classes: int = 10) -> DataSplits:
    """Random uint8 CIFAR-sized images (3×32×32), labels cycling over ``num_classes``."""
    rng = np.random.default_rng(seed)
    t = torch.from_numpy
    x = rng.integers(0, 256, (n_train, 3, 32, 32), dtype=np.uint8)
    y = np.arange(n_train) % num_classes
    small = slice(0, max(100, num_classes))
    return DataSplits(name=f"synthetic-{num_classes}-classes", classes=[str(i) for i in range(num_classes)],
                      train_x=t(x), train_y=t(y), val_x=t(x[small]), val_y=t(y[small]),
                      test_x=t(x[small]), test_y=t(y[small]))


def pipeline_suite(suite_name: str = "cifar10", backbone: str = "resnet18", batch_size: int = 128,
                   overrides: tuple[str, ...] = ()):
    """A paper suite (its recipe, head and latent widths) with ``backbone``, no evaluators."""
    return load_suite(suite_name, ["evaluation.evaluators=[]", "evaluation.settings={}",
                                   f"backbone.name={backbone}", f"recipe.batch_size={batch_size}", *overrides])


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


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
    sync(device)
    return seen


def fresh_model(suite, data, device, channels_last: bool):
    model = build_model(suite, "NoPen", data, seed=0).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model, make_optimizer(model, suite, 1e-3)


def run_device_pipeline(suite, data, device, *, batch_size: int = 128, warmup: int = 10) -> tuple[float, int]:
    """(seconds, images) of one epoch through bench's on-device loader, after ``warmup`` steps."""
    cuda = device.type == "cuda"
    amp, channels_last = ("bf16" if cuda else "off"), cuda
    model, optimizer = fresh_model(suite, data, device, channels_last)
    loader = DeviceLoader(data.train_x, data.train_y, batch_size, pixel_scale=data.pixel_scale,
                          device=device, shuffle=True, augment="crop_flip", padding=4,
                          channels_last=channels_last)
    loader.set_seed(0)
    train_steps(model, optimizer, loader, device, amp, channels_last, limit=warmup)
    loader.set_seed(1)
    t0 = time.perf_counter()
    seen = train_steps(model, optimizer, loader, device, amp, channels_last)
    return time.perf_counter() - t0, seen


def run_dataloader_pipeline(suite, data, device, *, batch_size: int = 128, warmup: int = 10,
                            workers: int = 0, plain: bool = False) -> tuple[float, int]:
    """(seconds, images) of one epoch through a torchvision DataLoader (worker start-up included)."""
    from torchvision import transforms
    cuda = device.type == "cuda"
    plain = plain or not cuda
    amp, channels_last = ("off", False) if plain else ("bf16", True)
    model, optimizer = fresh_model(suite, data, device, channels_last)
    transform = transforms.Compose([transforms.RandomCrop(32, padding=4), transforms.RandomHorizontalFlip(),
                                    transforms.ToTensor()])
    dataset = UInt8ImageDataset(data.train_x.numpy(), data.train_y.numpy(), transform)
    torch.manual_seed(0)

    def loader():
        return torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=True,
                                           num_workers=workers, pin_memory=cuda,
                                           persistent_workers=False, drop_last=False)
    train_steps(model, optimizer, loader(), device, amp, channels_last, limit=warmup)
    t0 = time.perf_counter()
    seen = train_steps(model, optimizer, loader(), device, amp, channels_last)
    return time.perf_counter() - t0, seen


def compare_pipelines(suite, data, device, *, batch_size: int = 128, warmup: int = 10, workers: int = 0,
                      repeats: int = 1, plain_baseline: bool = False) -> dict:
    """Both pipelines, ``repeats`` interleaved epochs each (median): figures as a dict."""
    # interleaved repeats, median epoch: on a shared machine one epoch can be slowed
    # several-fold by other processes, and interleaving spreads that over both pipelines
    dev_runs, dl_runs = [], []
    for _ in range(repeats):
        dev_runs.append(run_device_pipeline(suite, data, device, batch_size=batch_size, warmup=warmup))
        dl_runs.append(run_dataloader_pipeline(suite, data, device, batch_size=batch_size, warmup=warmup,
                                               workers=workers, plain=plain_baseline))
    (dev_s, dev_n), (dl_s, dl_n) = (sorted(r)[len(r) // 2] for r in (dev_runs, dl_runs))
    cuda = device.type == "cuda"
    return {
        "images": int(data.train_x.shape[0]), "batch_size": batch_size, "warmup_steps": warmup,
        "repeats": repeats, "workers": workers,
        "on_device": {"pipeline": "on-device uint8 + batched crop/flip",
                      "model": "bf16 autocast, channels_last" if cuda else "fp32 (CPU)",
                      "epoch_s": dev_s, "images_seen": dev_n, "img_per_s": dev_n / dev_s},
        "dataloader": {"pipeline": f"torchvision DataLoader ({workers} workers)",
                       "model": "fp32, NCHW" if (plain_baseline or not cuda) else "bf16 autocast, channels_last",
                       "epoch_s": dl_s, "images_seen": dl_n, "img_per_s": dl_n / dl_s},
        "ratio_dataloader_over_device": dl_s / dev_s,
    }


# the three ways ``bench run`` can train a network: --set runtime.amp=off (plain float32,
# NCHW), the default on CUDA (bf16 autocast + channels_last) and that plus --compile
TRAINING_MODES = {
    "fp32": {"amp": "off", "channels_last": False, "compile": False},
    "bf16_channels_last": {"amp": "bf16", "channels_last": True, "compile": False},
    "bf16_channels_last_compile": {"amp": "bf16", "channels_last": True, "compile": True},
}


def measure_training_mode(suite, data, device, mode: str, *, batch_size: int = 128, warmup: int = 5,
                          steps: int = 50, compile_backend: str | None = None) -> dict:
    """Training img/s of one of :data:`TRAINING_MODES` through the on-device loader.

    The first ``warmup`` steps are timed apart (cuDNN autotuning; with compile, the
    compilation of the forward and backward graphs); then ``steps`` full batches. The
    backbone is compiled as ``bench run --compile`` does (``model.backbone.compile()``);
    ``compile_backend`` only for smoke runs (e.g. "eager": no code generation).
    """
    settings = TRAINING_MODES[mode]
    channels_last = settings["channels_last"] and data.train_x.dim() == 4
    model, optimizer = fresh_model(suite, data, device, channels_last)
    if settings["compile"]:
        model.backbone.compile(**({"backend": compile_backend} if compile_backend else {}))
    loader = DeviceLoader(data.train_x, data.train_y, batch_size, pixel_scale=data.pixel_scale,
                          device=device, shuffle=True, augment="crop_flip", padding=4,
                          drop_last=True, channels_last=channels_last)
    if len(loader) == 0:
        raise ValueError(f"{data.train_x.shape[0]} images make no full batch of {batch_size}")

    def batches(seed: int, count: int):
        done = 0
        while done < count:  # as many full batches as asked for, over several passes if need be
            loader.set_seed(seed + done)
            for batch in loader:
                if done == count:
                    return
                done += 1
                yield batch
    sync(device)
    t0 = time.perf_counter()
    train_steps(model, optimizer, batches(0, warmup), device, settings["amp"], channels_last)
    warmup_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    seen = train_steps(model, optimizer, batches(10_000, steps), device, settings["amp"], channels_last)
    elapsed = time.perf_counter() - t0
    return {"mode": mode, **settings, "batch_size": batch_size, "warmup_steps": warmup, "warmup_s": warmup_s,
            "steps": steps, "images": seen, "seconds": elapsed, "img_per_s": seen / elapsed,
            "step_ms": 1000 * elapsed / steps, "compile_backend": (compile_backend or "inductor")
            if settings["compile"] else None}


def flops_per_image(suite, data, device) -> float:
    """FLOPs of one training image, forward + backward (torch's counter: 2 per multiply-add)."""
    from torch.utils.flop_counter import FlopCounterMode
    model, _ = fresh_model(suite, data, device, channels_last=False)
    model.train()
    xb = data.train_x[:2].to(device).float().div_(data.pixel_scale)
    yb = data.train_y[:2].to(device)
    with FlopCounterMode(display=False) as counter:
        model.head.loss(model.forward_all(xb), yb)["total"].backward()
    return counter.get_total_flops() / 2


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
    suite = pipeline_suite("cifar10", args.backbone, args.batch_size)
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

    r = compare_pipelines(suite, data, device, batch_size=args.batch_size, warmup=args.warmup,
                          workers=args.workers, repeats=args.repeats, plain_baseline=args.plain_baseline)
    print(f"{'pipeline':44s} {'model':30s} {'epoch s':>9s} {'images/s':>10s}")
    for row in (r["on_device"], r["dataloader"]):
        print(f"{row['pipeline']:44s} {row['model']:30s} {row['epoch_s']:9.2f} {row['img_per_s']:10.0f}")
    print(f"ratio (DataLoader / on-device epoch time): {r['ratio_dataloader_over_device']:.2f}x"
          + (f" (median of {args.repeats} interleaved epochs each)" if args.repeats > 1 else ""))
    if n < 50_000:
        print(f"full 50,000-image epoch, extrapolated: on-device {50_000 / r['on_device']['img_per_s']:.1f} s, "
              f"DataLoader {50_000 / r['dataloader']['img_per_s']:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
