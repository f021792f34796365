"""How numbers and tables are written: deterministic text, the same on every machine."""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

from bench.evaluation.columns import as_number

NA = "–"


def number(value: Any) -> float | None:
    """A finite float, or None (missing, a bool, a string such as "nan", a dict with a reason)."""
    return as_number(value)


def dig(data: Any, path: tuple[str, ...]) -> Any:
    for part in path:
        if not isinstance(data, dict) or part not in data:
            return None
        data = data[part]
    return data


def fmt_sig(x: float | None, digits: int = 3) -> str:
    """3 significant digits, scientific below 1e-3 or from 1e4; "–" for nothing."""
    if x is None or not math.isfinite(x):
        return NA
    if x == 0:
        return "0"
    a = abs(x)
    if a >= 1e4 or a < 1e-3:
        return f"{x:.{digits - 1}e}"
    decimals = max(0, digits - 1 - math.floor(math.log10(a)))
    return f"{x:.{decimals}f}"


def _decimals(text: str) -> int:
    return len(text.split(".", 1)[1]) if "." in text and "e" not in text else 0


def fmt_stat(stat, fmt: str = "sig", n_expected: int | None = None) -> str:
    """"mean ± std" (the std in the mean's precision); a single value alone; "–" if none.
    ``stat`` has ``mean``, ``std`` (None for a single value) and ``n``."""
    if stat is None:
        return NA
    if fmt == "pct":
        mean_text = f"{stat.mean * 100:.2f}"
        std_text = None if stat.std is None else f"{stat.std * 100:.2f}"
    elif fmt == "count":   # a number of inputs: whole when it is, one decimal for a mean over seeds
        mean_text = f"{stat.mean:.0f}" if float(stat.mean).is_integer() else f"{stat.mean:.1f}"
        std_text = None if stat.std is None else f"{stat.std:.1f}"
    else:
        mean_text = fmt_sig(stat.mean)
        if stat.std is None:
            std_text = None
        elif "e" in mean_text or stat.mean == 0:
            std_text = f"{stat.std:.1e}"
        else:
            std_text = f"{stat.std:.{_decimals(mean_text)}f}"
    text = mean_text if std_text is None else f"{mean_text} ± {std_text}"
    if n_expected is not None and stat.n != n_expected:
        text += f" (n={stat.n})"
    return text


def fmt_any(value: Any) -> str | None:
    """A scalar or a short list as text; None for what has no short form."""
    if isinstance(value, bool) or value is None:
        return str(value).lower()
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return fmt_sig(value, 4)
    if isinstance(value, (list, tuple)) and len(value) <= 4:
        return "[" + ", ".join(fmt_any(v) or "…" for v in value) + "]"
    if isinstance(value, str):
        return value
    return None


def md_table(header: list[str], rows: list[list[str]]) -> list[str]:
    def cell(text: str) -> str:
        return str(text).replace("|", "\\|")
    lines = ["| " + " | ".join(cell(h) for h in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]
    return lines


def rel_link(path: Path, start: Path) -> str:
    return os.path.relpath(Path(path).resolve(), Path(start).resolve()).replace(os.sep, "/")


def count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"
