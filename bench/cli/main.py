"""``python -m bench`` / ``bench``: run, list, report."""
from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

from bench.core.errors import BenchError


def _add_run_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--suite", default="digits", help="built-in suite name or a YAML path (default: digits)")
    p.add_argument("--plugins", nargs="+", help="only these plugins of the suite")
    p.add_argument("--seeds", nargs="+", type=int, help="only these seeds of the suite")
    p.add_argument("--out", default="runs", help="output root for run directories (default: runs/)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a suite value, e.g. --set recipe.epochs=20 (repeatable)")
    p.add_argument("--device", help="auto, cpu, cuda, cuda:N (default: the suite's, auto)")
    p.add_argument("--data-root", help="dataset folder (cifar10, cifar100, imagefolder suites)")
    p.add_argument("--limit-train", type=int, help="quick look: a stratified N of the training set (before the validation hold-out)")
    p.add_argument("--limit-test", type=int, help="quick look: a stratified N of the test set")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--retry-failed", action="store_true", help="rerun runs recorded as failed")
    p.add_argument("--leaderboards", default="leaderboards", help="where `run` writes the report")
    p.add_argument("--no-report", action="store_true", help="do not write the leaderboard after the runs")
    from bench.executors import add_executor_arguments  # [issue 7] --executor, --workers, slurm options
    add_executor_arguments(p)
    # [issue 6] GPU-path switches and the pre-sweep estimate
    p.add_argument("--deterministic", action="store_true",
                   help="deterministic kernels (torch.use_deterministic_algorithms; slower on GPU)")
    p.add_argument("--compile", action="store_true", help="torch.compile the backbone (GPU; first epoch slower)")
    p.add_argument("--estimate-only", action="store_true",
                   help="measure a few steps, print how long the pending runs would take, and stop")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bench", description="lpc-bench: robustness benchmarks for deep classifiers")
    sub = parser.add_subparsers(dest="command")
    run = sub.add_parser("run", help="train and evaluate every run of a suite that is not done")
    _add_run_args(run)
    lst = sub.add_parser("list", help="list suites, plugins, datasets, backbones, evaluators")
    lst.add_argument("what", nargs="?", default="all",
                     choices=["all", "suites", "plugins", "datasets", "backbones", "attacks", "metrics"])
    rep = sub.add_parser("report", help="write leaderboards/<suite>.md from run directories")
    rep.add_argument("--suite", help="the suite to report (default: the only one under --runs)")
    rep.add_argument("--runs", default="runs", help="runs root (default: runs/)")
    rep.add_argument("--out", default="leaderboards", help="output folder (default: leaderboards/)")
    _add_module_commands(sub)
    return parser


def _add_module_commands(sub) -> None:
    import importlib
    import pkgutil
    for package_name in COMMAND_MODULES:
        package = importlib.import_module(package_name)
        for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda m: m.name):
            if not info.name.startswith("cmd_"):
                continue
            module = importlib.import_module(f"{package_name}.{info.name}")
            module.add_arguments(sub)


def run_overrides(args) -> list[str]:
    """The convenience flags as ordinary checked overrides."""
    overrides = []
    if args.device:
        overrides.append(f"runtime.device={args.device}")
    if args.data_root:
        overrides.append(f"dataset.root={args.data_root}")
    if args.limit_train is not None:
        overrides.append(f"dataset.limit_train={args.limit_train}")
    if args.limit_test is not None:
        overrides.append(f"dataset.limit_test={args.limit_test}")
    if getattr(args, "deterministic", False):  # [issue 6]
        overrides.append("runtime.deterministic=true")
    if getattr(args, "compile", False):  # [issue 6]
        overrides.append("runtime.compile=true")
    return overrides


def cmd_run(args) -> int:
    from bench.suites import load_suite
    from bench.reporting.report import build_report
    from bench.executors.sweep import run_sweep, select_runs

    overrides = list(args.overrides)
    overrides += run_overrides(args)
    suite = load_suite(args.suite, overrides)
    runs = select_runs(suite, args.plugins, args.seeds)
    unknown_seeds = sorted(set(args.seeds or ()) - set(suite.seeds))
    if unknown_seeds:  # else `--seeds 7` would quietly run nothing and exit 0
        raise BenchError(f"seed(s) {', '.join(map(str, unknown_seeds))} not in suite {suite.name} "
                         f"(its seeds: {', '.join(map(str, suite.seeds))}; add seeds with --set seeds=[...])")
    out = Path(args.out)
    # [issue 7] the executor: the suite's executor section with --executor/--workers/slurm flags
    from bench.executors import executor_from_args, make_executor
    from bench.executors.sweep import summarize
    suite = suite.replace(executor=executor_from_args(suite.executor, args))
    # [issue 6] say how long the pending runs will take (a few measured steps) and fail
    # early, in one line, if they cannot fit in the device's memory
    from bench.training.estimate import preflight
    if suite.executor.kind != "slurm":  # the submitting host's device says nothing about the nodes'
        preflight(suite, runs, out, retry_failed=args.retry_failed, estimate_only=args.estimate_only)
    elif args.estimate_only:
        print("estimate: not measured for --executor slurm (this machine says nothing about the nodes' "
              "devices); run the same command with --estimate-only and without --executor slurm on a node")
    if args.estimate_only:
        return 0
    executor = make_executor(suite.executor, out, quiet=args.quiet, wait=not args.no_wait)
    t0 = time.perf_counter()
    outcomes = run_sweep(suite, runs, out, quiet=args.quiet, retry_failed=args.retry_failed, executor=executor)
    wall = time.perf_counter() - t0
    text, code = summarize(suite, outcomes, wall, out)
    print(text)
    counts = {s: sum(o.status == s for o in outcomes) for s in ("done", "skipped")}
    if not args.no_report and counts["done"] + counts["skipped"] > 0:
        path = build_report(out, suite.name, Path(args.leaderboards))
        print(f"leaderboard: {path}")
    if code:
        failed = sum(o.status == "failed" for o in outcomes)
        print(f"error: {failed} run(s) failed (listed above; results kept, rerun with --retry-failed)",
              file=sys.stderr)
    return code


def cmd_list(args) -> int:
    from bench.models.backbones import BACKBONES
    from bench.suites import suite_names
    from bench.data import DATASETS
    from bench.evaluation.hook import EVALUATORS, load_builtin_evaluators
    from registry import PLUGINS

    load_builtin_evaluators()
    sections = {
        "suites": suite_names(),
        "plugins": PLUGINS.names(),
        "datasets": DATASETS.names(),
        "backbones": BACKBONES.names(),
        "attacks": list(dict.fromkeys([n for n in EVALUATORS.names() if EVALUATORS.get(n).kind == "attack"] + __import__("bench.attacks", fromlist=["ATTACKS"]).ATTACKS.names())),  # [issue 3] evaluators, then attack methods
        "metrics": [n for n in EVALUATORS.names() if EVALUATORS.get(n).kind == "metric"],
    }
    for name, items in sections.items():
        if args.what in ("all", name):
            print(f"{name}: {', '.join(items) if items else '(none)'}")
    return 0


def cmd_report(args) -> int:
    from bench.reporting.report import build_report
    path = build_report(Path(args.runs), args.suite, Path(args.out))
    print(f"leaderboard: {path}")
    return 0


COMMANDS = {"run": cmd_run, "list": cmd_list, "report": cmd_report}
# Feature modules that add subcommands: each defines ``add_arguments(subparsers)`` which
# registers its parser(s) and sets ``func`` on them via ``set_defaults(func=...)``.
COMMAND_MODULES = ("bench.cli",)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:  # `python -m bench` alone runs the default suite
        args = parser.parse_args(["run", *(argv or [])])
    warnings.filterwarnings("ignore", message=".*TypedStorage is deprecated.*")
    try:
        func = getattr(args, "func", None) or COMMANDS[args.command]
        return func(args)
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: completed runs are saved; rerun the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
