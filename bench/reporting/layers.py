"""The leaderboard's "Layer by layer" section and its figure, from the ``layerwise``,
``misclassification`` and ``geometry`` results of the counted runs (issue 21).

* ``layer_values(summary, condition, metric)``: per plugin, the mean over its counted seeds of
  one ``layerwise`` metric at each layer, keyed by the layer's position on a common depth axis
  (the hidden layers 1..H, then z at H + 1 when the plugin has one, the logits at H + 2);
* ``bench.reporting.figures.layer_figure`` draws ``layers.png`` from them: those curves
  against depth, one line per plugin, for
  CDNV, NC1 = Tr Σ_W/Tr Σ_B, effective rank and nearest-training-centre accuracy (columns) on
  the attacked inputs clean, at the best-known perturbation and under equal-norm noise (rows);
* ``section_lines``: the tables (misclassification detection; the effective rank per layer and
  the first layer perturbed inputs leave their centre; the neural-collapse figures valid at every
  width with the validity note) and the figure. Empty when no counted run has these results.
"""
from __future__ import annotations

import math
import statistics
from pathlib import Path

from bench.reporting.format import NA, dig, fmt_sig, fmt_stat, md_table

CONDITIONS = (("clean", "clean attacked inputs"), ("best_known", "at the best-known perturbation r_best"),
              ("best_known_noise", "equal-norm noise"))
CURVES = (("cdnv", "CDNV", True), ("nc1_ratio", "NC1 = Tr Σ_W / Tr Σ_B", True),
          ("effective_rank", "effective rank", False), ("ncc_accuracy", "NCC accuracy (train centres)", False))
LAYERWISE = ("evaluations", "layerwise")


def _depths(entry: dict) -> dict[str, int]:
    """Layer name → position on the common depth axis (hidden 1..H, z H + 1, logits H + 2)."""
    names = list(entry.get("layers") or [])
    hidden = [n for n in names if n not in ("z", "logits")]
    out = {n: i + 1 for i, n in enumerate(hidden)}
    if "z" in names:
        out["z"] = len(hidden) + 1
    if "logits" in names:
        out["logits"] = len(hidden) + 2
    return out


def layer_values(summary, condition: str, metric: str) -> dict[str, dict[int, float]]:
    out: dict[str, dict[int, float]] = {}
    for p in summary.plugins:
        per_depth: dict[int, list[float]] = {}
        for rec in p.runs:
            entry = dig(rec.result, LAYERWISE)
            if not isinstance(entry, dict):
                continue
            cond = dig(entry, ("conditions", condition))
            if not isinstance(cond, dict):
                continue
            for name, depth in _depths(entry).items():
                value = dig(cond, (name, metric))
                if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                    per_depth.setdefault(depth, []).append(float(value))
        if per_depth:
            out[p.plugin] = {d: statistics.fmean(v) for d, v in sorted(per_depth.items())}
    return out


def axis_labels(summary) -> dict[int, str]:
    labels: dict[int, str] = {}
    for p in summary.plugins:
        for rec in p.runs:
            entry = dig(rec.result, LAYERWISE)
            if isinstance(entry, dict):
                for name, depth in _depths(entry).items():
                    labels.setdefault(depth, name)
    return labels


def _first_result(p, path: tuple[str, ...]):
    for rec in p.runs:
        value = dig(rec.result, path)
        if value is not None:
            return value
    return None


def section_lines(summary, figure: list[str]) -> list[str]:
    has_layers = any(isinstance(dig(r.result, LAYERWISE), dict) for p in summary.plugins for r in p.runs)
    has_mis = any("msp_auroc" in p.stats or "n_errors" in p.stats for p in summary.plugins)
    has_nc = any("cdnv" in p.stats or "nc1_ratio" in p.stats for p in summary.plugins)
    if not (has_layers or has_mis or has_nc):
        return []
    spec = summary.catalogue.spec
    lines = ["## Layer by layer, misclassification detection, and collapse at every width", ""]
    if has_mis:
        keys = ["msp_auroc", "msp_aurc", "entropy_auroc", "centre_auroc", "n_errors"]
        rows = [[p.plugin, p.latent, str(len(p.runs)), *(fmt_stat(p.stats.get(k), spec(k).fmt, len(p.runs))
                                                        for k in keys)] for p in summary.plugins]
        lines += ["### Misclassification detection (test split)", ""]
        lines += md_table(["plugin", "latent", "n", *(spec(k).label for k in keys)], rows)
        lines += ["", "AUROC of a confidence score for correct (positive) vs wrong predictions (0.5 = chance); AURC: "
                  "area under the risk–coverage curve (lower is better). Scores: maximum softmax probability, "
                  "negative predictive entropy, negative distance of the latent to the nearest training class "
                  "mean. A run with fewer than 5 test errors has no AUROC (its error count is shown).", ""]
    if has_layers:
        depth_labels = axis_labels(summary)
        erank = layer_values(summary, "train", "effective_rank")
        header = ["plugin", *(f"eff. rank {depth_labels[d]}" for d in sorted(depth_labels)),
                  "clean inputs leave at", "adversarials leave at", "noise leaves at"]
        rows = []
        for p in summary.plugins:
            values = erank.get(p.plugin, {})
            leave = []
            for cond in ("clean", "best_known", "best_known_noise"):
                seen = [dig(r.result, LAYERWISE + ("first_leave", cond, "layer")) for r in p.runs
                        if isinstance(dig(r.result, LAYERWISE + ("first_leave", cond)), dict)]
                leave.append(", ".join(str(s) if s is not None else "never" for s in seen) if seen else NA)
            rows.append([p.plugin, *(fmt_sig(values[d]) if d in values else NA for d in sorted(depth_labels)),
                         *leave])
        lines += ["### Rank and collapse under attack, layer by layer", ""]
        lines += md_table(header, rows)
        lines += ["", "Effective rank (Roy & Vetterli 2007) of the centred training features of each layer (conv "
                  "maps averaged over space), mean over seeds. \"Leave at\": per seed, the first layer where most "
                  "of the attacked inputs (those some attack flipped) sit nearer another class's training-split "
                  "centre than their own — at their best-known perturbation, and under Gaussian noise of the same "
                  "L2 norm, with the clean inputs as the reference (a saturated network's logits can fail the "
                  "rule even clean); \"never\": they stay nearest their own centre up to the logits.", ""]
        lines += figure + ([""] if figure else [])
    if has_nc:
        keys = ["nc1", "nc1_truncated", "nc1_ratio", "cdnv", "gnc2", "unc3", "erank"]
        rows = []
        for p in summary.plugins:
            d = _first_result(p, ("evaluations", "geometry", "train", "d"))
            k = _first_result(p, ("evaluations", "geometry", "train", "K"))
            low = isinstance(d, int) and isinstance(k, int) and d < k - 1
            cells = [fmt_stat(p.stats.get(key), spec(key).fmt, len(p.runs)) for key in keys]
            if low:
                cells[0] += " ‡"
                cells[1] += " ‡"
            rows.append([p.plugin, p.latent, NA if k is None else str(k), *cells])
        lines += ["### Neural collapse at every width (training split)", ""]
        lines += md_table(["plugin", "latent", "K", *(spec(key).label for key in keys)], rows)
        lines += ["", "‡: d < K − 1, where no simplex ETF fits: the pseudo-inverse NC1 forms are ill-conditioned and "
                  "NC2's max-angle cannot reach 0; read CDNV (Galanti et al. 2021, mean over class pairs of "
                  "(σ_i² + σ_j²)/(2‖μ_i − μ_j‖²)), NC1 = Tr Σ_W / Tr Σ_B, GNC2 (variance of the pairwise "
                  "Euclidean distances of the unit-normalised centred class means; Liu et al. 2023) and UNC3 "
                  "(coefficient of variation of cos(w_c, μ_c − μ_G); Wu & Papyan 2024) instead, which hold at "
                  "every d. With d ≥ K − 1 every figure holds.", ""]
    return lines
