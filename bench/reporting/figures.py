"""Figures beside a leaderboard (matplotlib, Agg backend), drawn from a suite summary alone.

Everything comes from the run folders (result.json, log.jsonl): no dataset is loaded and
no model is rebuilt; what a figure needs beyond the evaluators' numbers is saved at
evaluation time (``bench.evaluation.figure_data``).

* ``r-vs-rho.png``: class separation R against DeepFool ρ on log axes, one colour per
  plugin, every done run, with a least-squares line in log–log space and Pearson r
  (the paper's Fig. 3);
* ``curves-<plugin>.png``: per plugin, accuracy, loss terms and schedules (γ, margin,
  scale, lr) over epochs from ``log.jsonl``, one line per counted seed;
* ``z-hist.png``: per latent dimension, the histogram of the training latents of LPC and
  of LinPen (the paper's Fig. 2), from ``figure_data.latent_histograms``;
* ``norm-cdf.png``: per plugin, the empirical CDF over the attacked inputs of the minimal
  ‖r‖₂ DeepFool found and of the best-known one (``evaluations.best_known.per_input``):
  where the curves part, DeepFool overstates robustness;
* ``layers.png``: collapse and rank against depth, one line per plugin
  (``bench.reporting.layers``; drawn only when the runs have ``layerwise`` results).

``draw_all`` returns, per report section, the Markdown lines to embed (an image link, or a
note saying why a figure was skipped).
"""
from __future__ import annotations

import math
import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from bench.reporting.format import dig  # noqa: E402

DPI = 110
SCHEDULE_KEYS = (("gamma", "γ"), ("margin", "margin m"), ("scale", "scale s"), ("lr", "learning rate"))


def figure_dir(out_dir: Path, suite: str) -> Path:
    return Path(out_dir) / f"{suite}-figures"


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


def _save(fig, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)


def _colours(plugins: list[str]) -> dict[str, tuple]:
    """A fixed colour per plugin, by its position in the suite (tab10, or tab20 beyond 10)."""
    cmap = plt.get_cmap("tab10" if len(plugins) <= 10 else "tab20")
    return {p: cmap(i % cmap.N) for i, p in enumerate(plugins)}


def draw_all(summary, out_dir: Path) -> dict[str, list[str]]:
    folder = figure_dir(out_dir, summary.suite)
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("*.png"):
        old.unlink()
    rel = folder.name
    notes: dict[str, list[str]] = {}
    for section, fn in (("scatter", scatter_r_rho), ("curves", training_curves), ("histogram", z_histograms),
                        ("cdf", norm_cdfs), ("layers", layer_figure)):
        try:
            notes[section] = fn(summary, folder, rel)
        except Exception as exc:  # a figure must never cost the leaderboard
            notes[section] = [f"*{section} figure failed: {type(exc).__name__}: {exc}*"]
    return notes


# --------------------------------------------------------------------------- Fig. 3

def r_rho_points(summary) -> list[tuple]:
    """(run, R, ρ) of every done run that has both, positive (log axes)."""
    points = []
    for rec in summary.records:
        if rec.status != "done":
            continue
        r, rho = summary.run_value(rec, "R"), summary.run_value(rec, "rho")
        if r is not None and rho is not None and r > 0 and rho > 0:
            points.append((rec, r, rho))
    return points


def scatter_r_rho(summary, folder: Path, rel: str) -> list[str]:
    import numpy as np
    from bench.reporting.summary import plugin_order

    points = r_rho_points(summary)
    if len(points) < 2:
        return ["R vs ρ figure skipped: fewer than 2 done runs have both R (evaluator `geometry`) and "
                "ρ (evaluator `deepfool`)."]
    plugins = plugin_order(summary.config, {rec.plugin for rec, _, _ in points})
    colours = _colours(plugin_order(summary.config, {r.plugin for r in summary.records}))
    markers = "osD^vP*Xh<>"
    fig, ax = plt.subplots(figsize=(7.5, 5.2))
    for i, plugin in enumerate(plugins):
        xs = [r for rec, r, _ in points if rec.plugin == plugin]
        ys = [rho for rec, _, rho in points if rec.plugin == plugin]
        ax.scatter(xs, ys, s=46, color=colours[plugin], marker=markers[i % len(markers)],
                   edgecolor="black", linewidth=0.4, label=f"{plugin} ({len(xs)})", zorder=3)
    lx = np.log10([r for _, r, _ in points])
    ly = np.log10([rho for _, _, rho in points])
    title = f"{summary.suite}: class separation vs DeepFool robustness ({len(points)} runs)"
    if np.ptp(lx) > 0:
        slope, intercept = np.polyfit(lx, ly, 1)
        grid = np.linspace(lx.min(), lx.max(), 50)
        c = summary.correlations().get("rho")
        fit = f"fit: ρ ∝ R^{slope:.2f}"
        if c is not None and c.r_log is not None:
            fit += f"\nPearson r(R, ρ) = {c.r:.3f}\nr(log R, log ρ) = {c.r_log:.3f}"
            title += f"\nPearson r = {c.r:.3f} (paper: 0.97 CIFAR-10, 0.985 CIFAR-100)"
        ax.plot(10 ** grid, 10 ** (intercept + slope * grid), color="0.3", linestyle="--", linewidth=1.2,
                label=fit, zorder=2)
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter
    ax.set_xscale("log")
    ax.set_yscale("log")
    for axis, values in ((ax.xaxis, lx), (ax.yaxis, ly)):
        narrow = np.ptp(values) < 1.0          # less than a decade: label more ticks
        axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 3.0, 5.0, 7.0) if narrow else (1.0, 2.0, 5.0)))
        axis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:g}"))
        axis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("class separation ratio R (train latents)")
    ax.set_ylabel("DeepFool ρ = mean ‖r‖₂ / ‖x‖₂")
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="both", alpha=0.25)
    ax.legend(loc="center left", bbox_to_anchor=(1.02, 0.5), fontsize=8, title="plugin (runs)", title_fontsize=8)
    _save(fig, folder / "r-vs-rho.png")
    return [f"![R vs ρ, {summary.suite}]({rel}/r-vs-rho.png)"]


# --------------------------------------------------------------------------- training curves

def _series(rows: list[dict], key: str) -> tuple[list[int], list[float]]:
    xs, ys = [], []
    for row in rows:
        value = row.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            xs.append(row.get("epoch", len(xs)))
            ys.append(float(value))
    return xs, ys


def training_curves(summary, folder: Path, rel: str) -> list[str]:
    links, skipped = [], []
    for p in summary.plugins:
        logs = [(rec.seed, rec.lr, rec.log()) for rec in p.runs]
        logs = [entry for entry in logs if entry[2]]
        if not logs:
            skipped.append(p.plugin)
            continue
        name = f"curves-{_slug(p.plugin)}.png"
        _curves_figure(summary.suite, p.plugin, logs, folder / name)
        links.append(f"[{p.plugin}]({rel}/{name})")
    lines = []
    if links:
        lines.append("Training curves (accuracy, loss terms, schedules over epochs; one line per counted seed): "
                     + " · ".join(links))
    if skipped:
        lines.append(f"No training log for: {', '.join(skipped)}.")
    return lines or ["No training curves: no counted run has a log.jsonl."]


def _curves_figure(suite: str, plugin: str, logs, path: Path) -> None:
    styles = ["-", "--", ":", "-."]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    ax_acc, ax_loss, ax_sched = axes
    loss_keys = sorted({k for _, _, rows in logs for row in rows for k in row if k.startswith("loss_")})
    loss_keys.sort(key=lambda k: (k == "loss_total", k))
    if len(loss_keys) == 2 and "loss_total" in loss_keys:   # a single term: the total repeats it
        loss_keys.remove("loss_total")
    term_colours = {k: plt.get_cmap("tab10")(i % 10) for i, k in enumerate(loss_keys)}
    sched_colours = {k: plt.get_cmap("Dark2")(i) for i, (k, _) in enumerate(SCHEDULE_KEYS)}
    any_positive_loss = True
    for j, (seed, lr, rows) in enumerate(logs):
        ls = styles[j % len(styles)]
        tag = f" (seed {seed})" if len(logs) > 1 else ""
        for key, label, colour in (("train_acc", "train", "tab:blue"), ("val_acc", "validation", "tab:orange")):
            xs, ys = _series(rows, key)
            if xs:
                ax_acc.plot(xs, [y * 100 for y in ys], ls, color=colour, marker="o" if key == "val_acc" else None,
                            markersize=3, label=label + tag if j == 0 or len(logs) > 1 else None)
        for key in loss_keys:
            xs, ys = _series(rows, key)
            if xs:
                any_positive_loss &= min(ys) > 0
                ax_loss.plot(xs, ys, ls, color=term_colours[key], linewidth=2.0 if key == "loss_total" else 1.2,
                             label=key[5:] + tag if j == 0 or len(logs) > 1 else None)
        for key, label in SCHEDULE_KEYS:
            xs, ys = _series(rows, key)
            if xs and min(ys) > 0:
                ax_sched.plot(xs, ys, ls, color=sched_colours[key], label=label + tag if j == 0 or len(logs) > 1 else None)
    ax_acc.set_title("accuracy")
    ax_acc.set_xlabel("epoch")
    ax_acc.set_ylabel("accuracy (%)")
    ax_loss.set_title("training loss terms (epoch mean)")
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("loss")
    if any_positive_loss and loss_keys:
        ax_loss.set_yscale("log")
    ax_sched.set_title("schedules")
    ax_sched.set_xlabel("epoch")
    ax_sched.set_ylabel("value (log scale)")
    ax_sched.set_yscale("log")
    for ax in axes:
        ax.grid(True, alpha=0.3)
        handles, labels = ax.get_legend_handles_labels()
        if handles:
            ax.legend(fontsize=7, ncol=2 if len(handles) > 6 else 1)
    seeds = ", ".join(str(s) for s, _, _ in logs)
    lrs = ", ".join(sorted({f"{lr:g}" for _, lr, _ in logs}))
    fig.suptitle(f"{suite}: training curves of {plugin} (seeds {seeds}; lr {lrs})", fontsize=11)
    fig.tight_layout()
    _save(fig, path)


# --------------------------------------------------------------------------- Fig. 2

def _first_run(summary, plugin: str):
    p = summary.plugin(plugin)
    return p.runs[0] if p is not None and p.runs else None


def z_histograms(summary, folder: Path, rel: str) -> list[str]:
    runs = {p: _first_run(summary, p) for p in ("LPC", "LinPen")}
    missing = [p for p, r in runs.items() if r is None]
    if missing:
        return [f"z histogram (paper Fig. 2) skipped: no counted {' or '.join(missing)} run."]
    data = {p: dig(r.result, ("figure_data", "latent_histograms")) for p, r in runs.items()}
    lacking = [p for p, d in data.items() if not (isinstance(d, dict) and d.get("hist"))]
    if lacking:
        return [f"z histogram (paper Fig. 2) skipped: the counted {' and '.join(lacking)} run"
                f"{'s have' if len(lacking) > 1 else ' has'} no `figure_data.latent_histograms` in result.json "
                f"(written at evaluation time since this version; `bench metrics --runs DIR` adds it to a run "
                f"that still has its checkpoint)."]
    _hist_figure(summary.suite, data, {p: r.seed for p, r in runs.items()}, folder / "z-hist.png")
    return [f"Histograms of the latent values per dimension, LPC vs LinPen (paper Fig. 2; training split, seed "
            f"{runs['LPC'].seed}): [z-hist.png]({rel}/z-hist.png)", "",
            f"![z histograms, {summary.suite}]({rel}/z-hist.png)"]


def _hist_figure(suite: str, data: dict, seeds: dict, path: Path) -> None:
    dims = {p: len(d["hist"]) for p, d in data.items()}
    cols = 4
    rows = max(math.ceil(d / cols) for d in dims.values())
    fig = plt.figure(figsize=(2.1 * cols * 2 + 0.6, 1.75 * rows + 1.0))
    outer = fig.add_gridspec(1, 2, wspace=0.12, top=1 - 0.75 / (1.75 * rows + 1.0))
    colours = {"LPC": "tab:red", "LinPen": "tab:blue"}
    for g, (plugin, entry) in enumerate(data.items()):
        inner = outer[g].subgridspec(rows, cols, hspace=0.65, wspace=0.35)
        for i, hist in enumerate(entry["hist"]):
            ax = fig.add_subplot(inner[i // cols, i % cols])
            if hist["counts"]:
                ax.stairs(hist["counts"], hist["edges"], fill=True, color=colours.get(plugin, "0.4"), alpha=0.85)
            ax.set_title(f"{plugin}  z{i + 1}", fontsize=8)
            ax.tick_params(labelsize=6)
            ax.set_yticks([])
            if i // cols == rows - 1 or i + cols >= dims[plugin]:
                ax.set_xlabel("value", fontsize=7)
        total = entry.get("dims", dims[plugin])
        shown = f"first {dims[plugin]} of {total}" if total > dims[plugin] else f"all {total}"
        fig.text(0.31 + 0.41 * g, 1 - 0.3 / (1.75 * rows + 1.0), f"{plugin} (seed {seeds[plugin]}): {shown} dimensions",
                 ha="center", va="top", fontsize=10, color=colours.get(plugin, "black"))
    fig.suptitle(f"{suite}: histograms of training-set latent values per dimension, LPC vs LinPen "
                 f"(y: count)", fontsize=11, y=1.0)
    _save(fig, path)


# --------------------------------------------------------------------------- DeepFool vs best-known

def _norms(values) -> list[float]:
    """Per-input norms; an input the attack did not flip (null) counts as ∞ (the CDF stays below 1)."""
    out = []
    for v in values or ():
        ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
        out.append(float(v) if ok else math.inf)
    return out


def norm_cdfs(summary, folder: Path, rel: str) -> list[str]:
    """Per plugin (one panel), the CDF of the per-input minimal ‖r‖₂ of DeepFool and of the
    best-known attack, pooled over the counted seeds."""
    from bench.reporting.summary import BEST_KNOWN_PER_INPUT
    panels = []
    for p in summary.plugins:
        deepfool, best = [], []
        for rec in p.runs:
            per_input = dig(rec.result, BEST_KNOWN_PER_INPUT)
            if isinstance(per_input, dict):
                deepfool += _norms(per_input.get("norm_deepfool"))
                best += _norms(per_input.get("norm_best"))
        if deepfool or best:
            panels.append((p.plugin, len(p.runs), sorted(deepfool), sorted(best)))
    if not panels:
        return ["Per-input ‖r‖ CDF (DeepFool vs best-known) skipped: no counted run has "
                "`evaluations.best_known.per_input` (evaluator `best_known`)."]
    cols = min(4, len(panels))
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 2.9 * rows), squeeze=False, sharex=True, sharey=True)
    for ax, (plugin, n_runs, deepfool, best) in zip(axes.flat, panels):
        for values, label, colour, style in ((deepfool, "DeepFool", "tab:orange", "--"),
                                             (best, "best-known", "tab:blue", "-")):
            finite = [v for v in values if math.isfinite(v)]
            if finite:
                ys = [(i + 1) / len(values) for i in range(len(finite))]
                ax.step(finite, ys, where="post", color=colour, linestyle=style,
                        label=f"{label} ({len(finite)}/{len(values)} flipped)")
        ax.set_title(f"{plugin} ({n_runs} run{'s' if n_runs != 1 else ''})", fontsize=9)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
    for ax in axes.flat[len(panels):]:
        ax.set_visible(False)
    for ax in axes[-1]:
        ax.set_xlabel("minimal ‖r‖₂ (pixels in [0, 1])", fontsize=8)
    for ax in axes[:, 0]:
        ax.set_ylabel("fraction of inputs", fontsize=8)
    fig.suptitle(f"{summary.suite}: per-input minimal perturbation, DeepFool vs best-known", fontsize=11)
    fig.tight_layout()
    _save(fig, folder / "norm-cdf.png")
    return [f"Per-input minimal ‖r‖₂, DeepFool against the best-known attack (CDF over the attacked inputs of "
            f"the counted seeds; a DeepFool curve right of the best-known one is robustness DeepFool "
            f"overstates): [norm-cdf.png]({rel}/norm-cdf.png)", "",
            f"![per-input ‖r‖ CDF, {summary.suite}]({rel}/norm-cdf.png)"]


# --------------------------------------------------------------------------- layer by layer

def layer_figure(summary, folder: Path, rel: str) -> list[str]:
    from bench.reporting.layers import CONDITIONS, CURVES, axis_labels, layer_values
    from bench.reporting.summary import plugin_order

    if not layer_values(summary, "train", "effective_rank"):
        return []
    colours = _colours(plugin_order(summary.config, {r.plugin for r in summary.records}))
    labels = axis_labels(summary)
    fig, axes = plt.subplots(len(CONDITIONS), len(CURVES), figsize=(4.0 * len(CURVES), 3.0 * len(CONDITIONS)),
                             squeeze=False, sharex=True)
    for row, (cond, cond_label) in enumerate(CONDITIONS):
        for col, (metric, metric_label, log) in enumerate(CURVES):
            ax = axes[row][col]
            for plugin, values in layer_values(summary, cond, metric).items():
                xs = list(values)
                ys = [values[x] for x in xs]
                if log and all(y > 0 for y in ys):
                    ax.set_yscale("log")
                ax.plot(xs, ys, marker="o", markersize=3, linewidth=1.2, color=colours.get(plugin), label=plugin)
            ax.set_title(f"{metric_label}\n{cond_label}", fontsize=8)
            ax.grid(True, alpha=0.3)
            ax.tick_params(labelsize=7)
            if row == len(CONDITIONS) - 1:
                ax.set_xticks(sorted(labels))
                ax.set_xticklabels([labels[d] for d in sorted(labels)], rotation=30, fontsize=7)
    handles, names = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, names, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8, title="plugin")
    fig.suptitle(f"{summary.suite}: collapse and rank layer by layer (mean over the counted seeds)", fontsize=11)
    fig.tight_layout()
    _save(fig, folder / "layers.png")
    return [f"Collapse and rank against depth, one line per plugin (hidden layers, then z where the plugin has "
            f"one, then the logits): [layers.png]({rel}/layers.png)", "",
            f"![layers, {summary.suite}]({rel}/layers.png)"]
