"""The ``layerwise`` evaluator's training-split pass at CIFAR scale: 50,000 features of a ResNet stage.

    python benchmarks/bench_layerwise.py [--n 50000] [--dims 64 128 256 512] [--classes 10] [--batch 500]

The evaluator never holds a layer's training features: ``ClassMoments`` folds each batch into
per-class counts and means and the summed within-class scatter (Chan et al.'s pairwise
update), O(K·d + d²) memory. This script times that streaming pass on synthetic features of
the widths of ResNet-18's stem and stages (64, 64, 128, 256, 512 after spatial averaging),
beside the one-pass computation on the whole (N, d) array, and prints:

* the streaming time, the one-pass time and their ratio (streaming / one pass);
* the memory each holds: the accumulator's arrays vs the (N, d) float64 feature matrix;
* the largest relative difference between the two NC1 (pinv) and CDNV values (they must agree).

The features are Gaussian classes around random means (the cost does not depend on the
geometry). The forward passes through the network, which dominate on a CPU, are not included:
they cost the same whichever way the moments are taken.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.metrics.collapse import ClassMoments, collapse_metrics, moments_of  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=50000)
    parser.add_argument("--dims", type=int, nargs="+", default=[64, 128, 256, 512])
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--batch", type=int, default=500)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    print(f"N = {args.n}, K = {args.classes}, batch = {args.batch}")
    print(f"{'d':>5} {'stream s':>9} {'one-pass s':>10} {'ratio':>6} {'stream MiB':>10} {'matrix MiB':>10} "
          f"{'max rel diff':>12}")
    for d in args.dims:
        y = rng.integers(0, args.classes, args.n)
        x = rng.normal(size=(args.n, d)) + 4 * rng.normal(size=(args.classes, d))[y]
        t0 = time.perf_counter()
        acc = ClassMoments(args.classes, d)
        for start in range(0, args.n, args.batch):
            acc.add(x[start:start + args.batch], y[start:start + args.batch])
        streamed = collapse_metrics(acc)
        t_stream = time.perf_counter() - t0
        t0 = time.perf_counter()
        whole = collapse_metrics(moments_of(x, y, args.classes))
        t_whole = time.perf_counter() - t0
        held = (acc.means.nbytes + acc.scatter_w.nbytes + acc.class_m2.nbytes + acc.counts.nbytes) / 2**20
        diff = max(abs(streamed[k] - whole[k]) / abs(whole[k]) for k in ("nc1_pinv", "cdnv", "effective_rank"))
        print(f"{d:>5} {t_stream:>9.2f} {t_whole:>10.2f} {t_stream / t_whole:>6.2f} {held:>10.2f} "
              f"{x.nbytes / 2**20:>10.1f} {diff:>12.1e}")


if __name__ == "__main__":
    main()
