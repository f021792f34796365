"""The leaderboard page: a suite summary and its claims as Markdown sections.

Deterministic: rows and columns are sorted, numbers have fixed formats and every date
comes from the runs' provenance. A missing evaluation shows as "–"; runs that failed or
are unfinished are listed under "Runs not counted" and never enter a mean.
"""
from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from bench.config.migrate import migrate_suite_dict
from bench.core.errors import BenchError
from bench.reporting.claims import ClaimResult
from bench.reporting.format import NA, count, dig, fmt_any, fmt_stat, md_table, number, rel_link
from bench.reporting.layers import section_lines as layer_section_lines
from bench.reporting.summary import SuiteSummary, is_evaluated, plugin_order
from bench.evaluation.columns import SECTION_TITLES, readable
from bench.reporting.tables import (BASELINE_PLUGIN, HEADLINE_LABEL, cell, headline_keys, headline_text,
                                    rank_text, ranking_key, robustness_order, section_keys, split_by_norm,
                                    threat_model, ties, versus_base_text)
from bench.runs.folder import LOG, PROVENANCE, RESULT, mixed_configs


def render(summary: SuiteSummary, claims: list[ClaimResult], out_dir: Path,
           figure_notes: dict[str, list[str]], exports: list[str] = ()) -> str:
    lines = [f"# Leaderboard: `{summary.suite}`", ""]
    lines += setup_lines(summary)
    lines += leaderboard_lines(summary, exports)
    lines += correlation_lines(summary, figure_notes.get("scatter", []))
    lines += deepfool_lines(summary)
    lines += reliability_lines(summary)
    lines += paper_table_lines(summary)
    lines += layer_section_lines(summary, figure_notes.get("layers", []))
    lines += claim_lines(claims)
    lines += figure_lines(figure_notes)
    lines += run_lines(summary, out_dir)
    lines += incomplete_lines(summary.not_counted)
    while lines and lines[-1] == "":
        lines.pop()
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- setup

def gamma_text(suite: dict) -> str | None:
    """"γ=0.01·1.05^e ≤ 100" from the first suite plugin with a γ schedule."""
    params = suite.get("plugin_params") or {}
    for plugin in suite.get("plugins") or ():
        gamma = (params.get(plugin) or {}).get("gamma")
        if isinstance(gamma, dict) and {"start", "factor", "cap"} <= set(gamma):
            try:
                return f"γ={float(gamma['start']):g}·{float(gamma['factor']):g}^e ≤ {float(gamma['cap']):g}"
            except (TypeError, ValueError):
                return None
    return None


def recipe_line(config: dict) -> str:
    from bench.config.schema import Recipe
    from bench.core.typed import from_dict
    suite = migrate_suite_dict(config.get("suite") or {})
    try:
        recipe = from_dict(Recipe, suite.get("recipe") or {})
    except BenchError as exc:
        return f"(not readable: {exc})"
    gamma = gamma_text(suite)
    return recipe.one_line(extra=(gamma,) if gamma else ())


def _minutes(seconds: float) -> str:
    minutes, secs = divmod(int(round(seconds)), 60)
    return f"{minutes} min {secs:02d} s" if minutes else f"{secs} s"


def wall_time_text(started: list[str], finished: list[str], records) -> str:
    """The span from the first run's start to the last one's finish (the sweep's wall time when
    the runs were made in one go) and the sum of the runs' own wall times (training and
    evaluation; a resumed run counts its last process only)."""
    own = [r.result["wall_s"] for r in records if r.result and isinstance(r.result.get("wall_s"), (int, float))]
    parts = []
    if started and finished:
        try:
            span = (datetime.fromisoformat(finished[-1]) - datetime.fromisoformat(started[0])).total_seconds()
        except ValueError:
            span = None
        if span is not None and span >= 0:
            parts.append(f"{_minutes(span)} from the first run's start to the last run's finish")
    if own:
        parts.append(f"the {len(own)} runs' own wall times sum to {_minutes(sum(own))} "
                     f"(longest {_minutes(max(own))})")
    return "; ".join(parts) or "unknown"


def setup_lines(summary: SuiteSummary) -> list[str]:
    config = summary.config.get("suite", {})
    records = summary.records
    provs = summary.provenances
    dataset, backbone = config.get("dataset", {}), config.get("backbone", {})
    backbone_text = f"`{backbone.get('name', '?')}`"
    if backbone.get("name") == "mlp" and backbone.get("hidden"):
        backbone_text += f" (hidden {'-'.join(str(h) for h in backbone['hidden'])})"
    plugins = plugin_order(summary.config, {r.plugin for r in records})
    seeds = sorted({r.seed for r in records})
    lrs = sorted({r.lr for r in records})
    counted = sum(len(p.runs) for p in summary.plugins)
    done = sum(r.status == "done" for r in records)
    commits = sorted({p.get("commit", "unknown") for p in provs}) or ["unknown"]
    hardware = sorted({p.get("hardware", "unknown") for p in provs}) or ["unknown"]
    started = sorted(p["started"] for p in provs if p.get("started"))
    finished = sorted(p["finished"] for p in provs if p.get("finished"))
    versions: dict[str, set] = {}
    for p in provs:
        for name, version in (p.get("versions") or {}).items():
            versions.setdefault(name, set()).add(str(version))
    version_text = ", ".join(f"{name} {'/'.join(sorted(v))}" for name, v in sorted(versions.items())) or "unknown"
    lines = [
        "## Setup", "",
        f"- **suite** `{summary.suite}`: dataset `{dataset.get('name', '?')}`, backbone {backbone_text}; "
        f"{count(len(plugins), 'plugin')} × {count(len(seeds), 'seed')} ({', '.join(map(str, seeds))}) × "
        f"{count(len(lrs), 'learning rate')} ({', '.join(f'{lr:g}' for lr in lrs)}): {len(records)} runs found, "
        f"{done} done, {counted} counted (best lr per plugin and seed), {len(summary.not_counted)} not counted",
        f"- **recipe**: {recipe_line(summary.config)}",
        "- **learning-rate selection**: per plugin and seed, the learning rate with the best *validation* "
        "accuracy (ties: the smaller lr); the paper chose on *test* accuracy",
        "- **geometry** (R, Σ_W, CV, H/d, NC1, binarity) is measured on the **training split**'s latents: z, the "
        "penultimate layer, or h, the backbone features, for plugins without one (column *latent*)",
        f"- **hardware**: {'; '.join(hardware)}",
        f"- **commit**: {', '.join(commits)}",
        f"- **dates** (from the runs' provenance): first started {started[0] if started else '?'}, "
        f"last finished {finished[-1] if finished else '?'}",
        f"- **wall time**: {wall_time_text(started, finished, records)}",
        f"- **library versions**: {version_text}",
    ]
    if summary.deviations:
        lines.append("- **attack budget deviations** (recorded by the evaluators; the numbers below use these "
                     "budgets, not the reference ones):")
        lines += [f"  - {d}" for d in summary.deviations]
    mixed = mixed_configs(records)
    if mixed:
        lines.append(f"- **warning**: the runs were made with different suite configurations ({mixed}); "
                     "their numbers may not be comparable")
    differences = config.get("paper_differences") or []
    if differences:
        lines.append("- **differences from the paper's protocol**:")
        lines += [f"  - {d}" for d in differences]
    return lines + [""]


# --------------------------------------------------------------------------- leaderboard

LEGEND = ("Cells are mean ± sample standard deviation over the counted seeds (n; a single seed shows its "
          "value alone; \"(n=k)\" marks a metric measured on fewer seeds); \"–\": not measured (the "
          "evaluator is not in the suite or produced no value); \"⚠k/n\": in k of the n runs an attack-failure "
          "finding doubts that number (the findings are listed below). ρ: DeepFool's mean ‖r‖₂/‖x‖₂ over the "
          "test inputs it flipped (the DeepFool section below gives the counts); RA: robust accuracy (%) at "
          "radius ε in [0, 1] pixel space; Σ_W trace: trace of the within-class covariance (the paper "
          "prints the mean matrix entry: Table I below); CV ‖z‖: coefficient of variation of the latent "
          "norm; H/d: Kozachenko–Leonenko entropy (k = 20) per dimension, nats; NC1 = Tr(Σ_W Σ_B⁺)/K; "
          "binarity score: mean per-dimension log-likelihood of a 2-component Gaussian mixture.")
LEGEND_BEST = ("Best-known ρ: per input, the smallest verified ‖r‖₂/‖x‖₂ any attack of the suite found (DeepFool "
               "included), over the inputs; best-known RA: robust accuracy against all of them together. "
               "\"DeepFool ρ overstated by\": 1 − best-known ρ / DeepFool ρ on the same inputs (those DeepFool "
               "flipped), the share of DeepFool's ρ that a stronger attack removes. \"headline\": ✓ when no "
               "attack-failure finding doubts the best-known ρ or RA of any counted run, else ⚠ with the checks "
               "that doubt it (k of n runs); findings about other numbers mark only those cells.")


def headline_lines(summary: SuiteSummary) -> list[str]:
    """The short table: rank (ties marked), plugin, n, the headline columns, the verdict."""
    keys = headline_keys(summary)
    catalogue = summary.catalogue
    order = robustness_order(summary)
    tied = ties(summary, order)
    base = summary.plugin(BASELINE_PLUGIN) if tied else None
    header = ["#", "plugin", "n", *(catalogue.spec(k).label for k in keys)]
    with_verdict = any(p.reliability for p in summary.plugins)
    if base is not None:
        header.append(f"best-known ρ vs {BASELINE_PLUGIN}")
    if with_verdict:
        header.append(HEADLINE_LABEL)
    rows = []
    for rank, p in enumerate(order, 1):
        row = [rank_text(rank, p, tied.get(p.plugin)), p.plugin + (" (evaluated)" if is_evaluated(p) else ""), str(len(p.runs)),
               *(cell(p, k, summary) for k in keys)]
        if base is not None:
            row.append(versus_base_text(p, tied.get(p.plugin), base))
        if with_verdict:
            row.append(headline_text(p))
        rows.append(row)
    by = "best-known ρ" if ranking_key(summary) == "rho_best" else "DeepFool ρ"
    lines = [f"## Leaderboard (sorted by {by}, most robust first; plugins without ρ last, in suite order)", ""]
    lines += md_table(header, rows)
    model = threat_model(summary)
    notes = []
    if model and any(k.startswith(("ra_best:", "ra_autoattack:")) for k in keys):
        notes.append(f"RA columns at the suite's threat model, {readable(model[0])} ε = {readable(model[1])} "
                     f"(the RobustBench entries' norm and radius); every ε and norm is in *Robust accuracy* below.")
    if tied:
        notes.append("\"(=1)\": the row's best-known ρ does not differ from the top row's (paired over seeds and "
                     "inputs: per seed the mean over shared flipped inputs of the difference, a t test over seeds; "
                     "one seed: Wilcoxon over inputs; p ≥ 0.05)" + (f"; the same test against {BASELINE_PLUGIN} in "
                                                                    f"its column." if base is not None else "."))
    return lines + ([""] + [" ".join(notes)] if notes else [])


def section_lines(summary: SuiteSummary) -> list[str]:
    """One table per named section (robust accuracy: one per norm), rows in leaderboard order."""
    order = robustness_order(summary)
    lines = []
    for section, keys in section_keys(summary).items():
        if section == "headline":
            continue
        groups = split_by_norm(summary, keys) if section == "robustness" else [(None, keys)]
        for norm, group in groups:
            title = SECTION_TITLES.get(section, section)
            lines += [f"### {title}" + (f", {readable(norm)}" if norm else ""), ""]
            header = ["#", "plugin", "latent" if section == "geometry" else "n",
                      *(summary.catalogue.spec(k).label for k in group)]
            rows = [[str(rank), p.plugin, p.latent if section == "geometry" else str(len(p.runs)),
                     *(cell(p, k, summary) for k in group)] for rank, p in enumerate(order, 1)]
            lines += md_table(header, rows) + [""]
    return lines


def leaderboard_lines(summary: SuiteSummary, exports: list[str] = ()) -> list[str]:
    lines = headline_lines(summary)
    lines += ["", LEGEND]
    if "rho_best" in summary.keys() or any(p.reliability for p in summary.plugins):
        lines += ["", LEGEND_BEST]
    if any(is_evaluated(p) for p in summary.plugins):
        lines += ["", "(evaluated): a model trained elsewhere and evaluated with this suite's protocol "
                  "(`bench evaluate`); the other rows were trained by lpc-bench with the suite's recipe."]
    missing = [p for p in plugin_order(summary.config, {r.plugin for r in summary.records})
               if summary.plugin(p) is None]
    if missing:
        lines += ["", f"Plugins with no counted run: {', '.join(missing)} (see *Runs not counted*)."]
    if exports:
        lines += ["", "The same tables with every column, as data: " + " · ".join(exports) + "."]
    lines += ["", "## Details by section", ""] + section_lines(summary)
    return lines


# --------------------------------------------------------------------------- R vs ρ

def _corr_cell(pair: dict, name: str) -> str:
    entry = pair.get(name)
    if not isinstance(entry, dict):
        return str(pair.get(f"{name}_reason") or NA)
    r, p, ci = number(entry.get("r")), number(entry.get("p")), entry.get("ci95")
    text = NA if r is None else f"{r:.3f}"
    if isinstance(ci, (list, tuple)) and len(ci) == 2 and all(number(c) is not None for c in ci):
        text += f" [{ci[0]:.3f}, {ci[1]:.3f}]"
    if p is not None:
        text += f" (p = {p:.2g})"
    return text


def analysis_lines(analysis: Any) -> list[str]:
    """The suite analysis as a table: per split and pair, Pearson and Spearman with 95 % CI and p."""
    if not isinstance(analysis, dict):
        return [f"- {analysis}"]
    if analysis.get("status") not in (None, "ok"):
        return [f"Not available: {analysis.get('reason', analysis.get('status'))}."]
    rows, notes = [], []
    for split in ("train", "test"):
        entry = analysis.get(split)
        if not isinstance(entry, dict):
            continue
        label = f"{split} (headline)" if split == "train" else split
        if entry.get("status") not in (None, "ok"):
            rows.append([label, NA, NA, str(entry.get("reason", entry.get("status"))), NA])
            continue
        for key, pair_label in (("R_vs_rho", "R vs ρ"), ("logR_vs_logrho", "log R vs log ρ")):
            pair = entry.get(key)
            if isinstance(pair, dict):
                rows.append([label, pair_label, str(pair.get("n", NA)), _corr_cell(pair, "pearson"),
                             _corr_cell(pair, "spearman")])
        if entry.get("n_missing"):
            notes.append(f"{split}: {entry['n_missing']} done run(s) without both R and ρ left out.")
    if not rows:  # an analysis of another shape: list its scalar entries
        return [f"- {k}: {fmt_any(v)}" for k, v in sorted(analysis.items()) if fmt_any(v) is not None]
    boot = analysis.get("bootstrap") if isinstance(analysis.get("bootstrap"), dict) else {}
    lines = md_table(["R from split", "pair", "runs", "Pearson r [95 % CI] (p)", "Spearman [95 % CI] (p)"], rows)
    lines += ["", f"Runs used: {analysis.get('runs_used', 'every done run')}; confidence intervals: "
              f"{boot.get('interval', 'bootstrap')}, {boot.get('resamples', '?')} bootstrap resamples "
              f"(seed {boot.get('seed', '?')})."]
    return lines + ([" ".join(notes)] if notes else [])


def best_known_correlation_lines(best: dict | None) -> list[str]:
    if not isinstance(best, dict):
        return []
    rows = []
    for key, pair_label in (("R_vs_rho", "R vs best-known ρ"), ("logR_vs_logrho", "log R vs log best-known ρ")):
        pair = best.get(key)
        if isinstance(pair, dict):
            rows.append(["train", pair_label, str(pair.get("n", NA)), _corr_cell(pair, "pearson"),
                         _corr_cell(pair, "spearman")])
    return (["", "The same with the best-known ρ (the smallest verified perturbation any attack found):", ""]
            + md_table(["R from split", "pair", "runs", "Pearson r [95 % CI] (p)", "Spearman [95 % CI] (p)"], rows))


def correlation_lines(summary: SuiteSummary, figure: list[str]) -> list[str]:
    lines = ["## Class separation vs robustness (paper Fig. 3)", ""]
    lines += figure + ([""] if figure else [])
    if summary.analysis is not None:
        lines.append("Suite analysis (`bench.metrics.correlation`): correlation of R with DeepFool ρ across runs.")
        lines.append("")
        lines += analysis_lines(summary.analysis)
    else:
        lines.append(f"Suite analysis (Pearson/Spearman with bootstrap 95 % CI): {summary.analysis_reason}.")
    lines += best_known_correlation_lines(summary.analysis_best)
    lines += ["", "The paper reports Pearson r(R, ρ) = 0.97 (CIFAR-10) and 0.985 (CIFAR-100) across all its runs."]
    return lines + [""]


# --------------------------------------------------------------------------- DeepFool and findings

def deepfool_lines(summary: SuiteSummary) -> list[str]:
    """DeepFool's per-input outcomes beside the other minimum-norm attacks."""
    rows, any_data = [], False
    for p in summary.plugins:
        df = [dig(r.result, ("evaluations", "deepfool")) for r in p.runs]
        counts = []
        for key in ("n_flipped", "n_not_flipped", "n_already_misclassified"):
            values = [number(d.get(key)) for d in df if isinstance(d, dict)]
            values = [v for v in values if v is not None]
            counts.append(str(int(sum(values))) if values else NA)
        minnorm = [f"{k.split(':', 1)[1]} {fmt_stat(p.stats[k])}" for k in p.stats if k.startswith("minnorm:")]
        if any(c != NA for c in counts) or minnorm:
            any_data = True
        rows.append([p.plugin, *counts, "; ".join(minnorm) or NA])
    lines = ["## DeepFool outcomes", ""]
    if not any_data:
        return lines + ["No DeepFool results in these runs (evaluators `deepfool`, `attacks` not in the suite).", ""]
    lines += md_table(["plugin", "flipped", "not flipped", "already misclassified",
                       "median min-norm (other attacks)"], rows)
    return lines + ["", "Counts are summed over the counted seeds; DeepFool's ρ averages only the flipped inputs "
                    "(\"not flipped\": DeepFool failed within its iterations; the best-known ρ counts them with "
                    "the other attacks' perturbations).", ""]


def _doubted_label(summary: SuiteSummary, keys) -> str:
    labels = [summary.catalogue.spec(k).label for k in sorted(keys, key=summary.catalogue.sort_key)]
    return ", ".join(labels) if labels else "no reported column"


def reliability_lines(summary: SuiteSummary) -> list[str]:
    """The attack-failure findings: per check (runs failed, not measured) and per failed run
    (the reason and the numbers it doubts)."""
    from bench.evaluation.findings import doubted
    plugins = [p for p in summary.plugins if p.reliability]
    if not plugins:
        return []
    keys = summary.keys()
    checks = sorted({c for p in plugins for c, _ in p.reliability.flagged + p.reliability.not_measured})
    rows = []
    for check in checks:
        failed = [f"{p.plugin} {n}/{p.reliability.checked}" for p in plugins for c, n in p.reliability.flagged
                  if c == check]
        unmeasured = sum(n for p in plugins for c, n in p.reliability.not_measured if c == check)
        rows.append([check, "; ".join(failed) or "none", str(unmeasured) if unmeasured else "0"])
    lines = ["## Attack-failure findings", "",
             "Each check of the `reliability` evaluator names the numbers its failure doubts; a number another "
             "value already absorbs (the cross-entropy attacks' RA, inside the worst case and best-known RA that "
             "include the margin-loss attacks) is not marked. \"not measured\": the check did not run or had "
             "nothing to judge, in that many runs.", "",
             *md_table(["check", "runs failed (plugin k/n)", "runs not measured"], rows), ""]
    run_rows = []
    for p in plugins:
        for seed, found in p.reliability.per_run:
            for f in found:
                hit = {k for k in keys if f.doubts(k) and doubted(k, [f])}
                run_rows.append([p.plugin, str(seed), f.check, _doubted_label(summary, hit), f.reason])
    if run_rows:
        lines += ["### Failed checks, run by run", "", *md_table(["plugin", "seed", "check", "doubts", "reason"],
                                                                 run_rows), ""]
    return lines


# --------------------------------------------------------------------------- the paper's tables

def _table(summary: SuiteSummary, keys: list[str], only_with: tuple[str, ...] = ()) -> tuple[list[str], list[str]]:
    spec = summary.catalogue.spec
    rows, skipped = [], []
    for p in summary.plugins:
        if only_with and not any(k in p.stats for k in only_with):
            skipped.append(p.plugin)
            continue
        rows.append([p.plugin, p.latent, str(len(p.runs)),
                     *(fmt_stat(p.stats.get(k), spec(k).fmt, len(p.runs)) for k in keys)])
    return md_table(["model", "latent", "n", *(spec(k).label for k in keys)], rows), skipped


def paper_table_lines(summary: SuiteSummary) -> list[str]:
    lines = ["## The paper's tables on this suite", "",
             "Rows in the paper's order (its Table III); mean ± std over seeds. Geometry on the training split.", ""]
    table1, _ = _table(summary, ["R", "sigma_w_mean_entry", "sigma_w_trace", "cv_norm", "entropy_per_dim",
                                 "zero_knn_fraction"])
    lines += ["### Table I: latent geometry", ""] + table1
    lines += ["", "Σ_W mean entry is the scalar the paper prints; the trace is the sum of the per-dimension "
              "within-class variances. zero k-NN dist.: share of training points whose 20th-neighbour distance "
              "is zero (collapsed duplicates; the entropy estimator's floor applies to them).", ""]
    table2, _ = _table(summary, ["rho", "test_acc", "lipschitz_mean"])
    lines += ["### Table II: robustness and accuracy", ""] + table2 + [""]
    binarity = ["gmm_score_mean", "gmm_score_min", "sigma_mean", "peaks_dist_mean", "peaks_dist_min", "cv_abs"]
    table4, skipped = _table(summary, binarity, only_with=tuple(binarity[:5]))
    lines += ["### Table IV: binarity", ""]
    if len(table4) > 2:
        lines += table4
        lines += ["", "Per latent dimension a 2-component Gaussian mixture is fitted to the training values; score: "
                  "mean log-likelihood; peak distance |μ₁ − μ₂| / ((σ₁ + σ₂)/2); mean and minimum over dimensions."]
        if skipped:
            lines += [f"Without binarity results: {', '.join(skipped)}."]
    else:
        lines.append("No binarity results in these runs (evaluator `binarity` not in the suite).")
    return lines + [""]


def claim_lines(claims: list[ClaimResult]) -> list[str]:
    lines = ["## The paper's shape claims on this suite", ""]
    for claim in claims:
        lines.append(f"- **{claim.status}**: {claim.statement}. {claim.detail}")
    return lines + [""]


def figure_lines(figure_notes: dict[str, list[str]]) -> list[str]:
    lines = ["## Figures", ""]
    for section in ("curves", "histogram", "cdf"):
        lines += figure_notes.get(section, [])
        if figure_notes.get(section):
            lines.append("")
    if not figure_notes:
        lines += ["Figures were not drawn for this report.", ""]
    return lines


# --------------------------------------------------------------------------- runs

def run_lines(summary: SuiteSummary, out_dir: Path) -> list[str]:
    lines = ["## Runs", ""]
    rows = []
    position = {p: i for i, p in enumerate(plugin_order(summary.config, {r.plugin for r in summary.records}))}
    for rec in sorted(summary.records, key=lambda r: (position[r.plugin], r.seed, r.lr)):
        if rec.status != "done":
            use = "not counted"
        elif str(rec.path) in summary.selected:
            use = "counted"
        else:
            use = "not selected (lower val acc)"
        acc = number((rec.result or {}).get("test_acc"))
        val = number((rec.result or {}).get("val_acc"))
        files = [f"[{name}]({rel_link(rec.file(name), out_dir)})" for name in (RESULT, LOG, PROVENANCE)
                 if rec.file(name).exists()]
        rows.append([rec.plugin, str(rec.seed), f"{rec.lr:g}", rec.status, use,
                     NA if val is None else f"{val * 100:.2f}", NA if acc is None else f"{acc * 100:.2f}",
                     " ".join(files) or NA])
    lines += md_table(["plugin", "seed", "lr", "status", "use", "val acc (%)", "test acc (%)", "files"], rows)
    return lines + [""]


def incomplete_lines(bad) -> list[str]:
    if not bad:
        return []
    lines = ["## Runs not counted", "",
             "These runs failed or have not finished; they are in no mean above.", ""]
    rows = []
    for r in sorted(bad, key=lambda r: (r.plugin, r.seed, r.lr)):
        failure = (r.result or {}).get("failure") or {}
        reason = failure.get("reason") or ("no result.json yet (unfinished)" if r.result is None else "failed")
        if failure.get("epoch") is not None:
            reason = f"epoch {failure['epoch']}: {reason}"
        rows.append([r.name, r.status, str(reason).replace("\n", " ")])
    return lines + md_table(["run", "status", "reason"], rows) + [""]

