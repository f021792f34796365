"""``bench check``, ``bench baseline`` and ``bench published``: results against references."""
from __future__ import annotations

import argparse
from pathlib import Path

from bench.cli.common import add_imports, add_runs, runs_root, suite_name

CHECK_EPILOG = """\
reference (--against):
  published   the paper's numbers (bench/published/*.csv); only for suites on cifar10 or
              cifar100; compares the metrics the paper reports and its shape claims
  FILE        a baseline JSON written by `bench baseline` for the same suite and suite
              configuration; compares every metric it holds
  DIR         a runs tree holding every run of the same suite and configuration (e.g. the
              committed leaderboards/runs): taken as the baseline `bench baseline` would write
  (default)   bench/baselines/<suite>.json

rule: a (plugin, metric) passes within a per-metric tolerance floor max(rtol*|ref|, atol);
beyond it, Welch's t-test (both sides n >= 2), a prediction test (one side a single run) or
a one-sample t-test (a reference published without its std), Holm-Bonferroni over all
tests at family-wise alpha; with no spread on either side, a difference beyond the floor
fails. Every metric an evaluator declares as a column is compared (a third-party
evaluator's too). Shape claims (LPC-family R >= 100x NoPen, LPC rho >= 10x NoPen on
DeepFool rho and, where measured, best-known rho, Sigma_W of L2-penalised models >= 100x
smaller, LPC accuracy not below NoPen beyond noise, Pearson(R, rho) >= 0.9): must hold against `published`; against a baseline only a
claim that held there and no longer holds fails. Missing inputs: skipped, with the reason.
Failed or unfinished runs fail the check.

exit status: 0 passed, 1 failed, 2 bad input (one line on stderr).
"""


def add_arguments(subparsers) -> None:
    check = subparsers.add_parser(
        "check", help="compare a suite's runs with the paper's numbers or a committed baseline",
        description="Compare the runs of one suite with a reference, metric by metric and claim by claim; "
                    "print a pass/fail table and exit non-zero on any failure.",
        epilog=CHECK_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    check.add_argument("--suite", help="the suite: a built-in name or a YAML path (default: the only one under --runs)")
    add_runs(check)
    check.add_argument("--against", help="'published', a baseline JSON file, or a runs tree such as leaderboards/runs "
                            "(default: bench/baselines/<suite>.json)")
    check.add_argument("--alpha", type=float, default=0.05,
                       help="family-wise significance level of the Holm-Bonferroni procedure (default: 0.05)")
    check.add_argument("--save", metavar="FILE", help="also write the table to this file")
    add_imports(check)
    check.set_defaults(func=cmd_check)

    base = subparsers.add_parser(
        "baseline", help="freeze a suite's results into a baseline JSON for `bench check`",
        description="Write per-plugin mean/std/n of every metric, the shape claims and the commit of a "
                    "finished suite to a baseline file (default: bench/baselines/<suite>.json). Every run "
                    "of the suite must be done.")
    base.add_argument("--suite", help="the suite: a built-in name or a YAML path (default: the only one under --runs)")
    add_runs(base)
    base.add_argument("--save", metavar="FILE", help="baseline file to write (default: bench/baselines/<suite>.json)")
    add_imports(base)
    base.set_defaults(func=cmd_baseline)

    pub = subparsers.add_parser(
        "published", help="write leaderboards/published.md from the paper's numbers in the package",
        description="Render the paper's Tables I, II and IV (CIFAR-10 and CIFAR-100), its Pearson r(R, rho) "
                    "and its shape claims evaluated on its own numbers, from bench/published/*.csv.")
    pub.add_argument("--leaderboards", default="leaderboards", metavar="DIR",
                     help="output folder (default: leaderboards/)")
    pub.set_defaults(func=cmd_published)


def cmd_check(args) -> int:
    from bench.core.io import atomic_write_text
    from bench.reporting.baseline import default_path
    from bench.reporting.compare import run_check
    from bench.runs.folder import load_runs

    root, suite = runs_root(args), suite_name(args)
    against = args.against
    if against is None:
        against = str(default_path(suite or load_runs(root, None)[0].suite))
    result = run_check(root, suite, against, alpha=args.alpha, imports=tuple(args.imports))
    print(result.text, end="")
    if args.save:
        atomic_write_text(Path(args.save), result.text)
    return 0 if result.ok else 1


def cmd_baseline(args) -> int:
    from bench.reporting.baseline import write_baseline
    path = write_baseline(runs_root(args), suite_name(args), Path(args.save) if args.save else None,
                          imports=tuple(args.imports))
    print(f"baseline: {path}")
    return 0


def cmd_published(args) -> int:
    from bench.reporting.published.page import render_published
    path = render_published(Path(args.leaderboards))
    print(f"published numbers: {path}")
    return 0
