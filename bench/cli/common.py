"""Arguments several commands share, with one meaning everywhere.

* ``--runs DIR``: the runs tree (``<DIR>/<suite>/<plugin>/seed<k>-lr<x>/``), default
  ``runs/``. ``--out DIR`` is its older name (``bench run --out DIR`` keeps working); it
  is refused where it would name a different folder than ``--runs``.
* ``--leaderboards DIR``: where a leaderboard (Markdown, CSV, JSON, figures) is written;
  default ``<runs>/leaderboards``, beside the runs it comes from. The committed
  ``leaderboards/`` is rewritten only when named explicitly.
* ``--import MODULE_OR_FILE`` (repeatable): a user's plugin or evaluator module.
* ``--threads N``: torch and BLAS threads for this command.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from bench.core.errors import BenchError

DEFAULT_RUNS = "runs"


def add_runs(p: argparse.ArgumentParser, help_text: str = "the runs tree (default: runs/)") -> None:
    p.add_argument("--runs", default=None, metavar="DIR", help=help_text)
    p.add_argument("--out", dest="runs_alias", default=None, metavar="DIR", help="older name of --runs")


def runs_root(args) -> Path:
    given, alias = getattr(args, "runs", None), getattr(args, "runs_alias", None)
    if given and alias and Path(given) != Path(alias):
        raise BenchError(f"--out {alias} and --runs {given} name different folders: --out is the older name of "
                         f"--runs (the runs tree) in every command; a leaderboard's folder is --leaderboards DIR, "
                         f"a file to write is --save FILE")
    return Path(given or alias or DEFAULT_RUNS)


def add_leaderboards(p: argparse.ArgumentParser) -> None:
    p.add_argument("--leaderboards", metavar="DIR",
                   help="where the leaderboard goes (Markdown, CSV, JSON, figures; default: <runs>/leaderboards)")


def leaderboards_dir(args) -> Path:
    return Path(args.leaderboards) if getattr(args, "leaderboards", None) else runs_root(args) / "leaderboards"


def add_imports(p: argparse.ArgumentParser) -> None:
    p.add_argument("--import", dest="imports", action="append", default=[], metavar="MODULE_OR_FILE",
                   help="import a module (name or .py file) that registers plugins or evaluators first (repeatable)")


def add_threads(p: argparse.ArgumentParser) -> None:
    p.add_argument("--threads", type=int, default=0,
                   help="torch and BLAS threads (default 0: library defaults; 1 is fastest on a busy shared machine)")


def apply_threads(n: int) -> None:
    if n < 0:
        raise BenchError(f"--threads must be >= 0, got {n}")
    if n:
        import torch
        from threadpoolctl import threadpool_limits
        torch.set_num_threads(n)
        threadpool_limits(limits=n)   # numpy/scipy BLAS, for the rest of this command


def suite_name(args) -> str | None:
    """``--suite`` as the name runs are filed under (a YAML path gives its ``name``)."""
    from bench.suites import suite_name as name_of
    return name_of(getattr(args, "suite", None))
