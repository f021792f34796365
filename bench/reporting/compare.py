"""Statistical comparison of a suite's runs with a reference, and the paper's shape claims.

The reference is either the paper's published numbers (CIFAR-10/100 suites only) or a
baseline file of our own suite written by ``bench baseline``. The rule, printed with every
check:

1. **Tolerance floor.** A (plugin, metric) passes when |ours − reference| ≤
   max(rtol·|reference|, atol), with rtol and atol fixed per metric (declared with the
   evaluator's columns, ``bench.reporting.catalogue``: e.g. accuracy ±1 point, R and ρ ±5 %). Identical code on the same CPU reproduces its
   numbers exactly, so it always passes; the floor also keeps a test on a collapsed,
   near-zero quantity from failing on noise of no consequence.
2. **Test.** Beyond the floor, the difference is tested: Welch's two-sided t-test when
   both sides have n ≥ 2 seeds; when one side is a single run and the other has n ≥ 2
   with a spread, a prediction test (is that run a plausible new draw from the other
   side's seeds: t = Δ / (s·√(1 + 1/n)), n − 1 degrees of freedom); against a reference
   mean published without its spread, a one-sample t-test of our seeds.
3. **Multiplicity.** Holm–Bonferroni over all tests of one check at family-wise α
   (default 0.05): a test fails when its p-value falls below its Holm threshold.
4. **No spread.** With no spread on either side (n = 1 or std = 0) a difference beyond
   the floor fails: nothing measured could explain it.

Every metric a registered evaluator declares is compared, a third-party evaluator's too.
A metric the reference has and our runs lack fails (an evaluator went missing); a metric
only we have is not compared. Shape claims whose inputs are missing are skipped with the
reason. Against a baseline, a shape claim fails only when it held in the baseline and no
longer holds (a claim that the baseline's suite does not show is reported, not failed);
against the published numbers every claim must hold.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from bench.core.errors import BenchError
from bench.reporting.baseline import load_baseline
from bench.reporting.catalogue import Catalogue
from bench.reporting.claims import HOLDS, SKIPPED, evaluate_claims
from bench.reporting.format import fmt_sig, fmt_stat, md_table
from bench.reporting.markdown import incomplete_lines
from bench.reporting.stats import Stat, difference_test, two_sided_p
from bench.reporting.summary import SuiteSummary, require_counted, summarise_suite
from bench.runs.folder import mixed_configs

DEFAULT_ALPHA = 0.05


# --------------------------------------------------------------------------- comparisons

@dataclass
class Comparison:
    plugin: str
    metric: str
    ours: Stat | None
    ref: Stat | None
    method: str
    verdict: str            # pass | fail | pending (a test awaiting Holm) | skip
    p: float | None = None
    note: str = ""


def compare(catalogue: Catalogue, plugin: str, key: str, ours: Stat | None, ref: Stat | None) -> Comparison:
    spec = catalogue.spec(key)
    if ref is None:
        return Comparison(plugin, key, ours, ref, "—", "skip", note="not in the reference")
    if ours is None:
        return Comparison(plugin, key, ours, ref, "—", "fail", note="missing in these runs")
    tol = max(spec.rtol * abs(ref.mean), spec.atol)
    if abs(ours.mean - ref.mean) <= tol:
        return Comparison(plugin, key, ours, ref, "tolerance", "pass")
    test = difference_test(ours, ref)
    if test is None:
        return Comparison(plugin, key, ours, ref, "tolerance", "fail",
                          note="beyond the floor, no spread to test (n = 1 or std = 0)")
    return Comparison(plugin, key, ours, ref, test.kind, "pending", two_sided_p(test))


def holm(comparisons: list[Comparison], alpha: float) -> None:
    """Resolve pending tests with the Holm–Bonferroni step-down procedure at family-wise α."""
    pending = sorted((c for c in comparisons if c.verdict == "pending"), key=lambda c: (c.p, c.plugin, c.metric))
    m = len(pending)
    rejecting = True
    for i, c in enumerate(pending):
        threshold = alpha / (m - i)
        if rejecting and c.p <= threshold:
            c.verdict, c.note = "fail", f"p ≤ Holm threshold {threshold:.2g}"
        else:
            rejecting = False
            c.verdict = "pass"


def _delta(catalogue: Catalogue, c: Comparison) -> str:
    if c.ours is None or c.ref is None:
        return "—"
    diff = c.ours.mean - c.ref.mean
    if catalogue.spec(c.metric).fmt == "pct":
        return f"{diff * 100:+.2f} pts"
    if c.ref.mean:
        return f"{diff / abs(c.ref.mean) * 100:+.1f} %"
    return fmt_sig(diff)


def _tolerance_text(catalogue: Catalogue, key: str) -> str:
    spec = catalogue.spec(key)
    if spec.fmt == "pct":
        return f"±{spec.atol * 100:g} pts"
    return f"±{spec.rtol * 100:g} % (≥ {spec.atol:g})" if spec.rtol else f"±{spec.atol:g}"


# --------------------------------------------------------------------------- the check

@dataclass
class CheckResult:
    text: str
    failed: int
    passed: int
    skipped: int

    @property
    def ok(self) -> bool:
        return self.failed == 0


def rule_text(alpha: float) -> str:
    return (f"Rule: per (plugin, metric), pass when |ours − reference| ≤ max(rtol·|reference|, atol) (the per-metric "
            f"floor in the *tolerance* column); beyond it, Welch's two-sided t-test (both sides n ≥ 2) or a "
            f"prediction test of a single run against the other side's seeds (t = Δ / (s·√(1 + 1/n)), n − 1 df), "
            f"or a one-sample t-test against a reference published without its spread; "
            f"Holm–Bonferroni over all tests of this check, family-wise α = {alpha:g}; with no spread on either "
            f"side (n = 1 or std = 0) a difference beyond the floor fails. A metric the reference has and these runs "
            f"lack fails.")


def run_check(runs_root: Path, suite: str | None, against: str, *, alpha: float = DEFAULT_ALPHA,
              imports: tuple[str, ...] = ()) -> CheckResult:
    """Compare the runs of ``suite`` under ``runs_root`` with ``against`` ("published" or a baseline file)."""
    if not 0 < alpha < 1:
        raise BenchError(f"--alpha must be in (0, 1), got {alpha}")
    runs_root = Path(runs_root)
    summary = summarise_suite(runs_root, suite, imports=imports)
    catalogue = summary.catalogue
    require_counted(summary, runs_root)
    mixed = mixed_configs(summary.records)
    if mixed:
        raise BenchError(f"the runs of suite {summary.suite} under {runs_root} were made with different "
                         f"configurations ({mixed}); check one configuration at a time")
    if against == "published":
        ref_stats, ref_claims, header, only_plugins_in_both = published_reference(summary)
    else:
        baseline = load_baseline(Path(against), summary)
        ref_stats = {p: {k: Stat(v["mean"], v["std"], v["n"]) for k, v in per.items()}
                     for p, per in baseline["metrics"].items()}
        ref_claims = {k: v.get("status") for k, v in (baseline.get("claims") or {}).items()}
        header = (f"baseline `{against}` (suite {baseline['suite']}, commit {baseline.get('commit', '?')}, "
                  f"runs finished {baseline.get('finished', '?')})")
        only_plugins_in_both = False
    ours = summary.stats()
    comparisons: list[Comparison] = []
    notes: list[str] = []
    for plugin in ref_stats:
        if plugin not in ours:
            if only_plugins_in_both:
                continue
            comparisons.append(Comparison(plugin, "(all)", None, None, "—", "fail",
                                          note="plugin has no counted run here"))
            continue
        for key in catalogue.order(set(ref_stats[plugin])):
            comparisons.append(compare(catalogue, plugin, key, ours[plugin].get(key), ref_stats[plugin][key]))
    if only_plugins_in_both:
        absent = [p for p in ref_stats if p not in ours]
        if absent:
            notes.append(f"Published models not in these runs (not compared): {', '.join(absent)}.")
    extra = [p for p in ours if p not in ref_stats]
    if extra:
        notes.append(f"Plugins without reference numbers (not compared): {', '.join(extra)}.")
    holm(comparisons, alpha)

    claims = evaluate_claims(ours, summary.correlations())
    claim_rows, claim_fail = [], 0
    for claim in claims:
        detail = claim.detail
        if claim.status == SKIPPED:
            verdict = "skip"
        elif against == "published":
            verdict = "pass" if claim.status == HOLDS else "fail"
        else:
            before = ref_claims.get(claim.key)
            if claim.status == HOLDS:
                verdict = "pass"
            elif before == HOLDS:
                verdict = "fail"
            else:
                verdict = "pass"
                detail += f" (the baseline: {before or 'not recorded'}; not a regression)"
        claim_fail += verdict == "fail"
        ref_text = "required" if against == "published" else (ref_claims.get(claim.key) or "—")
        claim_rows.append([claim.statement, claim.status, ref_text, verdict.upper(), detail])

    counted = sum(len(p.runs) for p in summary.plugins)
    lines = [f"bench check: suite `{summary.suite}` ({len(summary.plugins)} plugins, {counted} counted runs under "
             f"{runs_root}) against {header}", "", rule_text(alpha), ""]
    rows = []
    for c in comparisons:
        spec = catalogue.spec(c.metric) if c.metric != "(all)" else None
        fmt = spec.fmt if spec else "sig"
        rows.append([c.plugin, spec.label if spec else c.metric,
                     _stat_n(c.ours, fmt), _stat_n(c.ref, fmt), _delta(catalogue, c),
                     _tolerance_text(catalogue, c.metric) if spec else "—", c.method,
                     "—" if c.p is None else f"{c.p:.3g}", c.verdict.upper(), c.note])
    lines += md_table(["plugin", "metric", "ours", "reference", "Δ", "tolerance", "test", "p", "result", "note"], rows)
    lines += ["", "Shape claims:", ""]
    lines += md_table(["claim", "these runs", "reference", "result", "detail"], claim_rows)
    incomplete = summary.not_counted
    if incomplete:
        lines += [""] + incomplete_lines(incomplete)
        lines.append(f"FAIL: {len(incomplete)} run(s) failed or unfinished; a check needs every run of the suite.")
    lines += [""] + notes if notes else []
    failed = sum(c.verdict == "fail" for c in comparisons) + claim_fail + (1 if incomplete else 0)
    passed = sum(c.verdict == "pass" for c in comparisons) + sum(r[3] == "PASS" for r in claim_rows)
    skipped = sum(c.verdict == "skip" for c in comparisons) + sum(r[3] == "SKIP" for r in claim_rows)
    lines += ["", f"{'FAILED' if failed else 'PASSED'}: {passed} passed, {failed} failed, {skipped} skipped."]
    return CheckResult("\n".join(lines) + "\n", failed, passed, skipped)


def _stat_n(stat: Stat | None, fmt: str) -> str:
    if stat is None:
        return "—"
    return f"{fmt_stat(stat, fmt)} (n={stat.n})"


def published_reference(summary: SuiteSummary):
    from bench.reporting.published import DATASETS, load_published, published_pearson
    dataset = (summary.config.get("suite", {}).get("dataset") or {}).get("name")
    if dataset not in DATASETS:
        raise BenchError(f"suite {summary.suite} (dataset {dataset}) has no published counterpart: the paper reports "
                         f"CIFAR-10 and CIFAR-100 only; compare with a baseline of this suite instead "
                         f"(bench baseline --suite {summary.suite}, then bench check --against "
                         f"bench/baselines/{summary.suite}.json)")
    _, values = load_published(dataset)
    stats = {m: {k: Stat(v.mean, v.std, v.n) for k, v in per.items()} for m, per in values.items()}
    header = (f"the paper's published numbers for {dataset} (5 seeds; Pearson r(R, ρ) = "
              f"{published_pearson(dataset):g}); only the metrics the paper reports are compared")
    return stats, {}, header, True
