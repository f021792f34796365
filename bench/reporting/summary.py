"""Run folders → per-plugin statistics: the one reduction every report, check and baseline uses.

``summarise_suite(runs_root, suite)`` reads every run folder of one suite (through
``bench.runs.folder``), picks each plugin's learning rate per seed on validation accuracy,
reads every number of every done run through the catalogue (the evaluators' declared
columns) and reduces the counted runs to mean ± std over seeds. It also gathers what the
report states beside the numbers: provenance, attack-budget deviations recorded by the
evaluators, the reliability findings (which numbers each failed check doubts), and the correlation of class separation R with
robustness across runs (``bench.metrics.correlation``, the one implementation of it).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.attacks.reliability import upgrade as reliability_upgrade
from bench.core.errors import BenchError
from bench.evaluation.findings import Finding, doubted as doubted_by, is_headline
from bench.reporting.catalogue import Catalogue
from bench.reporting.format import NA, dig
from bench.reporting.stats import Stat
from bench.runs.folder import RunRecord, load_runs, select_best_lr

# result entries the report reads for a meaning of their own (besides the columns)
RELIABILITY = ("evaluations", "reliability")          # {findings: [...], column_verdict: {...}, ...}
BEST_KNOWN_PER_INPUT = ("evaluations", "best_known", "per_input")   # {norm_best: [...], norm_deepfool: [...]}


@dataclass(frozen=True)
class Correlation:
    """A correlation of R with a robustness ρ across runs: Pearson r over n runs (n = 0: published)."""

    r: float
    n: int
    p: float | None = None
    r_log: float | None = None


@dataclass(frozen=True)
class Reliability:
    """The reliability findings of a plugin's counted runs (``bench.evaluation.findings``)."""

    checked: int                                     # counted runs with a reliability result
    headline_doubted: int                            # runs whose headline (best-known ρ / RA) a finding doubts
    headline_checks: tuple[tuple[str, int], ...]     # (check doubting the headline, runs), most frequent first
    flagged: tuple[tuple[str, int], ...]             # (check that failed, runs): whatever number it doubts
    not_measured: tuple[tuple[str, int], ...]        # (check that could not judge, runs)
    doubted: dict[str, int]                          # column key -> runs in which a finding doubts it
    per_run: tuple[tuple[int, tuple[Finding, ...]], ...]   # (seed, its failed findings) of each run with one

    @property
    def unreliable(self) -> int:
        """Runs whose headline is potentially unreliable (RobustBench's meaning of the flag)."""
        return self.headline_doubted

    def doubting(self, key: str) -> int:
        return self.doubted.get(key, 0)


def run_findings(result: dict) -> list[Finding] | None:
    """A run's findings: as stored, or derived from its structured checks (older results)."""
    evaluations = (result or {}).get("evaluations") or {}
    entry = reliability_upgrade(evaluations.get("reliability"), evaluations)
    if not isinstance(entry, dict) or not isinstance(entry.get("findings"), list):
        return None
    return [Finding.from_dict(f) for f in entry["findings"]]


@dataclass
class PluginSummary:
    plugin: str
    runs: list[RunRecord]                     # the counted runs: best lr per seed, by seed
    stats: dict[str, Stat]
    latent: str                               # e.g. "z (16)"
    reliability: Reliability | None = None


@dataclass
class SuiteSummary:
    suite: str
    config: dict                              # config.json of the first run
    records: list[RunRecord]
    plugins: list[PluginSummary]              # suite order; only plugins with a counted run
    not_counted: list[RunRecord]
    catalogue: Catalogue
    values: dict[str, dict[str, float]]       # per done run (its path): every number, by key
    selected: set = field(default_factory=set)    # paths of the counted runs
    analysis: Any = None                      # bench.metrics.correlation.analyse_suite on DeepFool ρ
    analysis_reason: str | None = None        # why there is none
    analysis_best: dict | None = None         # R_train vs best-known ρ: {"R_vs_rho": ..., "logR_vs_logrho": ...}
    provenances: list[dict] = field(default_factory=list)
    deviations: list[str] = field(default_factory=list)

    def stats(self) -> dict[str, dict[str, Stat]]:
        return {p.plugin: p.stats for p in self.plugins}

    def plugin(self, name: str) -> PluginSummary | None:
        return next((p for p in self.plugins if p.plugin == name), None)

    def keys(self) -> set[str]:
        return {k for p in self.plugins for k in p.stats}

    def run_value(self, rec: RunRecord, key: str) -> float | None:
        return self.values.get(str(rec.path), {}).get(key)

    def correlations(self) -> dict[str, Correlation]:
        """Pearson r(R, ρ) across done runs, for DeepFool ρ ("rho") and best-known ρ ("rho_best")."""
        out = {}
        for name, entry in (("rho", dig(self.analysis, ("train",))), ("rho_best", self.analysis_best)):
            raw = dig(entry, ("R_vs_rho", "pearson"))
            log = dig(entry, ("logR_vs_logrho", "pearson", "r"))
            if isinstance(raw, dict) and raw.get("r") is not None:
                out[name] = Correlation(float(raw["r"]), int(dig(entry, ("R_vs_rho", "n")) or 0), raw.get("p"), log)
        return out


def plugin_order(config: dict, names) -> list[str]:
    suite_plugins = list(dig(config, ("suite", "plugins")) or [])
    names = set(names)
    return [p for p in suite_plugins if p in names] + sorted(names - set(suite_plugins))


def is_evaluated(p: "PluginSummary") -> bool:
    """Whether a row is a model evaluated by ``bench evaluate``, not trained by lpc-bench."""
    return any(r.evaluated for r in p.runs)


def latent_text(result: dict) -> str:
    name, dim = dig(result, ("latent", "name")), dig(result, ("latent", "dim"))
    if name is None:
        return NA
    return f"{name} ({dim})" if dim is not None else str(name)


def suite_analysis(records: list[RunRecord]) -> tuple[Any, str | None]:
    """``bench.metrics.correlation.analyse_suite`` on the done runs, or (None, why not)."""
    from bench.metrics.correlation import analyse_suite
    try:
        return analyse_suite([r for r in records if r.status == "done"]), None
    except Exception as exc:  # the analysis is one section: a failure there must not cost the report
        return None, f"not available ({type(exc).__name__}: {exc})"


def best_known_analysis(summary: SuiteSummary) -> dict | None:
    """R (train) against best-known ρ across done runs, as ``analyse_suite`` pairs them."""
    from bench.metrics.correlation import correlate
    import numpy as np
    pairs = [(summary.run_value(r, "R"), summary.run_value(r, "rho_best")) for r in summary.records
             if r.status == "done"]
    pairs = [(a, b) for a, b in pairs if a is not None and b is not None]
    if not pairs:
        return None
    r, rho = np.array([a for a, _ in pairs]), np.array([b for _, b in pairs])
    positive = (r > 0) & (rho > 0)
    return {"n_runs": len(pairs), "R_vs_rho": correlate(r, rho),
            "logR_vs_logrho": correlate(np.log(r[positive]), np.log(rho[positive]))}


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [f"{k}: {v}" for k, v in sorted(value.items())]
    if isinstance(value, (list, tuple)):
        return [str(v) for v in value]
    return []


def budget_deviations(records: list[RunRecord]) -> list[str]:
    """Every attack-budget deviation an evaluator recorded (``deviations`` of an evaluator's
    entry or of one of its ``per_attack`` methods), with the number of runs it applies to."""
    found: dict[str, int] = {}
    for rec in records:
        seen = set()
        for name, entry in sorted(((rec.result or {}).get("evaluations") or {}).items()):
            if not isinstance(entry, dict):
                continue
            per_method = {f"{method}: {text}" for method, sub in sorted((entry.get("per_attack") or {}).items())
                          if isinstance(sub, dict) for text in _strings(sub.get("deviations"))}
            seen |= per_method
            # an evaluator may also list its methods' deviations ("method: text"): once is enough
            seen.update(f"{name}: {text}" for text in _strings(entry.get("deviations")) if text not in per_method)
        for text in seen:
            found[text] = found.get(text, 0) + 1
    return [f"{text} ({n} run{'s' if n != 1 else ''})" for text, n in sorted(found.items())]


def _counted(pairs) -> tuple[tuple[str, int], ...]:
    counts: dict[str, int] = {}
    for names in pairs:
        for name in set(names):
            counts[name] = counts.get(name, 0) + 1
    return tuple(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def reliability(runs: list[RunRecord], keys: set[str]) -> Reliability | None:
    """Per plugin: which runs' findings doubt which of ``keys`` (the suite's column keys)."""
    per = [(r.seed, f) for r, f in ((r, run_findings(r.result)) for r in runs) if f is not None]
    if not per:
        return None
    doubted: dict[str, int] = {}
    headline = []
    for _, found in per:
        hits = {k for k in keys if doubted_by(k, found)}
        for k in hits:
            doubted[k] = doubted.get(k, 0) + 1
        headline.append({f.check for k in hits if is_headline(k) for f in doubted_by(k, found)})
    return Reliability(
        checked=len(per), headline_doubted=sum(bool(h) for h in headline), headline_checks=_counted(headline),
        flagged=_counted([{f.check for f in found if f.flag} for _, found in per]),
        not_measured=_counted([{f.check for f in found if f.flag is None} - {f.check for f in found if f.flag is not None}
                               for _, found in per]),
        doubted=doubted,
        per_run=tuple((seed, tuple(f for f in found if f.flag)) for seed, found in per if any(f.flag for f in found)))


def summarise_suite(runs_root: Path, suite: str | None = None, *, imports: tuple[str, ...] = ()) -> SuiteSummary:
    """Load a suite's runs and reduce them to per-plugin statistics over seeds.

    The modules recorded with the runs (``--import``) are imported first, so a user's
    evaluator contributes its columns; ``imports`` are given on the command line.
    """
    from bench.suites.imports import load_run_imports
    records = load_runs(Path(runs_root), suite)
    load_run_imports([i for r in records for i in r.imports], imports)
    catalogue = Catalogue.from_registry()
    records.sort(key=lambda r: (r.plugin, r.seed, r.lr, str(r.path)))
    best = select_best_lr(records)
    for r in records:   # older results: findings derived from their structured checks, in memory only
        evaluations = (r.result or {}).get("evaluations")
        if isinstance(evaluations, dict) and isinstance(evaluations.get("reliability"), dict):
            evaluations["reliability"] = reliability_upgrade(evaluations["reliability"], evaluations)
    values = {str(r.path): catalogue.run_metrics(r.result, r.log()) for r in records if r.status == "done"}
    all_keys = {k for v in values.values() for k in v}
    plugins = []
    for plugin in plugin_order(records[0].config, {r.plugin for r in records}):
        runs = sorted((rec for (p, _), rec in best.items() if p == plugin), key=lambda r: r.seed)
        if not runs:
            continue
        per_run = [values[str(r.path)] for r in runs]
        keys = catalogue.order({k for v in per_run for k in v})
        stats = {k: Stat.of([v[k] for v in per_run if k in v]) for k in keys}
        latents = sorted({latent_text(r.result) for r in runs})
        plugins.append(PluginSummary(plugin, runs, stats, ", ".join(latents), reliability(runs, all_keys)))
    counted = [r for p in plugins for r in p.runs]
    summary = SuiteSummary(
        suite=records[0].suite, config=records[0].config, records=records, plugins=plugins,
        not_counted=[r for r in records if r.status != "done"], catalogue=catalogue, values=values,
        selected={str(r.path) for r in best.values()},
        provenances=[p for p in (r.provenance() for r in records) if p is not None],
        deviations=budget_deviations(counted))
    summary.analysis, summary.analysis_reason = suite_analysis(records)
    summary.analysis_best = best_known_analysis(summary)
    return summary


def require_counted(summary: SuiteSummary, runs_root: Path) -> None:
    if not summary.plugins:
        raise BenchError(f"no finished runs of suite {summary.suite} under {runs_root} "
                         f"({len(summary.not_counted)} runs failed or unfinished)")
