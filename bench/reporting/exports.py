"""The leaderboard as data files beside its Markdown page.

* ``<suite>.csv``: one row per plugin (leaderboard order), every metric of the catalogue
  as ``<key>`` (mean over the counted seeds, in the metric's own unit: accuracies as
  fractions), ``<key>_std`` and ``<key>_n``, ``<key>_doubted`` (runs in which a reliability
  finding doubts that number; empty where none), plus the reliability verdict and the ties;
  ``pandas.read_csv(path)`` loads it.
* ``<suite>.robustbench.json``: one entry per plugin in the shape of RobustBench's model
  entries (clean_acc, autoattack_acc, external, unreliable, eps, architecture, footnote,
  in percent), for one threat model: the norm with AutoAttack results (L∞ before L2, else
  the norm with best-known results), at RobustBench's standard radius for it (8/255 for
  L∞, 0.5 for L2) when the suite has it, else the suite's largest. ``autoattack_acc`` is
  AutoAttack's robust accuracy, ``external`` the best-known one (every attack together);
  either is null when not measured. ``unreliable`` is set only by findings about that
  AutoAttack number (RobustBench's meaning: it may be too high), ``external_unreliable`` by
  findings about the best-known one; the footnote names them. ``pandas.read_json(path)``
  loads it.
"""
from __future__ import annotations

import csv
import io as _io
import json
from pathlib import Path

from bench.core.io import atomic_write_text
from bench.evaluation.findings import doubted
from bench.reporting.format import dig
from bench.reporting.stats import Stat
from bench.reporting.summary import PluginSummary, SuiteSummary
from bench.reporting.tables import reliability_text, robustness_order, threat_model, ties


def csv_text(summary: SuiteSummary) -> str:
    keys = summary.catalogue.order(summary.keys())
    header = ["rank", "plugin", "latent", "n_seeds",
              *[f"{k}{s}" for k in keys for s in ("", "_std", "_n", "_doubted")],
              "reliability", "p_vs_top", "p_vs_NoPen"]
    out = _io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    order = robustness_order(summary)
    tied = ties(summary, order)
    for rank, p in enumerate(order, 1):
        cells: list = [rank, p.plugin, p.latent, len(p.runs)]
        for k in keys:
            stat: Stat | None = p.stats.get(k)
            n_doubted = p.reliability.doubting(k) if p.reliability else 0
            cells += ["" if stat is None else repr(stat.mean),
                      "" if stat is None or stat.std is None else repr(stat.std),
                      "" if stat is None else stat.n, n_doubted or ""]
        tie = tied.get(p.plugin, {})
        cells += [reliability_text(p) if p.reliability else "",
                  *("" if tie.get(k) is None else repr(tie[k]) for k in ("vs_top", "vs_base"))]
        writer.writerow(cells)
    return out.getvalue()


def _pct(stat: Stat | None) -> float | None:
    return None if stat is None else round(stat.mean * 100, 2)


def architecture(summary: SuiteSummary, latent: str) -> str:
    backbone = dig(summary.config, ("suite", "backbone")) or {}
    text = str(backbone.get("name", "?"))
    if backbone.get("name") == "mlp" and backbone.get("hidden"):
        text += f" (hidden {'-'.join(str(h) for h in backbone['hidden'])})"
    return f"{text}; latent {latent}"


def entry_findings(p: PluginSummary, key: str) -> list[str]:
    """"check (seed s): reason" of every finding that doubts ``key`` in one of p's runs."""
    from bench.reporting.summary import run_findings
    out = []
    for r in p.runs:
        for f in doubted(key, run_findings(r.result) or []):
            out.append(f"{f.check} (seed {r.seed}): {f.reason}")
    return out


def robustbench_entries(summary: SuiteSummary) -> list[dict]:
    from bench.evaluation.columns import readable
    model = threat_model(summary)
    dataset = dig(summary.config, ("suite", "dataset", "name"))
    entries = []
    for p in robustness_order(summary):
        notes = [f"lpc-bench suite {summary.suite}: mean over {len(p.runs)} seed(s), learning rate chosen on "
                 f"validation accuracy"]
        aa_key = best_key = None
        if model:
            aa_key, best_key = f"ra_autoattack:{model[0]}:{model[1]}", f"ra_best:{model[0]}:{model[1]}"
            notes += [f"AutoAttack number doubted by {text}" for text in entry_findings(p, aa_key)]
            notes += [f"best-known number doubted by {text}" for text in entry_findings(p, best_key)]
        notes += [f"budget deviation: {d}" for d in summary.deviations]
        entry = {"name": p.plugin, "dataset": dataset, "threat_model": model[0] if model else None,
                 "eps": readable(model[1]) if model else None, "eps_value": float(model[1]) if model else None,
                 "clean_acc": _pct(p.stats.get("test_acc")), "autoattack_acc": None, "external": None,
                 "unreliable": bool(p.reliability and aa_key and p.reliability.doubting(aa_key)),
                 "external_unreliable": bool(p.reliability and best_key and p.reliability.doubting(best_key)),
                 "architecture": architecture(summary, p.latent), "additional_data": False,
                 "number_forward_passes": 1, "n_seeds": len(p.runs), "footnote": "; ".join(notes)}
        if model:
            norm, eps = model
            entry["autoattack_acc"] = _pct(p.stats.get(f"ra_autoattack:{norm}:{eps}"))
            entry["external"] = _pct(p.stats.get(f"ra_best:{norm}:{eps}"))
        entries.append(entry)
    return entries


def write_exports(summary: SuiteSummary, out_dir: Path) -> list[Path]:
    out_dir = Path(out_dir)
    csv_path = out_dir / f"{summary.suite}.csv"
    json_path = out_dir / f"{summary.suite}.robustbench.json"
    atomic_write_text(csv_path, csv_text(summary))
    atomic_write_text(json_path, json.dumps(robustbench_entries(summary), indent=2, ensure_ascii=False) + "\n")
    return [csv_path, json_path]
