"""The leaderboard as data: its columns, its row order and its text cells, shared by the
Markdown page and the CSV/JSON exports so that they always agree."""
from __future__ import annotations

from bench.reporting.catalogue import OVERSTATEMENT
from bench.reporting.format import NA, dig
from bench.reporting.summary import PluginSummary, SuiteSummary

RELIABILITY_LABEL = "reliability"


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


def leaderboard_keys(summary: SuiteSummary) -> tuple[list[str], int | None]:
    """(the metric keys with a leaderboard column, in order; where the reliability column
    goes among them, or None when no run has a reliability verdict)."""
    listed = dig(summary.config, ("suite", "evaluation", "evaluators")) or ()
    keys = summary.catalogue.main_keys(summary.keys() | summary.catalogue.declared_keys(listed))
    if not any(p.reliability for p in summary.plugins):
        return keys, None
    after = [i for i, k in enumerate(keys) if summary.catalogue.spec(k).rank <= OVERSTATEMENT.rank]
    return keys, (after[-1] + 1 if after else 0)


def reliability_text(p: PluginSummary) -> str:
    """"ok (3/3 checked)", or "potentially unreliable (k/n): check j/n, check i/n" (each failed
    check with the runs it failed in; the reasons in full are in the run-by-run section); "–"
    unchecked."""
    rel = p.reliability
    if rel is None:
        return NA
    if not rel.unreliable:
        return f"ok ({rel.checked}/{len(p.runs)} checked)"
    checks = ", ".join(f"{check} {n}/{rel.checked}" for check, n in rel.checks) or "no reason recorded"
    return f"potentially unreliable ({rel.unreliable}/{rel.checked}): {checks}"


def masking_flags(p: PluginSummary) -> int:
    return sum(bool(dig(r.result, ("evaluations", "masking", "flag"))) for r in p.runs)
