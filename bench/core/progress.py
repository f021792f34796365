"""tqdm progress bars that stay quiet when not on a terminal or under --quiet."""
from __future__ import annotations

import sys

from tqdm.auto import tqdm


def progress(iterable=None, *, quiet: bool = False, **kwargs):
    disable = quiet or not sys.stderr.isatty()
    return tqdm(iterable, disable=disable, dynamic_ncols=True, **kwargs)
