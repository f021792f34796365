"""``bench report``: the leaderboard of a suite, from its run folders alone."""
from __future__ import annotations

from bench.cli.common import add_imports, add_leaderboards, add_runs, leaderboards_dir, runs_root, suite_name


def add_arguments(subparsers) -> None:
    p = subparsers.add_parser("report", help="write a suite's leaderboard (Markdown, CSV, JSON, figures) "
                                             "from run folders alone")
    p.add_argument("--suite", help="the suite: a built-in name or a YAML path (default: the only one under --runs)")
    add_runs(p)
    add_leaderboards(p)
    add_imports(p)
    p.set_defaults(func=cmd_report)


def cmd_report(args) -> int:
    from bench.reporting.report import build_report
    path = build_report(runs_root(args), suite_name(args), leaderboards_dir(args), imports=tuple(args.imports))
    print(f"leaderboard: {path}")
    return 0
