"""Leaderboard columns that an evaluator declares next to its code.

An evaluator says which numbers of its result dict a leaderboard shows and ``bench check``
compares, so that a third-party evaluator reaches both without an edit elsewhere:

    @register_evaluator("deepfool", options=DeepFoolOptions, kind="attack", columns=(
        Column("rho", "ρ DeepFool", ("rho_mean",), atol=1e-4),
        Column("ra:{0}:{1}", "RA {0} ε={1} (%)", ("robust_accuracy", "*", "*"), fmt="pct", atol=0.01, rtol=0),
    ))

``path`` is read inside the evaluator's own entry ``result.json["evaluations"][name]``; a
``"*"`` step matches every key at that level, and the matched keys fill ``{0}``, ``{1}`` …
in ``key`` and ``label``. Values that are missing, non-numeric or non-finite are skipped.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterator

FORMATS = ("sig", "pct")


@dataclass(frozen=True)
class Column:
    """One number per run (or a family of them, with ``"*"`` in ``path``).

    ``atol``/``rtol`` are the tolerance floor ``bench check`` uses before any statistical
    test (a difference below max(rtol·|reference|, atol) is never a failure). ``fmt``:
    "sig" prints 3 significant digits, "pct" shows a fraction as a percentage.
    ``section`` names the leaderboard table the column belongs to.
    """

    key: str
    label: str
    path: tuple[str, ...]
    fmt: str = "sig"
    atol: float = 0.0
    rtol: float = 0.05
    section: str = "main"

    def __post_init__(self) -> None:
        if self.fmt not in FORMATS:
            raise ValueError(f"column {self.key!r}: fmt must be one of {FORMATS}, got {self.fmt!r}")
        if not self.path:
            raise ValueError(f"column {self.key!r}: path must not be empty")

    def expand(self, entry: Any) -> Iterator[tuple[str, str, float]]:
        """(key, label, value) for every match of ``path`` in one evaluator's result entry."""
        for matched, value in _walk(entry, self.path, ()):
            number = as_number(value)
            if number is not None:
                yield self.key.format(*matched), self.label.format(*matched), number


def _walk(data: Any, path: tuple[str, ...], matched: tuple[str, ...]):
    if not path:
        yield matched, data
        return
    if not isinstance(data, dict):
        return
    head, rest = path[0], path[1:]
    if head == "*":
        for key in data:
            yield from _walk(data[key], rest, matched + (str(key),))
    elif head in data:
        yield from _walk(data[head], rest, matched)


def as_number(value: Any) -> float | None:
    """A finite float, or None (missing, a bool, a string such as "nan", a dict)."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            return None
    if not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None
