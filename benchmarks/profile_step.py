"""Per-step time of the harness's training loop (``bench.training.trainer._train_epoch``) on a
suite's real model, data, batch size and optimizer, for one or more plugins; optionally a
pyinstrument profile of the steps.

    python benchmarks/profile_step.py                                   # digits-paper, LPC
    python benchmarks/profile_step.py --plugins all                     # the 11 plugins, and the suite's time
    python benchmarks/profile_step.py --profile                         # + where the time goes (pip install pyinstrument)
    python benchmarks/profile_step.py --suite digits --set recipe.batch_size=128   # the unpaced loop

Each measurement trains ``--steps`` optimizer steps and reads the process CPU time (one
intra-op thread: the steadier clock on a shared machine) and the wall time; the table gives
the median and the fastest of ``--repeats`` measurements, after one untimed warm-up. Noise
on a shared machine only ever adds time: the fastest is the better estimate of the cost,
the median of what a sweep will see.

It also runs on the code from before step pacing (no ``batch_stream``): there a measurement
is whole passes over the data, ``ceil(steps / steps per pass)`` of them.
"""
from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.data import DeviceLoader  # noqa: E402
from bench.runs.folder import RunSpec  # noqa: E402
from bench.suites import load_suite  # noqa: E402
from bench.training import trainer  # noqa: E402
from bench.training.trainer import build_model, get_data, make_optimizer  # noqa: E402


class Stepper:
    """One plugin's model, optimizer and batch stream; ``run(steps)`` trains that many steps."""

    def __init__(self, suite, plugin: str, seed: int = 0) -> None:
        self.suite, self.device = suite, torch.device("cpu")
        data = get_data(suite)
        recipe = suite.recipe
        self.spec = RunSpec(suite.name, plugin, seed, suite.lrs[0])
        self.model = build_model(suite, plugin, data, seed)
        self.optimizer = make_optimizer(self.model, suite, self.spec.lr)
        self.loader = DeviceLoader(data.train_x, data.train_y, recipe.batch_size, pixel_scale=data.pixel_scale,
                                   device=self.device, shuffle=True, augment=recipe.augment,
                                   padding=recipe.crop_padding)
        self.paced = hasattr(trainer, "batch_stream")
        self.stream = trainer.batch_stream(self.loader, seed) if self.paced else None
        self.epoch = 0

    def run(self, steps: int) -> int:
        """Train ``steps`` steps (whole passes on the old code); returns the steps trained."""
        if self.paced:
            import itertools
            trainer._train_epoch(self.model, self.optimizer, itertools.islice(self.stream, steps), self.suite,
                                 self.spec, self.epoch, self.device, self.suite.runtime.amp)
            self.epoch += 1
            return steps
        passes = math.ceil(steps / len(self.loader))
        for _ in range(passes):
            trainer._train_epoch(self.model, self.optimizer, self.loader, self.suite, self.spec, self.epoch,
                                 self.device, self.suite.runtime.amp)
            self.epoch += 1
        return passes * len(self.loader)


def measure(stepper: Stepper, steps: int, repeats: int) -> dict:
    stepper.run(steps)  # warm-up: allocator, oneDNN/MKL caches, the first optimizer states
    cpu, wall = [], []
    for _ in range(repeats):
        w0, c0 = time.perf_counter(), time.process_time()
        n = stepper.run(steps)
        cpu.append((time.process_time() - c0) / n)
        wall.append((time.perf_counter() - w0) / n)
    return {"cpu": statistics.median(cpu), "cpu_min": min(cpu), "wall": statistics.median(wall),
            "wall_min": min(wall), "steps": n}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--suite", default="digits-paper")
    p.add_argument("--plugins", nargs="+", default=["LPC"], help="plugin names, or 'all' for the suite's")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--steps", type=int, default=390, help="optimizer steps per measurement")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--profile", action="store_true", help="print a pyinstrument profile of the first plugin")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    suite = load_suite(args.suite, args.overrides)
    plugins = list(suite.plugins) if args.plugins == ["all"] else args.plugins
    recipe = suite.recipe
    print(f"torch {torch.__version__}, CPU, {torch.get_num_threads()} thread(s); suite {suite.name}: batch "
          f"{recipe.batch_size}, optimizer {recipe.optimizer}, {args.repeats} × {args.steps} steps per plugin")
    print(f"{'plugin':<11} {'cpu ms/step':>11} {'(fastest)':>9} {'wall ms/step':>12} {'(fastest)':>9}")
    rows = {}
    for plugin in plugins:
        m = measure(Stepper(suite, plugin), args.steps, args.repeats)
        rows[plugin] = m
        print(f"{plugin:<11} {m['cpu'] * 1e3:>11.3f} {m['cpu_min'] * 1e3:>9.3f} {m['wall'] * 1e3:>12.3f} "
              f"{m['wall_min'] * 1e3:>9.3f}")
    mean_cpu = statistics.mean(m["cpu"] for m in rows.values())
    mean_fast = statistics.mean(m["cpu_min"] for m in rows.values())
    epoch_steps = getattr(recipe, "epoch_steps", None)  # None on the code before step pacing
    steps_per_run = recipe.epochs * (epoch_steps or rows[plugins[0]]["steps"])
    print(f"mean over {len(rows)} plugin(s): {mean_cpu * 1e3:.3f} ms/step (fastest {mean_fast * 1e3:.3f})")
    if epoch_steps:
        runs = len(plugins) * len(suite.seeds) * len(suite.lrs)
        print(f"training of {runs} run(s) × {steps_per_run:,} steps at the mean: "
              f"{runs * steps_per_run * mean_cpu / 60:.1f} CPU-minutes "
              f"(fastest {runs * steps_per_run * mean_fast / 60:.1f}); evaluation not included")
    if args.profile:
        from pyinstrument import Profiler
        stepper = Stepper(suite, plugins[0])
        stepper.run(args.steps)
        profiler = Profiler(interval=0.0005)
        profiler.start()
        n = sum(stepper.run(args.steps) for _ in range(args.repeats))
        profiler.stop()
        print(f"\npyinstrument, {plugins[0]}, {n} steps:")
        print(profiler.output_text(unicode=True, color=False, show_all=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
