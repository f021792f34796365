"""Time the full metric suite on CIFAR-sized latents: 50,000 × 64 train, 10,000 × 64 test, 10 classes.

    python benchmarks/bench_metrics.py [--scenario collapsed|overlapping|both] [--repeat N] [--threads T]
    python benchmarks/bench_metrics.py --knn [--no-old] [--threads 1]

Two latent geometries bracket what trained models produce:

* collapsed   — LPC-like: each class near one hypercube vertex (±1 per coordinate,
                within-class std 0.02): the k-NN search prunes every other class;
* overlapping — NoPen-like: Gaussian classes with R ≈ 2, no pruning possible: the exact
                k-NN search compares every pair of the (subsampled) points.

Each evaluator runs with its default settings (as a suite would), on a context like the
harness's; Lipschitz uses a 3072-256-64-10 MLP on 1,000 32×32×3 inputs (its cost is the
model's, not the latents'). Prints each metric's time, the total and the slowest one,
and the machine's load average (the machine may be shared).

``--knn`` times the exact k-NN search of the KL entropy alone (k = 20) on all 50,000
points, not the evaluator's 10,000-point subsample, at d = 16 (CIFAR-10's narrow LPC
latent) and d = 64, both geometries: the current ``bench.metrics.knn.knn_radius`` beside
the one before issue #13 (``bench/metrics/entropy.py`` at commit OLD_COMMIT, read with
``git show``: cKDTree with ``workers=-1`` for d ≤ 16, a blocked float64 search above),
with the ratio and the largest difference between the two answers. Wall and CPU time
are both printed: on a shared machine wall time includes waiting for a core.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.evaluation.hook import EVALUATORS, EvalContext, evaluator_options  # noqa: E402
from bench.suites.imports import load_builtin_evaluators  # noqa: E402

METRICS = ("geometry", "entropy", "binarity", "lipschitz")
OLD_COMMIT = "b3243e2"          # the last commit with the pre-#13 k-NN search
N_TRAIN, N_TEST, DIM, CLASSES = 50_000, 10_000, 64, 10


def latents(scenario: str, n: int, rng: np.random.Generator, dim: int = DIM) -> tuple[torch.Tensor, torch.Tensor]:
    y = rng.integers(0, CLASSES, n)
    if scenario == "collapsed":
        vertices = np.sign(rng.standard_normal((CLASSES, dim)))
        z = vertices[y] + 0.02 * rng.standard_normal((n, dim))
    else:
        means = rng.standard_normal((CLASSES, dim)) * 0.9
        z = means[y] + rng.standard_normal((n, dim)) * 0.5
    return torch.tensor(z, dtype=torch.float32), torch.tensor(y)


class Head(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.num_classes = CLASSES
        self.classifier = torch.nn.Linear(DIM, CLASSES, bias=False)


class Model(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 32 * 32, 256), torch.nn.SiLU(),
                                        torch.nn.Linear(256, DIM))
        self.head = Head()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head.classifier(self.body(x))


def make_context(scenario: str, seed: int = 0) -> EvalContext:
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    zs, ys = {}, {}
    for split, n in (("train", N_TRAIN), ("val", 1000), ("test", N_TEST)):
        zs[split], ys[split] = latents(scenario, n, rng)
    model = Model().eval()
    preds = {s: torch.where(torch.rand(len(ys[s])) < 0.95, ys[s], torch.randint(0, CLASSES, (len(ys[s]),)))
             for s in ys}
    data = SimpleNamespace(num_classes=CLASSES, pixel_scale=255.0,
                           test_x=torch.randint(0, 256, (N_TEST, 3, 32, 32), dtype=torch.uint8), test_y=ys["test"])
    return EvalContext(model=model, data=data, device=torch.device("cpu"), latents=zs,
                       labels=ys, predictions=preds, subset=torch.arange(1000), latent_name="z")


def run(scenario: str) -> tuple[dict[str, float], float]:
    ctx = make_context(scenario)
    times = {}
    t_all = time.perf_counter()
    for name in METRICS:
        opts = evaluator_options(name, {})
        t0 = time.perf_counter()
        out = EVALUATORS.get(name)(ctx, opts)
        times[name] = time.perf_counter() - t0
        ctx.model.zero_grad(set_to_none=True)
        ctx.results[name] = out
    total = time.perf_counter() - t_all
    geo, ent, bim = ctx.results["geometry"]["train"], ctx.results["entropy"]["train"], ctx.results["binarity"]["train"]
    print(f"  sanity: R={geo['R_mean']:.3g} NC1={geo['nc1']:.3g} H/d={ent['entropy_per_dim']:.3g} "
          f"(k-NN on {ent['n']} of {ent['n_total']}) gmm score={bim['gmm_score_mean']:.3g}")
    return times, total


def old_knn_radius():
    """``knn_radius`` as it was at OLD_COMMIT (read from git), or None without the history."""
    import subprocess
    import types
    root = Path(__file__).resolve().parents[1]
    try:
        source = subprocess.run(["git", "show", f"{OLD_COMMIT}:bench/metrics/entropy.py"], cwd=root,
                                capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    module = types.ModuleType("old_entropy")
    exec(compile(source, f"{OLD_COMMIT}:bench/metrics/entropy.py", "exec"), module.__dict__)
    return module.knn_radius


def timed(fn, *args, **kwargs):
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - wall, time.process_time() - cpu


def knn_section(threads: int, with_old: bool, n: int = N_TRAIN) -> float:
    from bench.metrics.knn import knn_radius
    old = old_knn_radius() if with_old else None
    if with_old and old is None:
        print(f"(no git history: the old path at {OLD_COMMIT} is not timed)")
    print(f"exact k-NN (k = 20) on {n:,} points, {threads} thread(s); times are wall / CPU seconds")
    worst = 0.0
    for d in (16, 64):
        for scenario in ("overlapping", "collapsed"):
            z, y = latents(scenario, n, np.random.default_rng(0), d)
            z, y = z.double().numpy(), y.numpy()
            (rho, method), wall, cpu = timed(knn_radius, z, 20, y, threads=threads)
            worst = max(worst, wall)
            line = f"  {n:,} × {d:<3} {scenario:<11}  new {wall:6.2f} / {cpu:6.2f} s  ({method})"
            if old is not None:
                (rho_old, method_old), wall_old, cpu_old = timed(old, z, 20, y)
                diff = float(np.max(np.abs(rho - rho_old) / np.maximum(rho_old, 1e-300)))
                line += (f"\n  {'':<28}old {wall_old:6.2f} / {cpu_old:6.2f} s  ({method_old})"
                         f"\n  {'':<28}old / new: {wall_old / wall:5.1f}× wall, {cpu_old / cpu:5.1f}× CPU;"
                         f" max relative difference of ρ_k {diff:.1e}")
            print(line + f"   load average {os.getloadavg()[0]:.1f}", flush=True)
    print(f"slowest new: {worst:.2f} s wall (target ≤ 10 s)")
    return worst


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", choices=["collapsed", "overlapping", "both"], default="both")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--threads", type=int, default=0,
                        help="torch and BLAS threads, as a suite's runtime.num_threads (0: library defaults)")
    parser.add_argument("--knn", action="store_true",
                        help="time only the exact k-NN search at 50,000 × 16 and × 64, beside the old one")
    parser.add_argument("--no-old", action="store_true", help="with --knn: skip the old path (minutes)")
    args = parser.parse_args()
    if args.threads:
        from threadpoolctl import threadpool_limits
        torch.set_num_threads(args.threads)
        threadpool_limits(limits=args.threads)
    print(f"{os.cpu_count()} CPU(s), threads {args.threads or 'default'} (torch {torch.get_num_threads()}); "
          f"load average before: {os.getloadavg()[0]:.1f}")
    if args.knn:
        knn_section(torch.get_num_threads(), not args.no_old)
        return 0
    load_builtin_evaluators()
    scenarios = ["collapsed", "overlapping"] if args.scenario == "both" else [args.scenario]
    print(f"latents: train {N_TRAIN}×{DIM}, test {N_TEST}×{DIM}, {CLASSES} classes")
    worst = 0.0
    for scenario in scenarios:
        for rep in range(args.repeat):
            print(f"{scenario} (run {rep + 1}/{args.repeat}):")
            times, total = run(scenario)
            for name, t in times.items():
                print(f"  {name:<10} {t:6.2f} s")
            slowest = max(times, key=times.get)
            print(f"  total      {total:6.2f} s   slowest: {slowest} ({times[slowest]:.2f} s)   "
                  f"load average now: {os.getloadavg()[0]:.1f}")
            worst = max(worst, total)
    print(f"worst total: {worst:.2f} s (target ≤ 10 s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
