"""Markdown leaderboards written from run directories alone.

``build_report(runs_root, suite, out_dir)`` reads every run folder of one suite (config,
provenance, log and result files; nothing from memory), picks each plugin's learning
rate per seed on validation accuracy, and writes ``<out_dir>/<suite>.md`` with figures in
``<out_dir>/<suite>-figures/``. The output is deterministic: rows and columns are sorted,
numbers have fixed formats and every date comes from the runs' provenance.

The same per-plugin summary (``summarise``) feeds ``bench check`` and ``bench baseline``.
A missing evaluation shows as "–"; runs that failed or are unfinished are listed under
"Runs not counted" and never enter a mean.
"""
from __future__ import annotations

import math
import os
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.core.errors import BenchError
from bench.core.io import atomic_write_text, read_json, read_jsonl
from bench.runs.results import RunRecord, load_runs, select_best_lr

NA = "–"
LPC_FAMILY = ("LPC", "LPC-WIDE", "LPC-NARROW", "LPC-SCL")       # the L2 penalty on a linear z
L2_PENALISED = ("LPC", "LPC-WIDE", "LPC-NARROW", "LPC-SCL", "LPC-NoPen")
# Config keys that do not change a run's numbers (where the data lies, how and where it
# ran, prose): never compared between runs or with a baseline.
LOCAL_CONFIG_KEYS = ("dataset.root", "dataset.download", "runtime", "executor", "description", "paper_differences")


def is_local_key(dotted: str) -> bool:
    return any(dotted == k or dotted.startswith(k + ".") for k in LOCAL_CONFIG_KEYS)


# --------------------------------------------------------------------------- metrics

@dataclass(frozen=True)
class Metric:
    """One number per run, read from result.json (or log.jsonl) under a stable key.

    ``atol``/``rtol`` are the tolerance floor ``bench check`` uses before any test
    (a difference below max(rtol·|reference|, atol) is never a failure).
    """

    key: str
    label: str
    path: tuple[str, ...] | None
    fmt: str = "sig"          # "sig": 3 significant digits; "pct": fraction shown as percent
    atol: float = 0.0
    rtol: float = 0.05


GEOM = ("evaluations", "geometry", "train")
STATIC_METRICS: tuple[Metric, ...] = (
    Metric("test_acc", "test acc (%)", ("test_acc",), "pct", atol=0.01, rtol=0.0),
    Metric("rho", "ρ DeepFool", ("evaluations", "deepfool", "rho_mean"), atol=1e-4),
    Metric("rho_median", "ρ DeepFool (median)", ("evaluations", "deepfool", "rho_median"), atol=1e-4),
    Metric("R", "R", GEOM + ("R_mean",), atol=0.01),
    Metric("sigma_w_trace", "Σ_W trace", GEOM + ("sigma_w_trace",), atol=1e-9),
    Metric("sigma_w_mean_entry", "Σ_W mean entry", GEOM + ("sigma_w_mean_entry",), atol=1e-12),
    Metric("sigma_w_per_dim", "Σ_W trace / d", None, atol=1e-10),
    Metric("cv_norm", "CV ‖z‖", GEOM + ("cv_norm",), atol=1e-3),
    Metric("cv_abs", "CV |z_ij|", GEOM + ("cv_abs",), atol=1e-3),
    Metric("entropy_per_dim", "H/d (nats)", ("evaluations", "entropy", "train", "entropy_per_dim"), atol=0.02),
    Metric("zero_knn_fraction", "zero k-NN dist. (%)", ("evaluations", "entropy", "train", "zero_knn_fraction"),
           "pct", atol=0.01, rtol=0.0),
    Metric("nc1", "NC1", GEOM + ("nc1",), atol=1e-6),
    Metric("gmm_score_mean", "binarity score", ("evaluations", "binarity", "train", "gmm_score_mean"), atol=0.02),
    Metric("gmm_score_min", "binarity score (min)", ("evaluations", "binarity", "train", "gmm_score_min"), atol=0.02),
    Metric("sigma_mean", "GMM σ (mean)", ("evaluations", "binarity", "train", "sigma_mean"), atol=1e-6),
    Metric("peaks_dist_mean", "peak distance", ("evaluations", "binarity", "train", "peaks_dist_mean"), atol=0.05),
    Metric("peaks_dist_min", "peak distance (min)", ("evaluations", "binarity", "train", "peaks_dist_min"), atol=0.05),
    Metric("lipschitz_mean", "Lipschitz (mean)", ("evaluations", "lipschitz", "mean"), atol=1e-3),
    Metric("masking_fraction", "masking: fraction smaller", ("evaluations", "masking", "fraction_smaller"),
           "pct", atol=0.02, rtol=0.0),
    Metric("final_loss", "final train loss", None, atol=0.01),
)
STATIC_BY_KEY = {m.key: m for m in STATIC_METRICS}
NORM_LABEL = {"L2": "L2", "Linf": "L∞"}


def metric_spec(key: str) -> Metric:
    """The Metric of a static key, or of a dynamic one (``ra:<norm>:<eps>``, ``minnorm:<attack>``)."""
    if key in STATIC_BY_KEY:
        return STATIC_BY_KEY[key]
    kind, _, rest = key.partition(":")
    if kind == "ra":
        norm, _, eps = rest.partition(":")
        return Metric(key, f"RA {NORM_LABEL.get(norm, norm)} ε={eps_label(eps)} (%)", None, "pct", atol=0.01, rtol=0.0)
    if kind == "minnorm":
        return Metric(key, f"{rest} median min-norm", None, atol=1e-4)
    return Metric(key, key, None)


def eps_label(text: str) -> str:
    """'0.141176' → '36/255' (a whole number of grey levels), else the key as written."""
    value = _float_or_inf(text)
    levels = value * 255
    if math.isfinite(value) and 0 < value < 1 and abs(levels - round(levels)) < 1e-3:
        return f"{round(levels)}/255"
    return text


def metric_order(keys) -> list[str]:
    """Static metrics in table order, then robust accuracies by norm and ε, then the rest."""
    static = [m.key for m in STATIC_METRICS if m.key in keys]

    def dyn(key: str):
        kind, _, rest = key.partition(":")
        norm, _, eps = rest.partition(":")
        return (kind != "ra", norm, _float_or_inf(eps), key)
    return static + sorted((k for k in keys if k not in STATIC_BY_KEY), key=dyn)


def _float_or_inf(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return math.inf


def number(value: Any) -> float | None:
    """A finite float, or None (missing, a bool, a string such as "nan", a dict with a reason)."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)):
        value = float(value)
    elif isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            return None
    else:
        return None
    return value if math.isfinite(value) else None


def dig(data: Any, path: tuple[str, ...]) -> Any:
    for part in path:
        if not isinstance(data, dict) or part not in data:
            return None
        data = data[part]
    return data


def run_metrics(result: dict, log: list[dict]) -> dict[str, float]:
    """Every number of one run the report and the check use, keyed as in ``metric_spec``."""
    out: dict[str, float] = {}
    for metric in STATIC_METRICS:
        if metric.path is not None:
            value = number(dig(result, metric.path))
            if value is not None:
                out[metric.key] = value
    trace, dim = number(dig(result, GEOM + ("sigma_w_trace",))), number(dig(result, ("latent", "dim")))
    if trace is not None and dim:
        out["sigma_w_per_dim"] = trace / dim
    robust = dig(result, ("evaluations", "attacks", "robust_accuracy"))
    if isinstance(robust, dict):
        for norm, per_eps in robust.items():
            if isinstance(per_eps, dict):
                for eps, acc in per_eps.items():
                    value = number(acc)
                    if value is not None:
                        out[f"ra:{norm}:{eps}"] = value
    min_norm = dig(result, ("evaluations", "attacks", "min_norm"))
    if isinstance(min_norm, dict):
        for attack, entry in min_norm.items():
            value = number(dig(entry, ("median_norm",)))
            if value is not None:
                out[f"minnorm:{attack}"] = value
    losses = [number(row.get("loss_total")) for row in log if isinstance(row, dict)]
    if losses and losses[-1] is not None:
        out["final_loss"] = losses[-1]
    return out


# --------------------------------------------------------------------------- statistics

@dataclass(frozen=True)
class Stat:
    """Mean, sample standard deviation (n − 1; None for a single value) and n."""

    mean: float
    std: float | None
    n: int

    @classmethod
    def of(cls, values: list[float]) -> "Stat | None":
        values = [v for v in values if v is not None and math.isfinite(v)]
        if not values:
            return None
        return cls(statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else None, len(values))

    def as_dict(self) -> dict:
        return {"mean": self.mean, "std": self.std, "n": self.n}


def fmt_sig(x: float | None, digits: int = 3) -> str:
    """Fixed-width-free, deterministic: 3 significant digits, scientific below 1e-3 or from 1e4."""
    if x is None or not math.isfinite(x):
        return NA
    if x == 0:
        return "0"
    a = abs(x)
    if a >= 1e4 or a < 1e-3:
        return f"{x:.{digits - 1}e}"
    decimals = max(0, digits - 1 - math.floor(math.log10(a)))
    return f"{x:.{decimals}f}"


def _decimals(text: str) -> int:
    return len(text.split(".", 1)[1]) if "." in text and "e" not in text else 0


def fmt_stat(stat: Stat | None, fmt: str = "sig", n_expected: int | None = None) -> str:
    """"mean ± std" (the std in the mean's precision); a single value alone; "–" if none."""
    if stat is None:
        return NA
    if fmt == "pct":
        mean_text = f"{stat.mean * 100:.2f}"
        std_text = None if stat.std is None else f"{stat.std * 100:.2f}"
    else:
        mean_text = fmt_sig(stat.mean)
        if stat.std is None:
            std_text = None
        elif "e" in mean_text or stat.mean == 0:
            std_text = f"{stat.std:.1e}"
        else:
            std_text = f"{stat.std:.{_decimals(mean_text)}f}"
    text = mean_text if std_text is None else f"{mean_text} ± {std_text}"
    if n_expected is not None and stat.n != n_expected:
        text += f" (n={stat.n})"
    return text


@dataclass(frozen=True)
class Correlation:
    """Pearson correlation of R (train split) with DeepFool ρ across runs (scipy.stats.pearsonr)."""

    r: float
    p: float
    n: int
    r_log: float | None = None      # of log10 R with log10 ρ


def r_rho_points(records: list[RunRecord]) -> list[tuple[RunRecord, float, float]]:
    """(run, R, ρ) of every done run that has both, positive and finite."""
    points = []
    for rec in records:
        if rec.status != "done":
            continue
        values = run_metrics(rec.result, [])
        r, rho = values.get("R"), values.get("rho")
        if r is not None and rho is not None and r > 0 and rho > 0:
            points.append((rec, r, rho))
    return points


def pearson_r_rho(records: list[RunRecord]) -> Correlation | None:
    """Across all done runs (every learning rate, as the paper's Fig. 3); None below 3 runs."""
    from scipy import stats
    points = r_rho_points(records)
    if len(points) < 3:
        return None
    rs = [p[1] for p in points]
    rhos = [p[2] for p in points]
    if len(set(rs)) < 2 or len(set(rhos)) < 2:
        return None
    res = stats.pearsonr(rs, rhos)
    res_log = stats.pearsonr([math.log10(v) for v in rs], [math.log10(v) for v in rhos])
    return Correlation(float(res.statistic), float(res.pvalue), len(points), float(res_log.statistic))


# --------------------------------------------------------------------------- summary

@dataclass
class PluginSummary:
    plugin: str
    runs: list[RunRecord]                     # the counted runs: best lr per seed, by seed
    stats: dict[str, Stat]
    latent: str                               # e.g. "z (16)"


@dataclass
class SuiteSummary:
    suite: str
    config: dict                              # the suite dict of config.json (first run)
    records: list[RunRecord]
    plugins: list[PluginSummary]              # suite order; only plugins with a counted run
    not_counted: list[RunRecord]
    selected: set = field(default_factory=set)   # paths of the counted runs
    correlation: Correlation | None = None

    def stats(self) -> dict[str, dict[str, Stat]]:
        return {p.plugin: p.stats for p in self.plugins}

    def plugin(self, name: str) -> PluginSummary | None:
        return next((p for p in self.plugins if p.plugin == name), None)


def _run_log(rec: RunRecord) -> list[dict]:
    return read_jsonl(rec.path / "log.jsonl")


def _latent_text(result: dict) -> str:
    name, dim = dig(result, ("latent", "name")), dig(result, ("latent", "dim"))
    if name is None:
        return NA
    return f"{name} ({dim})" if dim is not None else str(name)


def plugin_order(config: dict, names) -> list[str]:
    suite_plugins = list(dig(config, ("suite", "plugins")) or [])
    names = set(names)
    return [p for p in suite_plugins if p in names] + sorted(names - set(suite_plugins))


def summarise(runs_root: Path, suite: str | None) -> SuiteSummary:
    """Load a suite's runs and reduce them to per-plugin statistics over seeds."""
    records = load_runs(Path(runs_root), suite)
    records.sort(key=lambda r: (r.plugin, r.seed, r.lr, str(r.path)))
    best = select_best_lr(records)
    plugins = []
    for plugin in plugin_order(records[0].config, {r.plugin for r in records}):
        runs = sorted((rec for (p, _), rec in best.items() if p == plugin), key=lambda r: r.seed)
        if not runs:
            continue
        per_run = [run_metrics(r.result, _run_log(r)) for r in runs]
        keys = metric_order({k for values in per_run for k in values})
        stats = {k: Stat.of([v[k] for v in per_run if k in v]) for k in keys}
        latents = sorted({_latent_text(r.result) for r in runs})
        plugins.append(PluginSummary(plugin, runs, stats, ", ".join(latents)))
    not_counted = [r for r in records if r.status != "done"]
    return SuiteSummary(records[0].suite, records[0].config, records, plugins, not_counted,
                        {str(r.path) for r in best.values()}, pearson_r_rho(records))


def require_counted(summary: SuiteSummary, runs_root: Path) -> None:
    if not summary.plugins:
        raise BenchError(f"no finished runs of suite {summary.suite} under {runs_root} "
                         f"({len(summary.not_counted)} runs failed or unfinished)")


def flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(data, dict):
        out = {}
        for key in sorted(data):
            out.update(flatten(data[key], f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: data}


def comparable_config(config: dict) -> dict[str, Any]:
    """The suite config as flat dotted keys, without the machine-local ones."""
    flat = flatten(config.get("suite", {}))
    return {k: v for k, v in flat.items() if not is_local_key(k)}


def config_differences(a: dict, b: dict, limit: int = 4) -> str:
    """'recipe.epochs: 30 vs 5, …' for two flat configs; '' when equal."""
    keys = sorted(k for k in set(a) | set(b) if a.get(k, "(absent)") != b.get(k, "(absent)"))
    parts = [f"{k}: {a.get(k, '(absent)')} vs {b.get(k, '(absent)')}" for k in keys[:limit]]
    if len(keys) > limit:
        parts.append(f"and {len(keys) - limit} more")
    return ", ".join(parts)


def mixed_configs(records: list[RunRecord]) -> str:
    """'' when every run used the same suite configuration, else where the first two differ."""
    first = comparable_config(records[0].config)
    for rec in records[1:]:
        other = comparable_config(rec.config)
        if other != first:
            return config_differences(first, other)
    return ""


# --------------------------------------------------------------------------- markdown helpers

def md_table(header: list[str], rows: list[list[str]]) -> list[str]:
    def cell(text: str) -> str:
        return str(text).replace("|", "\\|")
    lines = ["| " + " | ".join(cell(h) for h in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]
    return lines


def _rel(path: Path, start: Path) -> str:
    return os.path.relpath(Path(path).resolve(), Path(start).resolve()).replace(os.sep, "/")


def _provenances(records: list[RunRecord]) -> list[dict]:
    provs = []
    for rec in records:
        path = rec.path / "provenance.json"
        if path.exists():
            try:
                provs.append(read_json(path))
            except (OSError, ValueError):
                pass
    return provs


def _run_name(rec: RunRecord) -> str:
    return f"{rec.plugin}/seed{rec.seed}-lr{rec.lr:g}"


# --------------------------------------------------------------------------- the report

def build_report(runs_root: Path, suite: str | None, out_dir: Path, *, figures: bool = True) -> Path:
    """Write ``<out_dir>/<suite>.md`` (and its figures) from the run directories; return its path."""
    runs_root, out_dir = Path(runs_root), Path(out_dir)
    summary = summarise(runs_root, suite)
    out_dir.mkdir(parents=True, exist_ok=True)
    figure_notes = make_figures(summary, out_dir) if figures else {}
    text = render_report(summary, out_dir, figure_notes)
    path = out_dir / f"{summary.suite}.md"
    atomic_write_text(path, text)
    return path


def make_figures(summary: SuiteSummary, out_dir: Path) -> dict[str, list[str]]:
    """Draw the figures; per section, Markdown lines (image links or a note why not)."""
    from bench.reporting import figures
    return figures.draw_all(summary, out_dir)


def render_report(summary: SuiteSummary, out_dir: Path, figure_notes: dict[str, list[str]]) -> str:
    lines = [f"# Leaderboard: `{summary.suite}`", ""]
    lines += setup_lines(summary)
    lines += leaderboard_lines(summary)
    lines += correlation_lines(summary, figure_notes.get("scatter", []))
    lines += masking_lines(summary)
    lines += paper_table_lines(summary)
    lines += claim_lines(summary)
    lines += figure_lines(figure_notes)
    lines += run_lines(summary, out_dir)
    lines += incomplete_lines(summary.not_counted, out_dir)
    while lines and lines[-1] == "":
        lines.pop()
    return "\n".join(lines) + "\n"


def recipe_line(config: dict) -> str:
    from bench.config.schema import Recipe
    from bench.core.typed import from_dict
    try:
        return from_dict(Recipe, dig(config, ("suite", "recipe")) or {}).one_line()
    except BenchError as exc:
        return f"(not readable: {exc})"


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def setup_lines(summary: SuiteSummary) -> list[str]:
    config = summary.config.get("suite", {})
    records = summary.records
    provs = _provenances(records)
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
        f"{_count(len(plugins), 'plugin')} × {_count(len(seeds), 'seed')} ({', '.join(map(str, seeds))}) × "
        f"{_count(len(lrs), 'learning rate')} ({', '.join(f'{lr:g}' for lr in lrs)}): {len(records)} runs found, "
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
        f"- **library versions**: {version_text}",
    ]
    mixed = mixed_configs(records)
    if mixed:
        lines.append(f"- **warning**: the runs were made with different suite configurations ({mixed}); "
                     "their numbers may not be comparable")
    differences = config.get("paper_differences") or []
    if differences:
        lines.append("- **differences from the paper's protocol**:")
        lines += [f"  - {d}" for d in differences]
    return lines + [""]


def ra_keys(summary: SuiteSummary) -> list[str]:
    keys = {k for p in summary.plugins for k in p.stats if k.startswith("ra:")}
    return metric_order(keys)


LEADERBOARD_KEYS = ("test_acc", "rho", "R", "sigma_w_trace", "cv_norm", "entropy_per_dim", "nc1", "gmm_score_mean")


def robustness_order(summary: SuiteSummary) -> list[PluginSummary]:
    """By mean DeepFool ρ, most robust first; plugins without ρ last, in suite order."""
    position = {p.plugin: i for i, p in enumerate(summary.plugins)}

    def key(p: PluginSummary):
        rho = p.stats.get("rho")
        return (rho is None, -(rho.mean if rho else 0.0), position[p.plugin])
    return sorted(summary.plugins, key=key)


def _masking_flags(p: PluginSummary) -> int:
    return sum(bool(dig(r.result, ("evaluations", "masking", "flag"))) for r in p.runs)


def leaderboard_lines(summary: SuiteSummary) -> list[str]:
    ras = ra_keys(summary)
    keys = ["test_acc", "rho", *ras, *LEADERBOARD_KEYS[2:]]
    header = ["#", "plugin", "latent", "n", *(metric_spec(k).label for k in keys)]
    rows = []
    flagged_any = False
    for rank, p in enumerate(robustness_order(summary), 1):
        n_expected = len(p.runs)
        flags = _masking_flags(p)
        name = p.plugin
        if flags:
            name += f" † ({flags}/{n_expected})"
            flagged_any = True
        rows.append([str(rank), name, p.latent, str(n_expected),
                     *(fmt_stat(p.stats.get(k), metric_spec(k).fmt, n_expected) for k in keys)])
    lines = ["## Leaderboard (sorted by DeepFool ρ, most robust first; plugins without ρ last, in suite order)", ""]
    lines += md_table(header, rows)
    lines += ["",
              "Cells are mean ± sample standard deviation over the counted seeds (n; a single seed shows its "
              "value alone; \"(n=k)\" marks a metric measured on fewer seeds); \"–\": not measured (the "
              "evaluator is not in the suite or produced no value). ρ: DeepFool's mean ‖r‖₂/‖x‖₂ over the "
              "test inputs it flipped (see the masking section for the counts); RA: robust accuracy (%) at "
              "radius ε in [0, 1] pixel space; Σ_W trace: trace of the within-class covariance (the paper "
              "prints the mean matrix entry: Table I below); CV ‖z‖: coefficient of variation of the latent "
              "norm; H/d: Kozachenko–Leonenko entropy (k = 20) per dimension, nats; NC1 = Tr(Σ_W Σ_B⁺)/K; "
              "binarity score: mean per-dimension log-likelihood of a 2-component Gaussian mixture."]
    if flagged_any:
        lines += ["", "† flagged by the gradient-masking cross-check in (k/n) of its counted runs: another "
                  "minimum-norm attack often found smaller perturbations, so its ρ may overstate its robustness."]
    missing = [p for p in plugin_order(summary.config, {r.plugin for r in summary.records})
               if summary.plugin(p) is None]
    if missing:
        lines += ["", f"Plugins with no counted run: {', '.join(missing)} (see *Runs not counted*)."]
    return lines + [""]


def suite_analysis(records: list[RunRecord]) -> tuple[Any, str | None]:
    """``bench.metrics.correlation.analyse_suite`` on the done runs, or (None, why not)."""
    try:
        from bench.metrics.correlation import analyse_suite
    except ImportError:
        return None, "not available (bench.metrics.correlation is not installed in this checkout)"
    try:
        return analyse_suite([r for r in records if r.status == "done"]), None
    except Exception as exc:  # the analysis is optional: report why it is missing
        return None, f"not available ({type(exc).__name__}: {exc})"


def _fmt_any(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return str(value).lower()
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return fmt_sig(value, 4)
    if isinstance(value, (list, tuple)) and len(value) <= 4:
        return "[" + ", ".join(_fmt_any(v) for v in value) + "]"
    if isinstance(value, str):
        return value
    return None


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
        return [f"- {k}: {_fmt_any(v)}" for k, v in sorted(analysis.items()) if _fmt_any(v) is not None]
    boot = analysis.get("bootstrap") if isinstance(analysis.get("bootstrap"), dict) else {}
    lines = md_table(["R from split", "pair", "runs", "Pearson r [95 % CI] (p)", "Spearman [95 % CI] (p)"], rows)
    lines += ["", f"Runs used: {analysis.get('runs_used', 'every done run')}; confidence intervals: "
              f"{boot.get('interval', 'bootstrap')}, {boot.get('resamples', '?')} bootstrap resamples "
              f"(seed {boot.get('seed', '?')})."]
    return lines + ([" ".join(notes)] if notes else [])


def correlation_lines(summary: SuiteSummary, figure: list[str]) -> list[str]:
    lines = ["## Class separation vs robustness (paper Fig. 3)", ""]
    lines += figure + ([""] if figure else [])
    analysis, why = suite_analysis(summary.records)
    c = summary.correlation
    if analysis is not None:
        lines.append("Suite analysis (`bench.metrics.correlation`): correlation of R with DeepFool ρ across runs.")
        lines.append("")
        lines += analysis_lines(analysis)
    else:
        lines.append(f"Suite analysis (Pearson/Spearman with bootstrap 95 % CI): {why}.")
        lines.append("")
        if c is None:
            lines.append("Pearson r(R, ρ): not computable (needs at least 3 done runs with both R and ρ).")
        else:
            lines.append(f"Pearson r(R, ρ) = {c.r:.3f} (p = {c.p:.2g}) over all {c.n} done runs (every learning "
                         f"rate, as the paper's Fig. 3); of log R with log ρ: {c.r_log:.3f}.")
    lines += ["", "The paper reports Pearson r(R, ρ) = 0.97 (CIFAR-10) and 0.985 (CIFAR-100) across all its runs."]
    return lines + [""]


def masking_lines(summary: SuiteSummary) -> list[str]:
    lines = ["## DeepFool outcomes and the gradient-masking cross-check", ""]
    rows = []
    any_data = False
    for p in summary.plugins:
        df = [dig(r.result, ("evaluations", "deepfool")) for r in p.runs]
        mk = [dig(r.result, ("evaluations", "masking")) for r in p.runs]
        counts = []
        for key in ("n_flipped", "n_not_flipped", "n_already_misclassified"):
            values = [number(d.get(key)) for d in df if isinstance(d, dict)]
            values = [v for v in values if v is not None]
            counts.append(str(int(sum(values))) if values else NA)
        mk = [m for m in mk if isinstance(m, dict)]
        flagged = sum(bool(m.get("flag")) for m in mk)
        verdicts = sorted({str(m["verdict"]) for m in mk if m.get("verdict") is not None})
        minnorm = [f"{k.split(':', 1)[1]} {fmt_stat(p.stats[k])}" for k in p.stats if k.startswith("minnorm:")]
        if any(c != NA for c in counts) or mk or minnorm:
            any_data = True
        rows.append([p.plugin, *counts, "; ".join(minnorm) or NA,
                     fmt_stat(p.stats.get("masking_fraction"), "pct"),
                     f"{flagged}/{len(mk)}" if mk else NA, "; ".join(verdicts) or NA])
    if not any_data:
        return lines + ["No DeepFool or masking results in these runs (evaluators `deepfool`, `attacks`, "
                        "`masking` not in the suite).", ""]
    lines += md_table(["plugin", "flipped", "not flipped", "already misclassified", "median min-norm (other attacks)",
                       "smaller than DeepFool (%)", "runs flagged", "verdict"], rows)
    lines += ["", "Counts are summed over the counted seeds; ρ averages only the flipped inputs. "
              "\"smaller than DeepFool\": the fraction of inputs where another minimum-norm attack found a "
              "perturbation more than 10 % smaller than DeepFool's; a flagged run's ρ may overstate its "
              "robustness.", ""]
    return lines


def _table(summary: SuiteSummary, keys: list[str], only_with: tuple[str, ...] = ()) -> tuple[list[str], list[str]]:
    rows, skipped = [], []
    for p in summary.plugins:
        if only_with and not any(k in p.stats for k in only_with):
            skipped.append(p.plugin)
            continue
        rows.append([p.plugin, p.latent, str(len(p.runs)),
                     *(fmt_stat(p.stats.get(k), metric_spec(k).fmt, len(p.runs)) for k in keys)])
    return md_table(["model", "latent", "n", *(metric_spec(k).label for k in keys)], rows), skipped


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


def claim_lines(summary: SuiteSummary) -> list[str]:
    from bench.reporting.compare import evaluate_claims
    lines = ["## The paper's shape claims on this suite", ""]
    for claim in evaluate_claims(summary.stats(), summary.correlation):
        lines.append(f"- **{claim.status}**: {claim.statement}. {claim.detail}")
    return lines + [""]


def figure_lines(figure_notes: dict[str, list[str]]) -> list[str]:
    lines = ["## Figures", ""]
    for section in ("curves", "histogram"):
        lines += figure_notes.get(section, [])
        if figure_notes.get(section):
            lines.append("")
    if not figure_notes:
        lines += ["Figures were not drawn for this report.", ""]
    return lines


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
        files = []
        for name in ("result.json", "log.jsonl", "provenance.json"):
            if (rec.path / name).exists():
                files.append(f"[{name}]({_rel(rec.path / name, out_dir)})")
        rows.append([rec.plugin, str(rec.seed), f"{rec.lr:g}", rec.status, use,
                     NA if val is None else f"{val * 100:.2f}", NA if acc is None else f"{acc * 100:.2f}",
                     " ".join(files) or NA])
    lines += md_table(["plugin", "seed", "lr", "status", "use", "val acc (%)", "test acc (%)", "files"], rows)
    return lines + [""]


def incomplete_lines(bad: list[RunRecord], out_dir: Path | None = None) -> list[str]:
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
        rows.append([_run_name(r), r.status, str(reason).replace("\n", " ")])
    return lines + md_table(["run", "status", "reason"], rows) + [""]


# --------------------------------------------------------------------------- published numbers

def render_published(out_dir: Path) -> Path:
    """``<out_dir>/published.md``: the paper's Tables I, II and IV, and its shape claims checked."""
    from bench.reporting.compare import evaluate_claims
    from bench.reporting.published import PAPER, PAPER_SEEDS, load_published, published_pearson, read_csv

    lines = ["# The paper's published numbers", "",
             f"{PAPER}: mean ± std over {PAPER_SEEDS} seeds, ResNet-18 (CIFAR-10) / ResNet-50 (CIFAR-100), "
             "800 epochs, the learning rate chosen on the *test* set. Rendered by `python -m bench published` "
             "from the package data `bench/published/*.csv`; `bench check --against published` compares a "
             "CIFAR suite's runs with these values.", ""]
    names = {"cifar10": "CIFAR-10", "cifar100": "CIFAR-100"}
    geometry = read_csv("published.csv")
    binarity = read_csv("binarity.csv")
    for dataset, title in names.items():
        rows = [r for r in geometry if r["dataset"] == dataset]
        lines += [f"## {title}", "", "### Table I: latent geometry", ""]
        lines += md_table(["model", "R", "Σ_W (mean entry)", "CV ‖z‖", "H/d (nats)"],
                          [[r["model"], f"{r['R_mean']} ± {r['R_std']}", f"{r['sigma_w_mean']} ± {r['sigma_w_std']}",
                            f"{r['cov_norm_mean']} ± {r['cov_norm_std']}",
                            f"{r['entropy_per_dim_mean']} ± {r['entropy_per_dim_std']}"] for r in rows])
        lines += ["", "### Table II: robustness and accuracy", ""]
        lines += md_table(["model", "robustness ρ (DeepFool)", "accuracy (%)"],
                          [[r["model"], f"{r['robustness_mean']} ± {r['robustness_std']}",
                            f"{r['accuracy_mean']} ± {r['accuracy_std']}"] for r in rows])
        lines += ["", "### Table IV: binarity", ""]
        lines += md_table(["model", "GMM score", "GMM score (min)", "peak distance", "peak distance (min)", "CV |z_ij|"],
                          [[r["model"], f"{r['gmm_score_mean']} ± {r['gmm_score_std']}", r["gmm_score_min"],
                            f"{r['peaks_dist_mean']} ± {r['peaks_dist_std']}", r["peaks_dist_min"], r["cov_abs"]]
                           for r in binarity if r["dataset"] == dataset])
        pearson = published_pearson(dataset)
        lines += ["", f"Pearson r(R, robustness) across all trained runs (Fig. 3): {pearson:g}.", "",
                  "### The shape claims on the published numbers", ""]
        order, values = load_published(dataset)
        stats = {m: {k: Stat(v.mean, v.std, v.n) for k, v in per.items()} for m, per in values.items()}
        corr = Correlation(pearson, math.nan, 0) if pearson is not None else None
        for claim in evaluate_claims(stats, corr):
            lines.append(f"- **{claim.status}**: {claim.statement}. {claim.detail}")
        lines.append("")
    lines += ["Σ_W is the mean entry of the within-class covariance matrix, as the paper prints it; "
              "lpc-bench's leaderboards also give its trace. Robustness is the mean DeepFool ‖r‖₂/‖x‖₂ "
              "over 1,000 test inputs."]
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "published.md"
    atomic_write_text(path, "\n".join(lines) + "\n")
    return path
