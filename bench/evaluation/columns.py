"""Leaderboard columns that an evaluator declares next to its code.

An evaluator says which numbers of its result dict a leaderboard shows and ``bench check``
compares, so that a third-party evaluator reaches both without an edit elsewhere:

    @register_evaluator("deepfool", options=DeepFoolOptions, kind="attack", columns=(
        Column("rho", "ρ DeepFool", ("rho_mean",), atol=1e-4),
        Column("ra:{0}:{1}", "RA {0} ε={1} (%)", ("robust_accuracy", "*", "*"), fmt="pct", atol=0.01, rtol=0),
    ))

``path`` is read inside the evaluator's own entry ``result.json["evaluations"][name]``; a
``"*"`` step matches every key at that level, and the matched keys fill ``{0}``, ``{1}`` …
in ``key`` and (shown readably: ``Linf`` as ``L∞``, ``0.0313725`` as ``8/255``) in ``label``.
Values that are missing, non-numeric or non-finite are skipped.

``section`` names the leaderboard table a column appears in: "headline" (the short
table at the top, at most 10 columns), "robustness", "perturbation", "geometry",
"collapse" (one detail table each, below it), "main" (the default: a table of its own
kind, "other numbers", for a third-party evaluator), or "detail" (no table: only
``bench check``, baselines, the CSV and the paper's tables). Every section but "detail"
is also in ``bench check``. ``rank`` orders columns across evaluators (smaller first; ties in declaration
order); the built-in ranks are below, a new evaluator's default puts it after them.

Some keys carry a meaning the report builds on beyond a column (the robustness headline,
the shape claims, the RobustBench export); an evaluator measuring one of these declares
a Column under that key (``STANDARD_KEYS``).
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Iterator

FORMATS = ("sig", "pct", "count")
SECTIONS = ("headline", "robustness", "perturbation", "geometry", "collapse", "main", "detail")
SECTION_TITLES = {"headline": "Headline", "robustness": "Robust accuracy", "perturbation": "Minimal perturbation",
                  "geometry": "Latent geometry", "collapse": "Under attack", "main": "Other numbers"}

# ranks of the built-in columns: accuracy, the robustness headline, DeepFool, the
# attacks' grids, geometry; a new evaluator's columns come after them by default
RANK_ACCURACY, RANK_HEADLINE, RANK_DEEPFOOL, RANK_ATTACKS, RANK_GEOMETRY, RANK_DEFAULT = 0, 10, 20, 30, 40, 100

# keys the report reads for a meaning of its own (see the module docstring)
STANDARD_KEYS = {
    "test_acc": "clean test accuracy (fraction)",
    "rho": "DeepFool ρ = mean ‖r‖₂/‖x‖₂ over the flipped inputs",
    "rho_best": "best-known ρ: mean over inputs of the smallest verified ‖r‖₂/‖x‖₂ any attack found",
    "rho_best_median": "best-known ρ, median over inputs",
    "ra_best:{0}:{1}": "best-known robust accuracy at norm {0}, radius {1} (fraction)",
    "ra_autoattack:{0}:{1}": "AutoAttack robust accuracy at norm {0}, radius {1} (fraction)",
    "R": "class separation ratio on the training split",
}


@dataclass(frozen=True)
class Column:
    """One number per run (or a family of them, with ``"*"`` in ``path``).

    ``atol``/``rtol`` are the tolerance floor ``bench check`` uses before any statistical
    test (a difference below max(rtol·|reference|, atol) is never a failure). ``fmt``:
    "sig" prints 3 significant digits, "pct" shows a fraction as a percentage, "count" a
    number of inputs (whole, or one decimal for a mean).
    ``section`` names the leaderboard table the column belongs to.
    """

    key: str
    label: str
    path: tuple[str, ...]
    fmt: str = "sig"
    atol: float = 0.0
    rtol: float = 0.05
    section: str = "main"
    rank: float = RANK_DEFAULT

    def __post_init__(self) -> None:
        if self.fmt not in FORMATS:
            raise ValueError(f"column {self.key!r}: fmt must be one of {FORMATS}, got {self.fmt!r}")
        if self.section not in SECTIONS:
            raise ValueError(f"column {self.key!r}: section must be one of {SECTIONS}, got {self.section!r}")
        if not self.path:
            raise ValueError(f"column {self.key!r}: path must not be empty")
        if self.path.count("*") != self.key.count("{") or self.key.count("{") < self.label.count("{"):
            raise ValueError(f"column {self.key!r}: one {{i}} in the key (and at most that in the label) "
                             f"per '*' of the path")

    def expand(self, entry: Any) -> Iterator[tuple[str, str, float]]:
        """(key, label, value) for every match of ``path`` in one evaluator's result entry."""
        for matched, value in _walk(entry, self.path, ()):
            number = as_number(value)
            if number is not None:
                yield self.key.format(*matched), self.label.format(*map(readable, matched)), number

    def match(self, key: str) -> tuple[str, ...] | None:
        """The ``"*"`` values of ``key`` if it is one of this column's keys, else None."""
        if "{" not in self.key:
            return () if key == self.key else None
        pattern = re.escape(self.key)
        for i in range(self.key.count("{")):
            pattern = pattern.replace(re.escape(f"{{{i}}}"), "(.+?)")
        found = re.fullmatch(pattern, key)
        return found.groups() if found else None

    def label_of(self, key: str) -> str:
        matched = self.match(key) or ()
        return self.label.format(*map(readable, matched))


NORM_LABELS = {"L2": "L2", "Linf": "L∞", "L1": "L1", "L0": "L0"}


def readable(part: str) -> str:
    """A matched key as a label shows it: a norm's symbol, a radius of whole grey levels as k/255."""
    if part in NORM_LABELS:
        return NORM_LABELS[part]
    try:
        value = float(part)
    except ValueError:
        return part
    levels = value * 255
    if math.isfinite(value) and 0 < value < 1 and abs(levels - round(levels)) < 1e-3:
        return f"{round(levels)}/255"
    return part


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
