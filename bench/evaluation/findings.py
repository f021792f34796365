"""Findings: what one attack-failure check says, and which reported numbers it doubts.

A check that fails says something about *some* numbers, not about the whole run
(RobustBench's "potentially unreliable" means "this AutoAttack number may be too high").
Each check therefore yields :class:`Finding` s that name the column keys
(``bench.evaluation.columns``) their failure undermines, and those whose value already
absorbs the failure:

    Finding("deepfool_overstatement", True, undermines=("rho", "rho_median"), covered_by=(),
            reason="on 93 % of the flipped inputs DeepFool's perturbation is > 1.1× the best-known one")
    Finding("loss_consistency", True, undermines=("attack:pgd-l2:L2:1",),
            covered_by=("ra:L2:1", "ra_best:L2:1"), reason="...")

Keys may hold ``fnmatch`` patterns (``"ra_best:*"``). ``flag`` is True (the check failed),
False (it passed) or None (**not measured**: the check did not run, or had nothing to
judge). :func:`column_verdicts` turns findings into one verdict per column key: a column
is *potentially unreliable* when a flagged finding undermines it without naming it as
covered; the headline (best-known ρ and RA, :data:`HEADLINE_PATTERNS`) is doubted only
by evidence about it.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from fnmatch import fnmatchcase
from typing import Iterable

OK, UNRELIABLE, NOT_MEASURED = "ok", "potentially unreliable", "not measured"

# the headline numbers: the ranking column and the best-known robust accuracies
HEADLINE_PATTERNS = ("rho_best", "rho_best_median", "ra_best:*")
# every number an attack produced (the attack unit test, a randomised model: all of them)
ATTACK_PATTERNS = ("rho", "rho_median", "rho_best*", "ra:*", "ra_best:*", "ra_autoattack:*", "minnorm:*",
                   "attack:*")


@dataclass(frozen=True)
class Finding:
    check: str                          # structured name: "convergence", "library_flags", ...
    flag: bool | None                   # failed / passed / None: not measured
    undermines: tuple[str, ...] = ()    # column keys (or fnmatch patterns) a failure doubts
    covered_by: tuple[str, ...] = ()    # keys whose value already absorbs the failure
    reason: str = ""

    def as_dict(self) -> dict:
        out = asdict(self)
        out["undermines"], out["covered_by"] = list(self.undermines), list(self.covered_by)
        return out

    @classmethod
    def from_dict(cls, data: dict) -> "Finding":
        return cls(str(data["check"]), data.get("flag"), tuple(data.get("undermines") or ()),
                   tuple(data.get("covered_by") or ()), str(data.get("reason") or ""))

    def doubts(self, key: str) -> bool:
        """Does this (flagged) finding undermine ``key`` without covering it itself?"""
        return bool(self.flag) and matches(key, self.undermines) and not matches(key, self.covered_by)


def matches(key: str, patterns: Iterable[str]) -> bool:
    return any(fnmatchcase(key, p) for p in patterns)


def doubted(key: str, findings: Iterable[Finding]) -> list[Finding]:
    """The flagged findings that make ``key`` potentially unreliable. Coverage is per finding: a
    CE-masking finding covered by best-known does not cancel a convergence finding about it."""
    return [f for f in findings if f.doubts(key)]


def column_verdicts(findings: Iterable[Finding], keys: Iterable[str]) -> dict[str, str]:
    """{key: "ok" | "potentially unreliable"} for every key."""
    findings = list(findings)
    return {k: UNRELIABLE if doubted(k, findings) else OK for k in sorted(set(keys))}


def is_headline(key: str) -> bool:
    return matches(key, HEADLINE_PATTERNS)
