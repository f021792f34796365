"""``bench run``'s estimate of a positive control's training step vs the step a real run takes.

The estimate (``bench.training.estimate``) times the trainer's own step
(``bench.training.step.training_step``), so a plugin whose loss runs an inner attack
(PGD-AT: about steps + 1 plain steps; TRADES: steps + 2) or a double backprop
(InputGradNorm) is estimated at its real cost, not at a plain step's. For each plugin:

* estimate: ``estimate_sweep`` on the suite with only that plugin, one seed (s/step);
* measured: a real run of ``--epochs`` epochs through ``bench.training.trainer.train_run``
  (evaluators off), the log rows' epoch times divided by their steps (s/step).

The two are taken back to back per plugin, so that load from other processes hits both
alike; on a shared machine rerun when a ratio is far off. Target: every ratio
estimate / measured within 1 ± 0.30.

    python benchmarks/bench_estimate_controls.py                    # PGD-AT, TRADES, InputGradNorm, NoPen on digits
    python benchmarks/bench_estimate_controls.py --plugins PGD-AT --epochs 20
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch

from bench.core import io
from bench.executors.sweep import select_runs
from bench.suites import load_suite
from bench.training.estimate import estimate_sweep
from bench.training.trainer import train_run


def measure(suite_name: str, plugin: str, epochs: int, overrides: list[str]) -> tuple[float, float]:
    """(estimated s/step, measured s/step) of ``plugin``'s seed-0 run."""
    suite = load_suite(suite_name, [f"plugins=[{plugin}]", "seeds=[0]", f"recipe.epochs={epochs}",
                                    "evaluation.evaluators=[]", *overrides])
    runs = select_runs(suite)
    with tempfile.TemporaryDirectory(prefix="bench-estimate-") as tmp:
        est = estimate_sweep(suite, runs, Path(tmp), torch.device("cpu"))
        outcome = train_run(suite, runs[0], Path(tmp))
        assert outcome.status == "done", outcome.result
        rows = io.read_jsonl(runs[0].directory(Path(tmp)) / "log.jsonl")
    measured = sum(r["time_s"] for r in rows) / (len(rows) * est.steps_per_epoch)
    return est.step_s_by_plugin[plugin], measured


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--suite", default="digits")
    p.add_argument("--plugins", nargs="+", default=["PGD-AT", "TRADES", "InputGradNorm", "NoPen"])
    p.add_argument("--epochs", type=int, default=10, help="epochs of the measured run (digits: 36 steps each)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--tolerance", type=float, default=0.30)
    args = p.parse_args(argv)
    print(f"torch {torch.__version__}, CPU, suite {args.suite}, {args.epochs} measured epochs per plugin")
    print(f"{'plugin':<14} {'estimate ms':>11} {'measured ms':>11} {'ratio':>6}")
    worst = 0.0
    for plugin in args.plugins:
        estimated, measured = measure(args.suite, plugin, args.epochs, args.overrides)
        ratio = estimated / measured
        worst = max(worst, abs(ratio - 1))
        print(f"{plugin:<14} {estimated * 1e3:>11.3f} {measured * 1e3:>11.3f} {ratio:>6.2f}")
    verdict = "meets" if worst <= args.tolerance else "misses"
    print(f"largest |ratio - 1| = {worst:.2f}: {verdict} the target ≤ {args.tolerance:.2f}")
    return 0 if worst <= args.tolerance else 1


if __name__ == "__main__":
    sys.exit(main())
