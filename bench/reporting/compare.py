"""Statistical comparison of a suite's runs with a reference, and the paper's shape claims.

The reference is either the paper's published numbers (CIFAR-10/100 suites only) or a
baseline file of our own suite written by ``bench baseline``. The rule, printed with every
check:

1. **Tolerance floor.** A (plugin, metric) passes when |ours − reference| ≤
   max(rtol·|reference|, atol), with rtol and atol fixed per metric (``bench.reporting.report``:
   e.g. accuracy ±1 point, R and ρ ±5 %). Identical code on the same CPU reproduces its
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

A metric the reference has and our runs lack fails (an evaluator went missing); a metric
only we have is not compared. Shape claims whose inputs are missing are skipped with the
reason. Against a baseline, a shape claim fails only when it held in the baseline and no
longer holds (a claim that the baseline's suite does not show is reported, not failed);
against the published numbers every claim must hold.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from bench.core.errors import BenchError
from bench.reporting.report import (L2_PENALISED, LPC_FAMILY, Correlation, Stat, SuiteSummary, fmt_sig, fmt_stat,
                          incomplete_lines, md_table, metric_order, metric_spec, mixed_configs, require_counted,
                          summarise)

DEFAULT_ALPHA = 0.05
CLAIM_ALPHA = 0.05          # one-sided test of "LPC accuracy below NoPen's"
HOLDS, FAILS, SKIPPED = "holds", "does not hold", "skipped"


# --------------------------------------------------------------------------- tests

@dataclass(frozen=True)
class DiffTest:
    t: float
    df: float
    kind: str       # "Welch" | "prediction"


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


# --------------------------------------------------------------------------- shape claims

@dataclass(frozen=True)
class ClaimResult:
    key: str
    statement: str
    status: str            # holds | does not hold | skipped
    detail: str
    value: float | None = None


def _ratio_text(x: float) -> str:
    return "∞" if math.isinf(x) else f"{fmt_sig(x)}×"


def _get(stats: dict[str, dict[str, Stat]], plugin: str, key: str) -> Stat | None:
    return stats.get(plugin, {}).get(key)


def claim_r(stats) -> ClaimResult:
    statement = "LPC-family R ≥ 100× NoPen's"
    base = _get(stats, "NoPen", "R")
    family = [(p, _get(stats, p, "R")) for p in LPC_FAMILY if _get(stats, p, "R") is not None]
    if base is None or not family:
        why = "NoPen has no R" if base is None else f"no LPC-family plugin ({', '.join(LPC_FAMILY)}) has R"
        return ClaimResult("r_family_100x", statement, SKIPPED, f"Skipped: {why} (evaluator `geometry`).")
    if base.mean <= 0 or any(s.mean <= 0 for _, s in family):
        return ClaimResult("r_family_100x", statement, SKIPPED, "Skipped: a non-positive R.")
    ratios = [(p, s.mean / base.mean) for p, s in family]
    geo = math.exp(sum(math.log(r) for _, r in ratios) / len(ratios))
    status = HOLDS if geo >= 100 else FAILS
    parts = ", ".join(f"{p} {_ratio_text(r)}" for p, r in ratios)
    return ClaimResult("r_family_100x", statement, status,
                       f"Geometric mean over the LPC family of R / R(NoPen) = {_ratio_text(geo)} ({parts}; "
                       f"NoPen R = {fmt_sig(base.mean)}); needs ≥ 100×.", geo)


def claim_rho(stats) -> ClaimResult:
    statement = "LPC's DeepFool ρ ≥ 10× NoPen's"
    lpc, base = _get(stats, "LPC", "rho"), _get(stats, "NoPen", "rho")
    if lpc is None or base is None:
        missing = " and ".join(p for p, s in (("LPC", lpc), ("NoPen", base)) if s is None)
        return ClaimResult("rho_lpc_10x", statement, SKIPPED, f"Skipped: {missing} without ρ (evaluator `deepfool`).")
    if base.mean <= 0:
        return ClaimResult("rho_lpc_10x", statement, SKIPPED, "Skipped: NoPen's ρ is not positive.")
    ratio = lpc.mean / base.mean
    return ClaimResult("rho_lpc_10x", statement, HOLDS if ratio >= 10 else FAILS,
                       f"ρ(LPC) / ρ(NoPen) = {fmt_sig(lpc.mean)} / {fmt_sig(base.mean)} = {_ratio_text(ratio)}; "
                       f"needs ≥ 10×.", ratio)


def claim_sigma(stats) -> ClaimResult:
    statement = "Σ_W of every L2-penalised model ≥ 100× smaller than NoPen's"
    models = [p for p in L2_PENALISED if p in stats]
    key = None
    for candidate, text in (("sigma_w_per_dim", "trace / d"), ("sigma_w_mean_entry", "mean entry")):
        if _get(stats, "NoPen", candidate) and models and all(_get(stats, p, candidate) for p in models):
            key, key_text = candidate, text
            break
    if key is None:
        why = "no L2-penalised plugin in the runs" if not models else "Σ_W missing for NoPen or an L2-penalised plugin"
        return ClaimResult("sigma_w_100x", statement, SKIPPED, f"Skipped: {why} (evaluator `geometry`).")
    base = _get(stats, "NoPen", key).mean
    ratios = []
    for p in models:
        own = _get(stats, p, key).mean
        ratios.append((p, math.inf if own == 0 and base > 0 else (1.0 if own == 0 else base / own)))
    worst = min(r for _, r in ratios)
    parts = ", ".join(f"{p} {_ratio_text(r)}" for p, r in ratios)
    return ClaimResult("sigma_w_100x", statement, HOLDS if worst >= 100 else FAILS,
                       f"Σ_W ({key_text}) of NoPen / of each model: {parts}; the smallest needs ≥ 100×.", worst)


def claim_accuracy(stats) -> ClaimResult:
    statement = "LPC's test accuracy is not below NoPen's beyond noise"
    lpc, base = _get(stats, "LPC", "test_acc"), _get(stats, "NoPen", "test_acc")
    if lpc is None or base is None:
        return ClaimResult("acc_lpc_vs_nopen", statement, SKIPPED, "Skipped: LPC or NoPen has no test accuracy.")
    diff = lpc.mean - base.mean
    test = difference_test(lpc, base)
    head = f"LPC {fmt_stat(lpc, 'pct')} % vs NoPen {fmt_stat(base, 'pct')} % (Δ = {diff * 100:+.2f} points)"
    if test is None:
        tol = metric_spec("test_acc").atol
        status = HOLDS if diff >= -tol else FAILS
        return ClaimResult("acc_lpc_vs_nopen", statement, status,
                           f"{head}; no spread to test with (a single seed), so the rule is Δ ≥ −{tol * 100:g} point.",
                           diff)
    from scipy import stats as sps
    p_low = float(sps.t.cdf(test.t, test.df))
    status = FAILS if p_low < CLAIM_ALPHA else HOLDS
    return ClaimResult("acc_lpc_vs_nopen", statement, status,
                       f"{head}; one-sided {test.kind} test of LPC < NoPen: p = {p_low:.3g} (fails below "
                       f"{CLAIM_ALPHA:g}).", diff)


def claim_pearson(corr: Correlation | None) -> ClaimResult:
    statement = "Pearson r(R, ρ) across runs ≥ 0.9"
    if corr is None or corr.r is None or not math.isfinite(corr.r):
        return ClaimResult("pearson_r_rho", statement, SKIPPED,
                           "Skipped: needs at least 3 done runs with both R and ρ (evaluators `geometry`, `deepfool`).")
    where = f"over {corr.n} runs" if corr.n else "as published"
    return ClaimResult("pearson_r_rho", statement, HOLDS if corr.r >= 0.9 else FAILS,
                       f"r = {corr.r:.3f} {where}; needs ≥ 0.9.", corr.r)


def evaluate_claims(stats: dict[str, dict[str, Stat]], corr: Correlation | None) -> list[ClaimResult]:
    """The paper's shape claims on per-plugin statistics (ours, a baseline's or the paper's)."""
    return [claim_r(stats), claim_rho(stats), claim_sigma(stats), claim_accuracy(stats), claim_pearson(corr)]


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


def compare(plugin: str, key: str, ours: Stat | None, ref: Stat | None) -> Comparison:
    spec = metric_spec(key)
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


def _delta(c: Comparison) -> str:
    if c.ours is None or c.ref is None:
        return "—"
    diff = c.ours.mean - c.ref.mean
    if metric_spec(c.metric).fmt == "pct":
        return f"{diff * 100:+.2f} pts"
    if c.ref.mean:
        return f"{diff / abs(c.ref.mean) * 100:+.1f} %"
    return fmt_sig(diff)


def _tolerance_text(key: str) -> str:
    spec = metric_spec(key)
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


def run_check(runs_root: Path, suite: str, against: str, *, alpha: float = DEFAULT_ALPHA) -> CheckResult:
    """Compare the runs of ``suite`` under ``runs_root`` with ``against`` ("published" or a baseline file)."""
    if not 0 < alpha < 1:
        raise BenchError(f"--alpha must be in (0, 1), got {alpha}")
    runs_root = Path(runs_root)
    summary = summarise(runs_root, suite)
    require_counted(summary, runs_root)
    mixed = mixed_configs(summary.records)
    if mixed:
        raise BenchError(f"the runs of suite {summary.suite} under {runs_root} were made with different "
                         f"configurations ({mixed}); check one configuration at a time")
    if against == "published":
        ref_stats, ref_claims, header, only_plugins_in_both = published_reference(summary)
    else:
        from bench.reporting.baseline import load_baseline
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
        for key in metric_order(set(ref_stats[plugin])):
            comparisons.append(compare(plugin, key, ours[plugin].get(key), ref_stats[plugin][key]))
    if only_plugins_in_both:
        absent = [p for p in ref_stats if p not in ours]
        if absent:
            notes.append(f"Published models not in these runs (not compared): {', '.join(absent)}.")
    extra = [p for p in ours if p not in ref_stats]
    if extra:
        notes.append(f"Plugins without reference numbers (not compared): {', '.join(extra)}.")
    holm(comparisons, alpha)

    claims = evaluate_claims(ours, summary.correlation)
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
        spec = metric_spec(c.metric) if c.metric != "(all)" else None
        fmt = spec.fmt if spec else "sig"
        rows.append([c.plugin, spec.label if spec else c.metric,
                     _stat_n(c.ours, fmt), _stat_n(c.ref, fmt), _delta(c),
                     _tolerance_text(c.metric) if spec else "—", c.method,
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
