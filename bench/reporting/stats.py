"""Statistics over seeds: mean ± std, and the tests ``bench check`` and the claims use."""
from __future__ import annotations

import math
import statistics
from dataclasses import dataclass


@dataclass(frozen=True)
class Stat:
    """Mean, sample standard deviation (n − 1; None for a single value) and n."""

    mean: float
    std: float | None
    n: int

    @classmethod
    def of(cls, values: list[float]) -> "Stat | None":
        values = [v for v in values if v is not None and math.isfinite(v)]
        if not values:
            return None
        return cls(statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else None, len(values))

    def as_dict(self) -> dict:
        return {"mean": self.mean, "std": self.std, "n": self.n}


@dataclass(frozen=True)
class DiffTest:
    t: float
    df: float
    kind: str       # "Welch" | "prediction" | "one-sample"


def difference_test(a: Stat, b: Stat) -> DiffTest | None:
    """t statistic of a.mean − b.mean, or None when neither side has a spread to test with."""
    diff = a.mean - b.mean
    sa = a.std if (a.std is not None and a.n >= 2) else None
    sb = b.std if (b.std is not None and b.n >= 2) else None
    if sa is not None and sb is not None:
        va, vb = sa * sa / a.n, sb * sb / b.n
        se2 = va + vb
        if se2 <= 0:
            return None
        denom = (va * va / (a.n - 1) if va else 0.0) + (vb * vb / (b.n - 1) if vb else 0.0)
        return DiffTest(diff / math.sqrt(se2), se2 * se2 / denom, "Welch")
    if sa and b.n >= 2 and b.std is None:   # a reference mean published without its spread
        return DiffTest(diff / (sa / math.sqrt(a.n)), a.n - 1, "one-sample")
    if a.n == 1 and sb:
        return DiffTest(diff / (sb * math.sqrt(1 + 1 / b.n)), b.n - 1, "prediction")
    if b.n == 1 and sa:
        return DiffTest(diff / (sa * math.sqrt(1 + 1 / a.n)), a.n - 1, "prediction")
    return None


def two_sided_p(test: DiffTest) -> float:
    from scipy import stats
    return float(2 * stats.t.sf(abs(test.t), test.df))


def one_sided_p_below(test: DiffTest) -> float:
    """p of "a's mean is below b's" for a test of a − b."""
    from scipy import stats
    return float(stats.t.cdf(test.t, test.df))
