"""The leaderboard as data files beside its Markdown page.

* ``<suite>.csv``: one row per plugin (leaderboard order), every metric of the catalogue
  as ``<key>`` (mean over the counted seeds, in the metric's own unit: accuracies as
  fractions), ``<key>_std`` and ``<key>_n``, plus the reliability verdict;
  ``pandas.read_csv(path)`` loads it.
* ``<suite>.robustbench.json``: one entry per plugin in the shape of RobustBench's model
  entries (clean_acc, autoattack_acc, external, unreliable, eps, architecture, footnote,
  in percent), for one threat model: the norm with AutoAttack results (L∞ before L2, else
  the norm with best-known results), at RobustBench's standard radius for it (8/255 for
  L∞, 0.5 for L2) when the suite has it, else the suite's largest. ``autoattack_acc`` is
  AutoAttack's robust accuracy, ``external`` the best-known one (every attack together);
  either is null when not measured. ``pandas.read_json(path)`` loads it.
"""
from __future__ import annotations

import csv
import io as _io
import json
from pathlib import Path

from bench.core.io import atomic_write_text
from bench.reporting.catalogue import role_keys
from bench.reporting.format import dig
from bench.reporting.stats import Stat
from bench.reporting.summary import SuiteSummary
from bench.reporting.tables import masking_flags, reliability_text, robustness_order

STANDARD_EPS = {"Linf": 8 / 255, "L2": 0.5}
NORM_ORDER = ("Linf", "L2")


def csv_text(summary: SuiteSummary) -> str:
    keys = summary.catalogue.order(summary.keys())
    header = ["rank", "plugin", "latent", "n_seeds", *[f"{k}{s}" for k in keys for s in ("", "_std", "_n")],
              "reliability", "masking_flagged_runs"]
    out = _io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    for rank, p in enumerate(robustness_order(summary), 1):
        cells: list = [rank, p.plugin, p.latent, len(p.runs)]
        for k in keys:
            stat: Stat | None = p.stats.get(k)
            cells += ["" if stat is None else repr(stat.mean),
                      "" if stat is None or stat.std is None else repr(stat.std),
                      "" if stat is None else stat.n]
        cells += [reliability_text(p) if p.reliability else "", masking_flags(p)]
        writer.writerow(cells)
    return out.getvalue()


def threat_model(summary: SuiteSummary) -> tuple[str, str] | None:
    """(norm, eps key) the RobustBench entries report (see the module docstring)."""
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


def _pct(stat: Stat | None) -> float | None:
    return None if stat is None else round(stat.mean * 100, 2)


def architecture(summary: SuiteSummary, latent: str) -> str:
    backbone = dig(summary.config, ("suite", "backbone")) or {}
    text = str(backbone.get("name", "?"))
    if backbone.get("name") == "mlp" and backbone.get("hidden"):
        text += f" (hidden {'-'.join(str(h) for h in backbone['hidden'])})"
    return f"{text}; latent {latent}"


def robustbench_entries(summary: SuiteSummary) -> list[dict]:
    from bench.evaluation.columns import readable
    model = threat_model(summary)
    dataset = dig(summary.config, ("suite", "dataset", "name"))
    entries = []
    for p in robustness_order(summary):
        notes = [f"lpc-bench suite {summary.suite}: mean over {len(p.runs)} seed(s), learning rate chosen on "
                 f"validation accuracy"]
        if p.reliability is not None and p.reliability.unreliable:
            notes.append(reliability_text(p))
        notes += [f"budget deviation: {d}" for d in summary.deviations]
        entry = {"name": p.plugin, "dataset": dataset, "threat_model": model[0] if model else None,
                 "eps": readable(model[1]) if model else None, "eps_value": float(model[1]) if model else None,
                 "clean_acc": _pct(p.stats.get("test_acc")), "autoattack_acc": None, "external": None,
                 "unreliable": bool(p.reliability and p.reliability.unreliable),
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
