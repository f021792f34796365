"""What a long command shows while it works: tqdm bars on a terminal, plain lines elsewhere.

* Bars (``progress``) go to stderr and only when stderr is a terminal, never under
  ``--quiet``. A pseudo-terminal opened without a size (``script``, some CI runners and
  IDE consoles) reports 0 × 0: tqdm then takes it as -1 rows and draws nothing at all,
  bar after bar. There the bars get a fixed size ($COLUMNS/$LINES, else 100 × 24).
* Lines (``say``) go to stdout, terminal or not (a log, ``| tee``); when bars are on
  screen, tqdm clears them first and redraws them below the line.
"""
from __future__ import annotations

import os
import shutil
import sys

from tqdm.auto import tqdm


def bars_enabled(quiet: bool = False) -> bool:
    return not quiet and sys.stderr.isatty()


def _fixed_size(stream) -> tuple[int, int] | None:
    """None when the terminal reports its size (tqdm follows it); else (columns, rows) to use."""
    try:
        size = os.get_terminal_size(stream.fileno())
        if size.columns > 0 and size.lines > 0:
            return None
    except (OSError, ValueError, AttributeError):
        pass
    size = shutil.get_terminal_size((100, 24))
    return size.columns or 100, size.lines or 24


def progress(iterable=None, *, quiet: bool = False, **kwargs):
    if not bars_enabled(quiet):
        return tqdm(iterable, disable=True, **kwargs)
    fixed = _fixed_size(sys.stderr)
    kwargs.setdefault("file", sys.stderr)
    if fixed is None:
        kwargs.setdefault("dynamic_ncols", True)
    else:
        kwargs.setdefault("ncols", fixed[0])
        kwargs.setdefault("nrows", fixed[1])
    return tqdm(iterable, **kwargs)


def say(line: str) -> None:
    """One line on stdout, flushed at once (a piped stdout would otherwise hold it back)
    and drawn above any progress bar."""
    tqdm.write(line, file=sys.stdout)
    sys.stdout.flush()
