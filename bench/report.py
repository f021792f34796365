"""Markdown leaderboards written from run directories alone."""
from __future__ import annotations

import math
import statistics
from pathlib import Path

from bench.io import atomic_write_text, read_json
from bench.results import RunRecord, load_runs, select_best_lr


def mean_std(values: list[float]) -> tuple[float, float]:
    values = [v for v in values if v is not None and math.isfinite(v)]
    if not values:
        return math.nan, math.nan
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def fmt_mean_std(values: list[float], scale: float = 1.0, digits: int = 2) -> str:
    m, s = mean_std(values)
    if math.isnan(m):
        return "–"
    return f"{m * scale:.{digits}f} ± {s * scale:.{digits}f}"


def build_report(runs_root: Path, suite: str | None, out_dir: Path) -> Path:
    records = load_runs(runs_root, suite)
    suite_name = records[0].suite
    best = select_best_lr(records)
    plugins = list(dict.fromkeys(r.plugin for r in records))
    lines = [f"# Leaderboard: `{suite_name}`", ""]
    lines += header_lines(records)
    lines += ["", "| plugin | test accuracy (%) | seeds |", "|---|---|---|"]
    for plugin in plugins:
        chosen = [rec for (p, _), rec in best.items() if p == plugin]
        lines.append(f"| {plugin} | {fmt_mean_std([r.result['test_acc'] for r in chosen], 100)} | {len(chosen)} |")
    lines += incomplete_lines(records, runs_root)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{suite_name}.md"
    atomic_write_text(path, "\n".join(lines) + "\n")
    return path


def header_lines(records: list[RunRecord]) -> list[str]:
    config = records[0].config["suite"]
    provs = [read_json(r.path / "provenance.json") for r in records if (r.path / "provenance.json").exists()]
    commits = sorted({p["commit"] for p in provs})
    hardware = sorted({p["hardware"] for p in provs})
    seeds = sorted({r.seed for r in records})
    lrs = sorted({r.lr for r in records})
    dates = sorted(p.get("finished", p["started"]) for p in provs)
    return [
        f"- suite: `{config['name']}`; dataset `{config['dataset']['name']}`, backbone `{config['backbone']['name']}`",
        f"- seeds: {seeds}; learning rates: {[f'{lr:g}' for lr in lrs]} (best per plugin and seed by validation accuracy)",
        f"- hardware: {'; '.join(hardware) or 'unknown'}",
        f"- commit: {', '.join(commits) or 'unknown'}; runs finished {dates[0] if dates else '?'} … {dates[-1] if dates else '?'}",
    ]


def incomplete_lines(records: list[RunRecord], runs_root: Path) -> list[str]:
    bad = [r for r in records if r.status != "done"]
    if not bad:
        return []
    lines = ["", "## Runs not counted", "", "| run | status | reason |", "|---|---|---|"]
    for r in bad:
        reason = ((r.result or {}).get("failure") or {}).get("reason", "no result.json yet")
        lines.append(f"| {r.plugin}/seed{r.seed}-lr{r.lr:g} | {r.status} | {reason} |")
    return lines
