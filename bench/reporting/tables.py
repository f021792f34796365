"""The leaderboard as data: its columns per section, its row order, ties, and its text cells,
shared by the Markdown page and the CSV/JSON exports so that they always agree.

* The **headline** (at most 10 columns, after RobustBench's table): rank, plugin, n, the
  columns declared ``section="headline"`` (clean accuracy, best-known ρ median, DeepFool ρ),
  the best-known and AutoAttack RA at the suite's threat model (the RobustBench entry's
  norm and ε) and whether the headline is trusted.
* Every other column sits in its named section (``bench.evaluation.columns.SECTIONS``).
* A cell a reliability finding doubts carries "⚠k/n" (k of the n counted runs).
* Ties: a row whose best-known ρ does not differ from the top row's by a paired test over
  seeds and inputs (p ≥ 0.05) is marked "=1"; the same test against NoPen gives "vs NoPen".
"""
from __future__ import annotations

import math

from bench.evaluation.columns import NORM_LABELS
from bench.reporting.catalogue import role_keys
from bench.reporting.format import NA, fmt_stat
from bench.reporting.summary import PluginSummary, SuiteSummary

HEADLINE_LABEL = "headline"
TIE_ALPHA = 0.05
BASELINE_PLUGIN = "NoPen"
STANDARD_EPS = {"Linf": 8 / 255, "L2": 0.5}
NORM_ORDER = ("Linf", "L2")


def ranking_key(summary: SuiteSummary) -> str:
    """Rows are ranked by best-known ρ where the runs have it, else by DeepFool ρ."""
    return "rho_best" if "rho_best" in summary.keys() else "rho"


def robustness_order(summary: SuiteSummary) -> list[PluginSummary]:
    """Most robust first; plugins without the ranking ρ last, in suite order."""
    key_name = ranking_key(summary)
    position = {p.plugin: i for i, p in enumerate(summary.plugins)}

    def key(p: PluginSummary):
        rho = p.stats.get(key_name)
        return (rho is None, -(rho.mean if rho else 0.0), position[p.plugin])
    return sorted(summary.plugins, key=key)


def threat_model(summary: SuiteSummary) -> tuple[str, str] | None:
    """(norm, ε key) of the headline and the RobustBench entries: the norm with AutoAttack
    results (L∞ before L2, else the norm with best-known results), at RobustBench's standard
    radius for it (8/255 for L∞, 0.5 for L2) when the suite has it, else the suite's largest."""
    keys = summary.keys()
    for pattern in ("ra_autoattack:{0}:{1}", "ra_best:{0}:{1}", "ra:{0}:{1}"):
        found = role_keys(keys, pattern)
        norms = [n for n in NORM_ORDER if any(parts[0] == n for _, parts in found)]
        if not norms:
            continue
        norm = norms[0]
        eps = sorted({parts[1] for _, parts in found if parts[0] == norm}, key=float)
        standard = [e for e in eps if abs(float(e) - STANDARD_EPS[norm]) < 1e-6]
        return norm, (standard[0] if standard else eps[-1])
    return None


def listed_keys(summary: SuiteSummary) -> set[str]:
    from bench.reporting.format import dig
    listed = dig(summary.config, ("suite", "evaluation", "evaluators")) or ()
    return summary.keys() | summary.catalogue.declared_keys(listed)


def section_keys(summary: SuiteSummary) -> dict[str, list[str]]:
    """{section: its keys in display order} for every section with a table ("detail" has none)."""
    out: dict[str, list[str]] = {}
    for key in summary.catalogue.order(listed_keys(summary)):
        section = summary.catalogue.spec(key).section
        if section != "detail":
            out.setdefault(section, []).append(key)
    return out


def headline_keys(summary: SuiteSummary) -> list[str]:
    """The headline's metric columns: the headline section, then RA best-known and AutoAttack RA
    at the threat model (where the runs have them)."""
    keys = list(section_keys(summary).get("headline", []))
    model = threat_model(summary)
    if model:
        norm, eps = model
        keys += [k for k in (f"ra_best:{norm}:{eps}", f"ra_autoattack:{norm}:{eps}") if k in summary.keys()]
    return keys


def split_by_norm(summary: SuiteSummary, keys: list[str]) -> list[tuple[str | None, list[str]]]:
    """Keys grouped by the norm one of their ':'-parts names (robust accuracy per norm)."""
    groups: dict[str | None, list[str]] = {}
    for key in keys:
        norm = next((part for part in key.split(":") if part in NORM_LABELS), None)
        groups.setdefault(norm, []).append(key)
    return sorted(groups.items(), key=lambda kv: (kv[0] is None, NORM_ORDER.index(kv[0])
                                                  if kv[0] in NORM_ORDER else len(NORM_ORDER), kv[0] or ""))


def cell(p: PluginSummary, key: str, summary: SuiteSummary) -> str:
    """mean ± std, with "⚠k/n" where findings doubt the number in k of the n runs, and the
    input count where AutoAttack ran on fewer inputs than the best-known numbers."""
    spec = summary.catalogue.spec(key)
    text = fmt_stat(p.stats.get(key), spec.fmt, len(p.runs))
    rel = p.reliability
    if rel is not None and rel.doubting(key) and text != NA:
        text += f" ⚠{rel.doubting(key)}/{rel.checked}"
    if key.startswith("ra_autoattack:") and text != NA:
        shared = p.stats.get("ra_best_aa_inputs:" + key.split(":", 1)[1])
        if shared is not None:
            text += f" (on its inputs: best-known {fmt_stat(shared, 'pct', len(p.runs))})"
    return text


def headline_text(p: PluginSummary) -> str:
    """"✓" (no finding doubts best-known ρ or RA), "⚠ k/n: check, ..." (which checks, in how
    many runs), "–" without a reliability result."""
    rel = p.reliability
    if rel is None:
        return NA
    if not rel.headline_doubted:
        return f"✓ ({rel.checked}/{len(p.runs)} checked)"
    checks = ", ".join(f"{check} {n}/{rel.checked}" for check, n in rel.headline_checks)
    return f"⚠ {rel.headline_doubted}/{rel.checked}: {checks}"


def reliability_text(p: PluginSummary) -> str:
    """The CSV's and the export's reliability cell: the headline verdict, then every failed
    check with the runs it failed in (whatever number it doubts)."""
    rel = p.reliability
    if rel is None:
        return NA
    head = "headline potentially unreliable" if rel.headline_doubted else "headline ok"
    failed = ", ".join(f"{check} {n}/{rel.checked}" for check, n in rel.flagged)
    return f"{head} ({rel.headline_doubted}/{rel.checked})" + (f"; failed checks: {failed}" if failed else "")


# ----- ties: a paired test over seeds and inputs ----------------------------------------

def _per_input_rho(p: PluginSummary) -> dict[int, list[float | None]]:
    from bench.reporting.format import dig
    out = {}
    for r in p.runs:
        per = dig(r.result, ("evaluations", "best_known", "per_input"))
        if isinstance(per, dict) and isinstance(per.get("rho_best"), list):
            out[r.seed] = per["rho_best"]
    return out


def paired_p(a: PluginSummary, b: PluginSummary) -> float | None:
    """Two-sided p of "best-known ρ of a and b differ", paired by seed and by input: per shared
    seed, the mean over the inputs both flipped of ρ_a − ρ_b; a one-sample t test over those
    seed means (the seeds are the replicates: training noise dominates), or with one seed a
    Wilcoxon signed-rank test over the inputs. None where nothing pairs."""
    from scipy import stats
    ra, rb = _per_input_rho(a), _per_input_rho(b)
    seed_means, single = [], []
    for seed in sorted(set(ra) & set(rb)):
        d = [x - y for x, y in zip(ra[seed], rb[seed]) if x is not None and y is not None]
        if d:
            seed_means.append(sum(d) / len(d))
            single = d
    if len(seed_means) >= 2:
        if all(abs(m - seed_means[0]) < 1e-15 for m in seed_means):
            return 0.0 if abs(seed_means[0]) > 0 else 1.0
        p = float(stats.ttest_1samp(seed_means, 0.0).pvalue)
        return p if math.isfinite(p) else None
    if len(seed_means) == 1 and any(single):
        return float(stats.wilcoxon(single).pvalue)
    return None


def ties(summary: SuiteSummary, order: list[PluginSummary]) -> dict[str, dict]:
    """Per plugin: p against the top row and against NoPen (where both exist)."""
    if not order or ranking_key(summary) != "rho_best":
        return {}
    top, base = order[0], summary.plugin(BASELINE_PLUGIN)
    out = {}
    for p in order:
        entry = {"vs_top": None if p is top else paired_p(p, top),
                 "vs_base": None if base is None or p is base else paired_p(p, base)}
        out[p.plugin] = entry
    return out


def rank_text(rank: int, p: PluginSummary, tie: dict | None) -> str:
    if rank > 1 and tie and tie.get("vs_top") is not None and tie["vs_top"] >= TIE_ALPHA:
        return f"{rank} (=1)"
    return str(rank)


def versus_base_text(p: PluginSummary, tie: dict | None, base: PluginSummary | None) -> str:
    if base is None or tie is None:
        return NA
    if p is base:
        return "(baseline)"
    pv = tie.get("vs_base")
    if pv is None:
        return NA
    if pv >= TIE_ALPHA:
        return f"≈ (p = {pv:.2g})"
    higher = p.stats["rho_best"].mean > base.stats["rho_best"].mean
    return f"{'higher' if higher else 'lower'} (p = {pv:.2g})"
