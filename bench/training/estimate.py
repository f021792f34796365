"""Before a sweep trains anything: how long will it take, and does it fit in memory?

``preflight`` prints one line, so that ``bench run --suite cifar100`` on a laptop says
"≈ 40 years" before it starts rather than after a day, and ``bench run`` on digits says
how many minutes to expect. Everything in it is measured on this machine:

* **Training.** A few real training steps on the suite's data, for each plugin of the
  pending runs (plugins differ: on digits an LPC-SCL step costs four NoPen steps) while
  the probes stay within ``TRAIN_PROBE_BUDGET_S``; plugins not reached get the mean of
  those timed, except a plugin whose loss uses the input (an inner attack costs several
  plain steps), which is always timed. The step timed is the trainer's own
  (``bench.training.step``), inner attack included. Extrapolated to every pending run × epoch left × step. A run with a
  checkpoint counts from the checkpoint's epoch: that is where it resumes (log lines past
  it are trained again).
* **Evaluation passes.** The validation passes every ``log_every`` epochs and the final
  passes over every split (timed no-grad forwards).
* **Evaluators.** The suite's attacks and metrics, run on a freshly initialised model (its
  schedules set to the last epoch) with the suite's attack subset cut to ``PROBE_INPUTS``
  inputs: per evaluator, the line through the two times, extended to the whole subset
  (flat for a metric that reads every latent, growing for an attack). An attack that
  stops early (DeepFool, the minimum-norm attacks) may iterate longer on a trained model,
  so this part is a floor rather than a ceiling. Evaluators are timed for as many plugins
  as fit in ``EVAL_PROBE_BUDGET_S``, and not at all when computing one run's latents would
  take longer than ``EVAL_PROBE_MAX_S`` (a ResNet-50 on a CPU: the line then says so).

On a CPU the measured steps use at most ``CPU_PROBE_BATCH`` examples and are scaled to
the recipe's batch size (CPU time grows about linearly with the batch above a few
dozen examples; a full ResNet-50 step of 128 would take a minute to measure). On CUDA
the real batch is used, after warm-up steps (cuDNN autotuning), without
``torch.compile`` (its compile time would swamp the measurement).

The memory check fails with one line when the data, the weights with their gradients
and AdamW states, and one training step's activations cannot fit: on CUDA by the
device's free memory and a real step (an out-of-memory error becomes that line); on
CPU by the available RAM and the step's peak resident memory, scaled to the batch.

``--estimate-only`` without a data folder for a dataset of known shapes (CIFAR-10/100)
times random images of those shapes: the cost of a step does not depend on the pixels.
"""
from __future__ import annotations

import math
import os
import pickle
import resource
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

import torch

from bench.config.schema import Suite
from bench.core.errors import BenchError
from bench.runs.folder import CHECKPOINT, RunSpec, result_status

CPU_PROBE_BATCH = 32
SAFETY = 0.9  # use at most this share of the free memory
TRAIN_PROBE_BUDGET_S = 4.0   # timing the training steps of further plugins
EVAL_PROBE_BUDGET_S = 3.0    # timing the evaluators of further plugins
EVAL_PROBE_MAX_S = 15.0      # no evaluator probe when one run's latents alone would take longer
PROBE_INPUTS = (16, 64)      # attack inputs the evaluators are timed on (two sizes, for a line)

# datasets whose shapes are known without their files: (train, test, image shape, classes)
KNOWN_SHAPES = {"cifar10": (50_000, 10_000, (3, 32, 32), 10),
                "cifar100": (50_000, 10_000, (3, 32, 32), 100)}


@dataclass
class Estimate:
    runs: int                  # pending runs
    epochs_left: int           # summed over pending runs
    steps_per_epoch: int
    step_s: float              # one training step of the recipe's batch (first plugin)
    eval_forward_s: float      # evaluating one example
    train_s: float
    eval_s: float              # validation and final passes
    device: str
    probe_batch: int
    memory_need_bytes: int
    memory_free_bytes: int | None
    step_s_by_plugin: dict[str, float] = field(default_factory=dict)
    plugins_timed: int = 1
    evaluators_s: float | None = None    # the evaluators of every pending run; None: not timed
    evaluators_note: str = ""
    data_note: str = ""
    parallel: int = 1                    # runs at once (pool workers, where the cores allow)

    @property
    def total_s(self) -> float:
        return self.train_s + self.eval_s + (self.evaluators_s or 0.0)

    def line(self, suite: Suite) -> str:
        steps = sorted(self.step_s_by_plugin.values()) or [self.step_s]
        rate = f"{steps[0]:.3g} s/step" if steps[-1] <= 1.15 * steps[0] else f"{steps[0]:.3g}–{steps[-1]:.3g} s/step"
        plugins = len(self.step_s_by_plugin) or 1
        timed = (f"{self.plugins_timed} of {plugins} plugins timed" if self.plugins_timed < plugins
                 else "1 plugin timed" if plugins == 1 else f"{plugins} plugins timed")
        scaled = (f", {self.probe_batch}-example steps scaled"
                  if self.probe_batch != suite.recipe.batch_size else "")
        parts = [f"training {format_duration(self.train_s)} ({rate}, {timed}{scaled})"]
        if not self.evaluators_s:  # not timed, or none to time: the note says which
            parts.append(f"evaluation passes {format_duration(self.eval_s)}; {self.evaluators_note}")
        else:
            parts.append(f"evaluation {format_duration(self.eval_s + self.evaluators_s)} "
                         f"(passes and {self.evaluators_note})")
        wall = ""
        if self.parallel > 1:
            wall = f"; ≈ {format_duration(self.total_s / self.parallel)} with {self.parallel} workers"
        data = f"; {self.data_note}" if self.data_note else ""
        return (f"estimate: {self.runs} pending run(s) of {suite.name}, {self.epochs_left} epochs × "
                f"{self.steps_per_epoch} steps of batch {suite.recipe.batch_size} on {self.device} "
                f"≈ {format_duration(self.total_s)}{wall}: {'; '.join(parts)}{data}")


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


def checkpoint_epoch(run_dir: Path) -> int:
    """The epoch a run resumes from: its checkpoint's (0 without a readable one)."""
    path = Path(run_dir) / CHECKPOINT
    if not path.exists():
        return 0
    for mmap in (True, False):  # mmap: the epoch without reading every weight
        try:
            return int(torch.load(path, map_location="cpu", weights_only=True, mmap=mmap).get("epoch", 0))
        except (OSError, RuntimeError, ValueError, EOFError, AttributeError, pickle.UnpicklingError):
            continue  # unreadable: the run starts over (or fails); count every epoch
    return 0


def will_run(spec: RunSpec, out_root: Path, retry_failed: bool = False) -> bool:
    """Whether a sweep hands this run out: not done, and not failed unless ``retry_failed``."""
    status = result_status(spec.directory(out_root))
    return status != "done" and (status != "failed" or retry_failed)


def epochs_left(spec: RunSpec, out_root: Path, total: int, *, retry_failed: bool = False) -> int:
    """Epochs a run still has to train: all of them, fewer for one with a checkpoint (a rerun
    resumes from the checkpoint, not from the last logged epoch). A failed run has none
    unless ``retry_failed`` (then it resumes from its checkpoint too)."""
    run_dir = spec.directory(out_root)
    status = result_status(run_dir)
    if status == "done" or (status == "failed" and not retry_failed):
        return 0
    return max(total - checkpoint_epoch(run_dir), 0)


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
        self.params = [p for group in self.optimizer.param_groups for p in group["params"]]
        self.steps_taken = 0
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
        from bench.training.step import training_step
        self._sync()
        t0 = time.perf_counter()
        # the trainer's own step: a plugin's inner attack or double backprop is timed with it
        training_step(self.model, self.optimizer, self.params, xb, yb, device=self.device,
                      amp=self.suite.runtime.amp, seed=self.steps_taken)
        self.steps_taken += 1
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


def measure(suite: Suite, spec: RunSpec, device: torch.device, *, budget_s: float = 3.0,
            data=None) -> Estimate:
    """Time training steps of ``spec`` on ``device`` and check that the suite fits in memory.

    CUDA: the recipe's batch, 3 warm-up steps. CPU: one small step first; if a full batch
    then looks cheap (≤ 2 s) the full batch is timed, else ``CPU_PROBE_BATCH`` examples
    scaled to the full batch (so a ResNet-50 estimate costs seconds, not minutes).
    """
    from bench.core.device import configure
    from bench.training.trainer import build_model, get_data

    configure(suite.runtime, device)
    recipe = suite.recipe
    data = data if data is not None else get_data(suite)
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


def _uses_input(plugin: str) -> bool:
    from registry import get_plugin_class
    return bool(getattr(get_plugin_class(plugin), "uses_input", lambda: False)())


def _plugin_step_s(suite: Suite, spec: RunSpec, data, device: torch.device, probe: int) -> float:
    """A quick step time for one more plugin, at the batch the first probe settled on."""
    prober = _Prober(suite, spec, data, device)
    warmup = 3 if device.type == "cuda" else 1
    return prober.timed(probe, warmup=warmup, budget_s=0.5, min_steps=2) * (suite.recipe.batch_size / probe)


def time_evaluators(suite: Suite, spec: RunSpec, data, device: torch.device) -> float:
    """Seconds the suite's evaluators would take for one run of ``spec`` (see the module's
    docstring): timed on a freshly initialised model at two attack-subset sizes, each
    evaluator's time extended along the line through the two to the whole subset."""
    import dataclasses
    from bench.evaluation.hook import run_evaluators
    from bench.training.evaluate import classifier_context
    from bench.training.trainer import build_model

    names = suite.evaluation.evaluators
    if not names:
        return 0.0
    model = build_model(suite, spec.plugin, data, spec.seed).to(device).eval()
    model.head.set_epoch(suite.recipe.epochs - 1)  # schedules as the evaluation sees them
    # the trainer's own evaluation set-up (one entry point), then its evaluators on two subset sizes
    full, _ = classifier_context(suite, model, data, device)
    subset = full.subset
    n = subset.shape[0]
    sizes = sorted({min(k, n) for k in PROBE_INPUTS})
    times: dict[int, list[float]] = {}
    for k in sizes:
        ctx = dataclasses.replace(full, subset=subset[:k], results={}, artifacts={})
        wall: dict[str, float] = {}
        run_evaluators(ctx, names, suite.evaluation.settings, wall_s=wall)
        times[k] = [wall[name] for name in names]
    if len(sizes) == 1:
        return sum(times[sizes[0]])
    (k1, t1), (k2, t2) = (sizes[0], times[sizes[0]]), (sizes[1], times[sizes[1]])
    return sum(b + max(b - a, 0.0) / (k2 - k1) * (n - k2) for a, b in zip(t1, t2))


def _data_for_estimate(suite: Suite, estimate_only: bool):
    """(data, note): the suite's data; for ``--estimate-only`` without a data folder, random
    images of a known dataset's shapes (a step costs the same whatever the pixels)."""
    from bench.training.trainer import get_data
    shapes = KNOWN_SHAPES.get(suite.dataset.name)
    if not (estimate_only and shapes is not None and suite.dataset.root is None):
        return get_data(suite), ""
    import numpy as np
    from bench.data.cifar import splits_from_arrays
    n_train, n_test, shape, k = shapes
    rng = np.random.default_rng(0)
    data = splits_from_arrays(suite.dataset.name, [f"class{i}" for i in range(k)],
                              rng.integers(0, 256, (n_train, *shape), dtype=np.uint8), np.arange(n_train) % k,
                              rng.integers(0, 256, (n_test, *shape), dtype=np.uint8), np.arange(n_test) % k,
                              suite.dataset)
    return data, (f"no --data-root: timed on random images of {suite.dataset.name}'s shapes "
                  f"({n_train:,} train / {n_test:,} test, {'×'.join(map(str, shape))})")


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def estimate_sweep(suite: Suite, runs: list[RunSpec], out_root: Path,
                   device: torch.device | None = None, *, retry_failed: bool = False,
                   estimate_only: bool = False) -> Estimate | None:
    """The estimate for the runs that still have epochs to train; None when none has."""
    from bench.core.device import resolve_device

    # every run the sweep will hand out, also one with no epoch left (trained, not evaluated)
    pending = [spec for spec in runs if will_run(spec, out_root, retry_failed)]
    left = {spec: epochs_left(spec, out_root, suite.recipe.epochs, retry_failed=retry_failed) for spec in pending}
    if not pending:
        return None
    device = device or resolve_device(suite.runtime.device)
    data, data_note = _data_for_estimate(suite, estimate_only)
    est = measure(suite, pending[0], device, data=data)
    recipe = suite.recipe

    # training: each plugin of the pending runs (its first run stands for its seeds and lrs)
    first = {}
    for spec in pending:
        first.setdefault(spec.plugin, spec)
    step_s = {pending[0].plugin: est.step_s}
    started = time.perf_counter()
    # where one probe step is slow the backbone dominates, and the plugins' heads hardly matter
    cheap = est.step_s * est.probe_batch / recipe.batch_size < TRAIN_PROBE_BUDGET_S / 20
    for plugin, spec in first.items():
        # a plugin with an inner attack costs several plain steps: never the others' mean
        must = _uses_input(plugin)
        if plugin not in step_s and (must or (cheap and time.perf_counter() - started < TRAIN_PROBE_BUDGET_S)):
            step_s[plugin] = _plugin_step_s(suite, spec, data, device, est.probe_batch)
    est.plugins_timed = len(step_s)
    mean_step = sum(step_s.values()) / len(step_s)
    est.step_s_by_plugin = {p: step_s.get(p, mean_step) for p in first}

    n_eval_all = sum(data.split(s)[0].shape[0] for s in ("train", "val", "test"))
    val_passes = sum(math.ceil(n / recipe.log_every) for n in left.values() if n)
    est.runs = len(pending)
    est.epochs_left = sum(left.values())
    est.train_s = sum(left[spec] * est.steps_per_epoch * est.step_s_by_plugin[spec.plugin] for spec in pending)
    est.eval_s = est.eval_forward_s * (val_passes * data.val_x.shape[0] + len(pending) * n_eval_all)

    # evaluators: per plugin while the budget lasts, the mean of those for the rest
    names = suite.evaluation.evaluators
    if not names:
        est.evaluators_s, est.evaluators_note = 0.0, "the suite runs no evaluators"
    elif est.eval_forward_s * n_eval_all > EVAL_PROBE_MAX_S:
        est.evaluators_note = ("evaluators not included (timing them here would take minutes; they attack "
                               f"{suite.evaluation.subset_size} inputs per run)")
    else:
        per_run: dict[str, float] = {}
        started = time.perf_counter()
        try:
            for plugin, spec in first.items():
                if per_run and time.perf_counter() - started > EVAL_PROBE_BUDGET_S:
                    break
                per_run[plugin] = time_evaluators(suite, spec, data, device)
        except Exception as exc:  # noqa: BLE001  an estimate must never stop the sweep it describes
            if not per_run:
                est.evaluators_note = (f"evaluators not included (timing them on an untrained model failed: "
                                       f"{type(exc).__name__}: {str(exc)[:120]})")
                est.data_note = data_note
                return _with_parallel(est, suite, pending, device)
        mean_eval = sum(per_run.values()) / len(per_run)
        est.evaluators_s = sum(per_run.get(spec.plugin, mean_eval) for spec in pending)
        n_inputs = min(suite.evaluation.subset_size, data.test_y.shape[0])
        timed = "" if len(per_run) == len(first) else f", {len(per_run)} of {len(first)} plugins"
        est.evaluators_note = (f"{len(names)} evaluator(s) timed on an untrained model{timed}, "
                               f"scaled to {n_inputs} attack inputs; early-stopping attacks may take longer "
                               f"on a trained model")
    est.data_note = data_note
    return _with_parallel(est, suite, pending, device)


def _with_parallel(est: Estimate, suite: Suite, pending: list[RunSpec], device: torch.device) -> Estimate:
    """Runs at once with a pool, where it is clear: CPU runs of a fixed thread count that fit the cores."""
    executor, threads = suite.executor, suite.runtime.num_threads
    if (executor.kind == "pool" or executor.workers > 1) and threads and device.type == "cpu":
        est.parallel = max(1, min(executor.workers, len(pending), _cores() // threads))
    return est


def nothing_pending_line(suite: Suite, runs: list[RunSpec], out_root: Path, retry_failed: bool) -> str:
    """What the estimate says when every selected run is done (or failed, and not retried)."""
    if not runs:
        return f"estimate: no runs selected in suite {suite.name}"
    statuses = [result_status(spec.directory(out_root)) for spec in runs]
    done, failed = statuses.count("done"), statuses.count("failed")
    where = Path(out_root) / suite.name
    text = f"estimate: nothing to train: all {len(runs)} selected run(s) of {suite.name} under {where} are "
    if failed and not retry_failed:
        return text + f"finished ({done} done, {failed} failed; --retry-failed reruns the failed ones)"
    return text + "done"


def preflight(suite: Suite, runs: list[RunSpec], out_root: Path, *, stream: TextIO | None = None,
              device: torch.device | None = None, retry_failed: bool = False,
              estimate_only: bool = False, quiet: bool = False) -> Estimate | None:
    """Print the sweep's estimate (one line; not under ``quiet``, unless the estimate is all
    that was asked for) and fail early if it cannot fit in memory. With nothing left to
    train, the line says so (and why)."""
    est = estimate_sweep(suite, runs, out_root, device, retry_failed=retry_failed, estimate_only=estimate_only)
    if not quiet or estimate_only:
        text = est.line(suite) if est is not None else nothing_pending_line(suite, runs, out_root, retry_failed)
        print(text, file=stream or sys.stdout, flush=True)
    return est
