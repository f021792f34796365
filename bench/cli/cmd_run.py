"""``bench run``: train and evaluate every run of a suite that is not done, then write its leaderboard."""
from __future__ import annotations

import sys
import time

from bench.cli.common import add_imports, add_leaderboards, add_runs, leaderboards_dir, runs_root


def add_arguments(subparsers) -> None:
    p = subparsers.add_parser("run", help="train and evaluate every run of a suite that is not done")
    p.add_argument("--suite", default="digits", help="built-in suite name or a YAML path (default: digits)")
    p.add_argument("--plugins", nargs="+",
                   help="only these plugins (any registered plugin; one the suite does not list is added to it)")
    p.add_argument("--seeds", nargs="+", type=int, help="only these seeds of the suite")
    add_runs(p)
    add_imports(p)
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a suite value, e.g. --set recipe.epochs=20 or --set plugin_params.LPC.gamma.cap=1e3 "
                        "(repeatable)")
    p.add_argument("--device", help="auto, cpu, cuda, cuda:N (default: the suite's, auto)")
    p.add_argument("--data-root", help="dataset folder (cifar10, cifar100, imagefolder suites)")
    p.add_argument("--limit-train", type=int,
                   help="quick look: a stratified N of the training set (before the validation hold-out)")
    p.add_argument("--limit-test", type=int, help="quick look: a stratified N of the test set")
    p.add_argument("--quiet", action="store_true",
                   help="nothing on stdout: no bars, run lines, estimate, summary or paths (errors and a failed "
                        "sweep's summary still go to stderr)")
    p.add_argument("--smoke", action="store_true",
                   help="the suite at a few minutes' CPU scale, every stage kept (2 short epochs, 1,000 training "
                        "and 200 test images, attacks on 50, 1 seed, 1 lr), filed and reported as <suite>-smoke")
    p.add_argument("--retry-failed", action="store_true", help="rerun runs recorded as failed")
    add_leaderboards(p)
    p.add_argument("--no-report", action="store_true", help="do not write the leaderboard after the runs")
    from bench.executors import add_executor_arguments
    add_executor_arguments(p)
    p.add_argument("--deterministic", action="store_true",
                   help="deterministic kernels (torch.use_deterministic_algorithms; slower on GPU)")
    p.add_argument("--compile", action="store_true", help="torch.compile the backbone (GPU; first epoch slower)")
    p.add_argument("--estimate-only", action="store_true",
                   help="measure a few steps, print how long the pending runs would take, and stop")
    p.set_defaults(func=cmd_run)


def run_overrides(args) -> list[str]:
    """The convenience flags as ordinary checked overrides."""
    overrides = list(args.overrides)
    for flag, key in (("device", "runtime.device"), ("data_root", "dataset.root"),
                      ("limit_train", "dataset.limit_train"), ("limit_test", "dataset.limit_test")):
        if getattr(args, flag) is not None:
            overrides.append(f"{key}={getattr(args, flag)}")
    for flag in ("deterministic", "compile"):
        if getattr(args, flag):
            overrides.append(f"runtime.{flag}=true")
    return overrides


def cmd_run(args) -> int:
    from bench.executors import executor_from_args, make_executor
    from bench.executors.sweep import run_sweep, select_runs, summary_lines
    from bench.reporting.report import build_report
    from bench.suites import add_plugins, load_suite
    from bench.training.estimate import preflight

    out = runs_root(args)
    suite = load_suite(args.suite, run_overrides(args), imports=tuple(args.imports), smoke=args.smoke)
    suite = add_plugins(suite, args.plugins)
    runs = select_runs(suite, args.plugins, args.seeds)
    suite = suite.replace(executor=executor_from_args(suite.executor, args))
    if suite.executor.kind != "slurm":  # the submitting host's device says nothing about the nodes'
        # how long the pending runs take; fail early if they cannot fit
        preflight(suite, runs, out, retry_failed=args.retry_failed, estimate_only=args.estimate_only,
                  quiet=args.quiet)
    elif args.estimate_only:
        print("estimate: not measured for --executor slurm (this machine says nothing about the nodes' "
              "devices); run the same command with --estimate-only and without --executor slurm on a node")
    if args.estimate_only:
        return 0
    executor = make_executor(suite.executor, out, quiet=args.quiet, wait=not args.no_wait)
    t0 = time.perf_counter()
    outcomes = run_sweep(suite, runs, out, quiet=args.quiet, retry_failed=args.retry_failed, executor=executor)
    text, code = summary_lines(suite, outcomes, time.perf_counter() - t0, out)
    if not args.quiet:
        print(text)
    elif code:  # quiet, but the failures the error line points to must be somewhere
        print(text, file=sys.stderr)
    if not args.no_report and any(o.status in ("done", "skipped") for o in outcomes):
        path = build_report(out, suite.name, leaderboards_dir(args))
        if not args.quiet:
            print(f"leaderboard: {path}")
    if code:
        failed = sum(o.status == "failed" for o in outcomes)
        print(f"error: {failed} run(s) failed (listed above; results kept, rerun with --retry-failed)",
              file=sys.stderr)
    return code
