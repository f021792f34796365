"""``python -m bench`` / ``bench``: the command line. Each command is a ``cmd_*`` module of
this package that declares its arguments (``add_arguments``) and calls library code; the
commands' shared flags mean the same everywhere (``bench.cli.common``)."""
from __future__ import annotations

import argparse
import sys
import warnings

from bench.cli import (cmd_attack, cmd_check, cmd_evaluate, cmd_list, cmd_metrics, cmd_report, cmd_run,
                       cmd_status)
from bench.core.errors import BenchError

COMMAND_MODULES = (cmd_run, cmd_evaluate, cmd_list, cmd_report, cmd_attack, cmd_metrics, cmd_check, cmd_status)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bench", description="lpc-bench: robustness benchmarks for deep classifiers")
    sub = parser.add_subparsers(dest="command")
    for module in COMMAND_MODULES:
        module.add_arguments(sub)
    return parser


def with_default_command(argv: list[str], commands) -> list[str]:
    """``python -m bench`` alone, or with only `run`'s flags, runs the default suite."""
    if not argv or (argv[0] not in commands and argv[0].startswith("-") and argv[0] not in ("-h", "--help")):
        return ["run", *argv]
    return argv


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices  # the registered command names
    args = parser.parse_args(with_default_command(list(sys.argv[1:] if argv is None else argv), commands))
    warnings.filterwarnings("ignore", message=".*TypedStorage is deprecated.*")
    try:
        return args.func(args)
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: completed runs are saved; rerun the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
