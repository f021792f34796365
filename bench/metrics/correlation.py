"""Separation vs robustness across the runs of a suite (the paper's Fig. 3).

For every *done* run (every plugin, seed and learning rate: each is a trained model),
take its class separation ratio R (``evaluations.geometry.<split>.R_mean``, split =
train — the headline — and test) and its DeepFool robustness ρ
(``evaluations.deepfool.rho_mean``), and report across runs:

* Pearson r of (R, ρ) and of (log R, log ρ), Spearman ρ_s of the same pairs (identical
  for the raw and log pairs, since ranks do not change under log; both are listed so
  the table is complete), each with scipy.stats' two-sided p-value;
* a 95 % percentile bootstrap confidence interval: runs resampled with replacement,
  ``n_boot`` times from a seeded generator; resamples where one variable is constant
  (no correlation defined) are dropped and counted;
* the per-run points, so the figure can be redrawn.

Anything missing is reported, not crashed on: no ρ at all gives a "not available"
entry naming the evaluator to run; runs lacking R or ρ are counted and left out; log
pairs drop non-positive values (counted).
"""
from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
from scipy import stats

from bench.core.errors import BenchError
from bench.core.io import atomic_write_json

R_PATH = ("evaluations", "geometry", "{split}", "R_mean")
RHO_PATH = ("evaluations", "deepfool", "rho_mean")
MIN_RUNS = 3


def _lookup(result: dict | None, path: tuple[str, ...], split: str = "") -> float | None:
    node = result
    for key in path:
        if not isinstance(node, dict):
            return None
        node = node.get(key.format(split=split))
    if isinstance(node, bool) or not isinstance(node, (int, float)) or not math.isfinite(node):
        return None
    return float(node)


def _rowwise_pearson(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Pearson r of each row pair of (B, n) arrays; NaN where a row is constant.

    Constancy is decided on the values (``np.ptp == 0``), not on the denominator: a row
    that repeats one non-dyadic value (0.1, 0.1, 0.1) has a float mean that differs from
    0.1 in the last bit, so its centred values are ~1e-17, not 0, the denominator is not
    0, and r comes out as ±1 from rounding noise.
    """
    constant = (np.ptp(x, axis=1) == 0) | (np.ptp(y, axis=1) == 0)
    xc = x - x.mean(axis=1, keepdims=True)
    yc = y - y.mean(axis=1, keepdims=True)
    den = np.sqrt((xc * xc).sum(1) * (yc * yc).sum(1))
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (xc * yc).sum(1) / den
    r[constant | (den == 0)] = np.nan
    return np.clip(r, -1.0, 1.0)


def correlate(x, y, *, n_boot: int = 2000, seed: int = 0) -> dict:
    """Pearson and Spearman correlation of paired samples, p-values and 95 % bootstrap CIs.

    Non-finite input is refused (BenchError naming the first bad value): scipy would
    return r = NaN with no reason while the bootstrap still built a CI from the finite
    resamples, a number with no meaning. ``analyse_suite`` never passes such values (it
    leaves out, and counts, runs whose R or ρ is missing or non-finite).
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1:
        raise BenchError(f"correlate needs two 1-D arrays of equal length, got {x.shape} and {y.shape}")
    for name, values in (("x", x), ("y", y)):
        bad = np.flatnonzero(~np.isfinite(values))
        if bad.size:
            raise BenchError(f"correlate needs finite values, but {name} has {bad.size} NaN/inf value(s) "
                             f"(first at index {int(bad[0])}: {values[bad[0]]}); drop those pairs first")
    n = int(x.size)
    out: dict = {"n": n}
    if n < MIN_RUNS:
        reason = f"{n} paired value(s); a correlation needs at least {MIN_RUNS}"
        return {**out, "pearson": None, "pearson_reason": reason, "spearman": None, "spearman_reason": reason}
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        reason = "one of the variables is constant across runs: the correlation is undefined"
        return {**out, "pearson": None, "pearson_reason": reason, "spearman": None, "spearman_reason": reason}

    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(n_boot, n))
    bx, by = x[idx], y[idx]
    boot = {"pearson": _rowwise_pearson(bx, by),
            "spearman": _rowwise_pearson(stats.rankdata(bx, axis=1), stats.rankdata(by, axis=1))}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scipy warns on tiny n; the values are still right
        tests = {"pearson": stats.pearsonr(x, y), "spearman": stats.spearmanr(x, y)}
    for name, res in tests.items():
        values = boot[name][np.isfinite(boot[name])]
        entry = {"r": float(res.statistic), "p": float(res.pvalue), "n_boot": int(n_boot),
                 "n_boot_degenerate": int(n_boot - values.size)}
        if values.size:
            lo, hi = np.quantile(values, [0.025, 0.975])
            entry["ci95"] = [float(lo), float(hi)]
        else:
            entry["ci95"] = None
            entry["ci95_reason"] = "every bootstrap resample was degenerate"
        out[name] = entry
    return out


def _points(records) -> tuple[list[dict], dict]:
    points, counts = [], {"runs": 0, "done": 0}
    for rec in records:
        counts["runs"] += 1
        if rec.status != "done":
            continue
        counts["done"] += 1
        res = rec.result
        points.append({"plugin": rec.plugin, "seed": rec.seed, "lr": rec.lr,
                       "run": f"{rec.plugin}/seed{rec.seed}-lr{rec.lr:g}",
                       "R_train": _lookup(res, R_PATH, "train"), "R_test": _lookup(res, R_PATH, "test"),
                       "rho": _lookup(res, RHO_PATH)})
    return points, counts


def _pair_analysis(points: list[dict], r_key: str, *, n_boot: int, seed: int) -> dict:
    usable = [p for p in points if p[r_key] is not None and p["rho"] is not None]
    entry: dict = {"n_runs": len(usable), "n_missing": len(points) - len(usable)}
    if not usable:
        entry["status"] = "not available"
        entry["reason"] = f"no done run has both {r_key} and rho"
        return entry
    r = np.array([p[r_key] for p in usable])
    rho = np.array([p["rho"] for p in usable])
    entry["status"] = "ok"
    entry["R_vs_rho"] = correlate(r, rho, n_boot=n_boot, seed=seed)
    positive = (r > 0) & (rho > 0)
    entry["logR_vs_logrho"] = correlate(np.log(r[positive]), np.log(rho[positive]), n_boot=n_boot, seed=seed)
    entry["logR_vs_logrho"]["n_dropped_non_positive"] = int((~positive).sum())
    return entry


def analyse_suite(records, *, n_boot: int = 2000, seed: int = 0) -> dict:
    """Correlation of R (train and test split) with DeepFool ρ over the done runs of a suite.

    ``records`` are ``bench.runs.folder.RunRecord`` objects (``load_runs``). Returns a
    JSON-able dict: ``{"train": {...}, "test": {...}, "points": [...], ...}`` where each
    split holds ``R_vs_rho`` and ``logR_vs_logrho`` (``pearson``/``spearman`` → ``r``,
    ``p``, ``ci95``), or ``status: "not available"`` with a reason.
    """
    records = list(records)
    points, counts = _points(records)
    suites = sorted({rec.suite for rec in records})
    out: dict = {"suite": suites[0] if len(suites) == 1 else suites, "n_runs": counts["runs"],
                 "n_done": counts["done"], "R": "evaluations.geometry.<split>.R_mean (grouped by true labels)",
                 "rho": "evaluations.deepfool.rho_mean", "runs_used": "every done run (all learning rates)",
                 "bootstrap": {"resamples": n_boot, "seed": seed, "interval": "percentile, 95 %"},
                 "points": points}
    if not any(p["rho"] is not None for p in points):
        reason = ("no done run has evaluations.deepfool.rho_mean; add the deepfool evaluator to the suite "
                  "or run `bench attack` on the runs")
        for split in ("train", "test"):
            out[split] = {"status": "not available", "reason": reason}
        out["status"] = "not available"
        out["reason"] = reason
        return out
    out["status"] = "ok"
    for split in ("train", "test"):
        out[split] = _pair_analysis(points, f"R_{split}", n_boot=n_boot, seed=seed)
    return out


def suite_folder(runs_root: Path, suite: str) -> Path:
    """``<runs_root>/<suite>``, or ``runs_root`` itself when it already is that folder."""
    runs_root = Path(runs_root)
    if (runs_root / suite).is_dir() or runs_root.name != suite:
        return runs_root / suite
    return runs_root


def write_analysis(runs_root: Path, suite: str, *, n_boot: int = 2000, seed: int = 0) -> Path:
    """Analyse the runs of ``suite`` under ``runs_root``; write ``<runs_root>/<suite>/analysis.json``."""
    from bench.runs.folder import load_runs
    records = load_runs(Path(runs_root), suite)
    analysis = analyse_suite(records, n_boot=n_boot, seed=seed)
    path = suite_folder(runs_root, suite) / "analysis.json"
    atomic_write_json(path, analysis)
    return path
