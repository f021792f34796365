"""Before a sweep trains anything: how long will it take, and does it fit in memory?

``preflight`` builds the suite's model for the first pending run, times a few real
training steps on the suite's data (and a few evaluation forwards), and extrapolates to
every pending run × epoch × step. It prints one line, so that ``bench run --suite
cifar100`` on a laptop says "≈ 40 years" before it starts rather than after a day.

On a CPU the measured steps use at most ``CPU_PROBE_BATCH`` examples and are scaled to
the recipe's batch size (CPU time grows about linearly with the batch above a few
dozen examples; a full ResNet-50 step of 128 would take a minute to measure). On CUDA
the real batch is used, after warm-up steps (cuDNN autotuning), without
``torch.compile`` (its compile time would swamp the measurement).

The memory check fails with one line when the data, the weights with their gradients
and AdamW states, and one training step's activations cannot fit: on CUDA by the
device's free memory and a real step (an out-of-memory error becomes that line); on
CPU by the available RAM and the step's peak resident memory, scaled to the batch.

What is estimated: training steps, the validation passes every ``log_every`` epochs
and the final passes over every split. What is not: the evaluators (attacks and
metrics), whose cost depends on the model (DeepFool stops early on a fragile one);
the line says so.
"""
from __future__ import annotations

import math
import resource
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import torch

from bench.core import io
from bench.config.schema import Suite
from bench.core.errors import BenchError
from bench.runs.folder import RunSpec, run_status

CPU_PROBE_BATCH = 32
SAFETY = 0.9  # use at most this share of the free memory


@dataclass
class Estimate:
    runs: int                  # pending runs
    epochs_left: int           # summed over pending runs
    steps_per_epoch: int
    step_s: float              # one training step of the recipe's batch
    eval_forward_s: float      # evaluating one example
    train_s: float
    eval_s: float
    device: str
    probe_batch: int
    memory_need_bytes: int
    memory_free_bytes: int | None

    @property
    def total_s(self) -> float:
        return self.train_s + self.eval_s

    def line(self, suite: Suite) -> str:
        scaled = (f", measured on {self.probe_batch}-example steps and scaled"
                  if self.probe_batch != suite.recipe.batch_size else "")
        return (f"estimate: {self.runs} pending run(s) of {suite.name}, {self.epochs_left} epochs × "
                f"{self.steps_per_epoch} steps of batch {suite.recipe.batch_size} on {self.device} "
                f"≈ {format_duration(self.total_s)} ({self.step_s:.3g} s/step{scaled}; "
                f"evaluators not included)")


def format_duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    if seconds < 48 * 3600:
        return f"{seconds / 3600:.1f} h"
    if seconds < 365 * 86400:
        return f"{seconds / 86400:.1f} days"
    return f"{seconds / (365.25 * 86400):.1f} years"


def epochs_left(spec: RunSpec, out_root: Path, total: int) -> int:
    """Epochs a run still has to train: all of them, fewer for a run that was interrupted."""
    run_dir = spec.directory(out_root)
    status = run_status(run_dir)
    if status in ("done", "failed"):
        return 0
    done = sum(1 for _ in io.read_jsonl(run_dir / "log.jsonl")) if status == "running" else 0
    return max(total - done, 0)


def _available_ram() -> int | None:
    """MemAvailable (Linux), else free physical pages; None where neither is known."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        import os
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def _peak_rss() -> int:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # Linux reports KiB


def _gib(n: float) -> str:
    return f"{n / 2**30:.1f} GiB"


def _out_of_memory(suite: Suite, device: torch.device, need: int | None, free: int | None,
                   detail: str) -> BenchError:
    have = f"{_gib(free)} free" if free is not None else "not enough free"
    want = f"needs about {_gib(need)}, " if need else ""
    return BenchError(f"suite {suite.name} does not fit on {device}: {want}{have} ({detail}); lower "
                      f"--set recipe.batch_size, use --limit-train, or run on a larger device")


class _Prober:
    """Training steps of one model on real batches of one size, timed."""

    def __init__(self, suite: Suite, spec: RunSpec, data, device: torch.device) -> None:
        from bench.training.trainer import build_model, make_optimizer
        self.suite, self.data, self.device = suite, data, device
        self.cuda = device.type == "cuda"
        model = build_model(suite, spec.plugin, data, spec.seed).to(device)
        self.channels_last = self.cuda and suite.runtime.channels_last and len(data.input_shape) == 3
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.model = model
        self.optimizer = make_optimizer(model, suite, spec.lr)
        self.model.train()
        self.model.head.set_epoch(0)

    def batches(self, size: int, count: int) -> list:
        from bench.data import DeviceLoader
        recipe = self.suite.recipe
        n = min(self.data.train_x.shape[0], size * count)
        loader = DeviceLoader(self.data.train_x[:n], self.data.train_y[:n], size,
                              pixel_scale=self.data.pixel_scale, device=self.device, shuffle=True,
                              augment=recipe.augment, padding=recipe.crop_padding, drop_last=True,
                              channels_last=self.channels_last)
        loader.set_seed(0)
        return list(loader)

    def _sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize(self.device)

    def step(self, xb: torch.Tensor, yb: torch.Tensor) -> float:
        from bench.core.device import autocast
        self._sync()
        t0 = time.perf_counter()
        with autocast(self.device, self.suite.runtime.amp):
            out = self.model.forward_all(xb)
        terms = self.model.head.loss(out, yb)
        self.optimizer.zero_grad(set_to_none=True)
        terms["total"].backward()
        self.optimizer.step()
        self._sync()
        return time.perf_counter() - t0

    def timed(self, size: int, warmup: int, budget_s: float, min_steps: int = 3,
              max_steps: int = 50) -> float:
        """Median step time at batch ``size``: ``warmup`` untimed steps, then ``min_steps``
        timed ones and more while they fit in ``budget_s``. The median, because on a shared
        machine single steps vary tenfold."""
        batches = self.batches(size, min(warmup + max_steps, 16))
        for i in range(warmup):
            self.step(*batches[i % len(batches)])
        times: list[float] = []
        while len(times) < max_steps and (len(times) < min_steps or sum(times) < budget_s):
            times.append(self.step(*batches[(warmup + len(times)) % len(batches)]))
        return sorted(times)[len(times) // 2]

    def eval_forward_s(self, size: int) -> float:
        """Seconds per example of a no-grad forward pass (the evaluation passes)."""
        from bench.core.device import autocast
        xb = self.batches(size, 1)[0][0]
        self.model.eval()
        with torch.no_grad(), autocast(self.device, self.suite.runtime.amp):
            self.model.forward_all(xb)  # warm-up
            self._sync()
            t0 = time.perf_counter()
            self.model.forward_all(xb)
            self._sync()
        self.model.train()
        return (time.perf_counter() - t0) / xb.shape[0]


def measure(suite: Suite, spec: RunSpec, device: torch.device, *, budget_s: float = 3.0) -> Estimate:
    """Time training steps of ``spec`` on ``device`` and check that the suite fits in memory.

    CUDA: the recipe's batch, 3 warm-up steps. CPU: one small step first; if a full batch
    then looks cheap (≤ 2 s) the full batch is timed, else ``CPU_PROBE_BATCH`` examples
    scaled to the full batch (so a ResNet-50 estimate costs seconds, not minutes).
    """
    from bench.core.device import configure
    from bench.training.trainer import build_model, get_data

    configure(suite.runtime, device)
    recipe = suite.recipe
    data = get_data(suite)
    cuda = device.type == "cuda"
    n_train = data.train_x.shape[0]
    batch = min(recipe.batch_size, n_train)

    dataset_bytes = data.train_x.numel() * data.train_x.element_size()
    if cuda:
        free, _total = torch.cuda.mem_get_info(device)
    else:
        free = _available_ram()
        dataset_bytes = 0  # already in RAM: it is what was loaded
    n_params = sum(p.numel() for p in build_model(suite, spec.plugin, data, spec.seed).parameters())
    # weights + gradients + AdamW's two moment buffers, float32
    static = dataset_bytes + 16 * n_params
    if free is not None and static > SAFETY * free:
        raise _out_of_memory(suite, device, static, free, f"{_gib(dataset_bytes)} of training data on the "
                                                          f"device and {n_params:,} parameters")
    try:
        rss_before = _peak_rss()
        if cuda:
            torch.cuda.reset_peak_memory_stats(device)
        prober = _Prober(suite, spec, data, device)
        if cuda:
            probe = batch
            step_s = prober.timed(probe, warmup=3, budget_s=budget_s)
        else:
            small = min(batch, 8)
            first = prober.timed(small, warmup=0, budget_s=0, min_steps=1, max_steps=1)
            probe = batch if first * batch / small <= 2.0 else min(batch, CPU_PROBE_BATCH)
            step_s = prober.timed(probe, warmup=2, budget_s=budget_s) * (recipe.batch_size / probe)
        if cuda:
            # the probe held only a few batches of data; the run keeps all of it on the device
            need = int(torch.cuda.max_memory_allocated(device)) + dataset_bytes
            detail = f"one step of batch {recipe.batch_size} with the training data on the device"
        else:
            need = int(16 * n_params + max(_peak_rss() - rss_before, 0) * recipe.batch_size / probe)
            detail = f"one step of batch {recipe.batch_size}"
        if free is not None and need > SAFETY * free:
            raise _out_of_memory(suite, device, need, free, detail)
        eval_forward_s = prober.eval_forward_s(min(recipe.eval_batch_size, probe, n_train))
    except torch.cuda.OutOfMemoryError as exc:
        raise _out_of_memory(suite, device, None, free, str(exc).splitlines()[0][:120]) from None
    except RuntimeError as exc:
        text = str(exc).lower()
        if "can't allocate memory" in text or "out of memory" in text:
            raise _out_of_memory(suite, device, None, free, str(exc).splitlines()[0][:120]) from None
        raise
    finally:
        if cuda:
            torch.cuda.empty_cache()

    full, rest = divmod(n_train, recipe.batch_size)
    # a paced recipe's epoch is epoch_steps steps; else one pass (DeviceLoader drops a lone last example)
    steps_per_epoch = recipe.epoch_steps or full + (rest > 1)
    return Estimate(runs=0, epochs_left=0, steps_per_epoch=steps_per_epoch, step_s=step_s,
                    eval_forward_s=eval_forward_s, train_s=0.0, eval_s=0.0, device=str(device),
                    probe_batch=probe, memory_need_bytes=need, memory_free_bytes=free)


def estimate_sweep(suite: Suite, runs: list[RunSpec], out_root: Path,
                   device: torch.device | None = None) -> Estimate | None:
    """The estimate for the runs that still have epochs to train; None when none has."""
    from bench.core.device import resolve_device
    from bench.training.trainer import get_data

    left = {spec: epochs_left(spec, out_root, suite.recipe.epochs) for spec in runs}
    pending = [spec for spec, n in left.items() if n > 0]
    if not pending:
        return None
    device = device or resolve_device(suite.runtime.device)
    est = measure(suite, pending[0], device)
    data = get_data(suite)
    recipe = suite.recipe
    n_eval_all = sum(data.split(s)[0].shape[0] for s in ("train", "val", "test"))
    val_passes = sum(math.ceil(n / recipe.log_every) for n in left.values() if n)
    est.runs = len(pending)
    est.epochs_left = sum(left.values())
    est.train_s = est.epochs_left * est.steps_per_epoch * est.step_s
    est.eval_s = est.eval_forward_s * (val_passes * data.val_x.shape[0] + len(pending) * n_eval_all)
    return est


def preflight(suite: Suite, runs: list[RunSpec], out_root: Path, *, stream: TextIO | None = None,
              device: torch.device | None = None) -> Estimate | None:
    """Print the sweep's estimate (one line) and fail early if it cannot fit in memory."""
    est = estimate_sweep(suite, runs, out_root, device)
    if est is not None:
        print(est.line(suite), file=stream or sys.stdout, flush=True)
    return est
