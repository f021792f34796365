"""Which numbers a run has, under which keys, and how each is shown and compared.

The catalogue is assembled from the evaluator registry: every registered evaluator
declares its columns (``bench.evaluation.columns.Column``) next to its code, so a
third-party evaluator's numbers reach the leaderboard, the CSV, baselines and
``bench check`` with no edit here. The few numbers no evaluator owns are defined below:
the clean test accuracy (result.json's own), the final training loss and the final γ
(log.jsonl: what the run really trained with), and two derived from two evaluators (Σ_W
trace per latent dimension; 1 − ρ_best/ρ_DeepFool — the two means are over different
inputs, DeepFool's over those it flipped, so it can be negative where DeepFool fails on
many inputs; the ``reliability`` evaluator's per-input share beside it has no such caveat).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from bench.evaluation.columns import RANK_ACCURACY, RANK_DEEPFOOL, RANK_GEOMETRY, Column, as_number
from bench.reporting.format import dig

DERIVED_RANK_STEP = 0.5


@dataclass(frozen=True)
class Metric:
    """How one key is shown (label, format, section) and compared (atol, rtol)."""

    key: str
    label: str
    fmt: str = "sig"
    atol: float = 0.0
    rtol: float = 0.05
    section: str = "main"
    rank: float = 100.0


# result.json's own numbers, read like an evaluator's columns but over the whole result
CORE_COLUMNS = (
    Column("test_acc", "test acc (%)", ("test_acc",), fmt="pct", atol=0.01, rtol=0.0, section="headline",
           rank=RANK_ACCURACY),
)
FINAL_LOSS = Metric("final_loss", "final train loss", atol=0.01, section="detail", rank=1000)
FINAL_GAMMA = Metric("gamma_final", "final γ (log)", atol=0.0, rtol=1e-9, section="geometry", rank=RANK_GEOMETRY - DERIVED_RANK_STEP)
SIGMA_W_PER_DIM = Metric("sigma_w_per_dim", "Σ_W trace / d", atol=1e-10, section="detail", rank=RANK_GEOMETRY + 1)
OVERSTATEMENT = Metric("rho_overstatement", "DeepFool ρ overstated by (%)", fmt="pct", atol=0.02, rtol=0.0,
                       section="perturbation", rank=RANK_DEEPFOOL + DERIVED_RANK_STEP)
DERIVED = (FINAL_LOSS, FINAL_GAMMA, SIGMA_W_PER_DIM, OVERSTATEMENT)


def paired_overstatement(per_input: Any) -> float | None:
    """1 − mean ρ_best / mean ρ_DeepFool over the same inputs: those both DeepFool and the
    best-known attack flipped (best_known's per-input lists). Comparing the two evaluators'
    own means would set DeepFool's flipped inputs against every flipped input, which can
    even come out negative; paired, it is ≥ 0 because DeepFool is one of the attacks."""
    if not isinstance(per_input, dict):
        return None
    try:
        pairs = [(nd / xn, nb / xn) for st, nd, nb, xn in zip(per_input["status"], per_input["norm_deepfool"],
                                                              per_input["norm_best"], per_input["x_norm"])
                 if st == "flipped" and nd is not None and nb is not None and xn]
    except (KeyError, TypeError):
        return None
    if not pairs:
        return None
    rho_deepfool = sum(p[0] for p in pairs) / len(pairs)
    rho_best = sum(p[1] for p in pairs) / len(pairs)
    return 1.0 - rho_best / rho_deepfool if rho_deepfool > 0 else None


def _part_key(part: str) -> tuple:
    try:
        value = float(part)
    except ValueError:
        return (1, 0.0, part)
    return (0, value if math.isfinite(value) else math.inf, part)


class Catalogue:
    """The columns of the registered evaluators (and the core ones), in display order."""

    def __init__(self, evaluators: list[tuple[str, tuple[Column, ...]]]) -> None:
        self.columns: list[tuple[str | None, Column]] = [(None, c) for c in CORE_COLUMNS]
        for name, columns in evaluators:
            self.columns += [(name, c) for c in columns]
        self._position = {id(c): i for i, (_, c) in enumerate(self.columns)}

    @classmethod
    def from_registry(cls) -> "Catalogue":
        from bench.evaluation.hook import EVALUATORS
        from bench.suites.imports import load_builtin_evaluators
        load_builtin_evaluators()
        return cls([(name, EVALUATORS.get(name).columns) for name in EVALUATORS.names()])

    # ----- reading one run
    def run_metrics(self, result: dict, log: list[dict] | None = None) -> dict[str, float]:
        """Every number of one run, keyed as the columns say (and the derived ones)."""
        out: dict[str, float] = {}
        evaluations = result.get("evaluations") if isinstance(result.get("evaluations"), dict) else {}
        for source, column in self.columns:
            entry = result if source is None else evaluations.get(source)
            if isinstance(entry, dict):
                for key, _label, value in column.expand(entry):
                    out.setdefault(key, value)
        trace = as_number(dig(evaluations, ("geometry", "train", "sigma_w_trace")))
        dim = as_number(dig(result, ("latent", "dim")))
        if trace is not None and dim:
            out[SIGMA_W_PER_DIM.key] = trace / dim
        overstatement = paired_overstatement(dig(evaluations, ("best_known", "per_input")))
        if overstatement is not None:
            out[OVERSTATEMENT.key] = overstatement
        rows = [row for row in (log or []) if isinstance(row, dict)]
        if rows and as_number(rows[-1].get("loss_total")) is not None:
            out[FINAL_LOSS.key] = as_number(rows[-1]["loss_total"])
        if rows and as_number(rows[-1].get("gamma")) is not None:
            out[FINAL_GAMMA.key] = as_number(rows[-1]["gamma"])
        return out

    # ----- what a key means
    def _column(self, key: str) -> tuple[Column, tuple[str, ...]] | None:
        for _, column in self.columns:
            matched = column.match(key)
            if matched is not None:
                return column, matched
        return None

    def spec(self, key: str) -> Metric:
        for metric in DERIVED:
            if metric.key == key:
                return metric
        found = self._column(key)
        if found is None:   # a key of an evaluator not registered here (e.g. from a baseline)
            return Metric(key, key, section="detail", rank=math.inf)
        column, _ = found
        return Metric(key, column.label_of(key), column.fmt, column.atol, column.rtol, column.section, column.rank)

    def sort_key(self, key: str) -> tuple:
        for i, metric in enumerate(DERIVED):
            if metric.key == key:
                return (metric.rank, math.inf, i, ())
        found = self._column(key)
        if found is None:
            return (math.inf, math.inf, 0, (key,))
        column, matched = found
        return (column.rank, self._position[id(column)], 0, tuple(_part_key(p) for p in matched))

    def order(self, keys) -> list[str]:
        return sorted(set(keys), key=self.sort_key)

    def declared_keys(self, evaluators) -> set[str]:
        """The single (not ``*``-expanded) keys of the core columns and of ``evaluators``' columns:
        a leaderboard shows them even where no run has a value ("–": the evaluator ran and
        produced none)."""
        wanted = set(evaluators)
        return {c.key for source, c in self.columns if (source is None or source in wanted) and "{" not in c.key}

    def main_keys(self, keys) -> list[str]:
        """The keys that have a leaderboard column, in order."""
        return [k for k in self.order(keys) if self.spec(k).section == "main"]


def role_keys(keys, pattern: str) -> list[tuple[str, tuple[str, ...]]]:
    """The keys matching a standard key pattern (``ra_best:{0}:{1}``) with their parts."""
    probe = Column(pattern, pattern, ("*",) * pattern.count("{") or ("x",))
    out = []
    for key in keys:
        matched = probe.match(key)
        if matched is not None:
            out.append((key, matched))
    return out
