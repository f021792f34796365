"""``leaderboards/published.md``: the paper's Tables I, II and IV, and its shape claims
evaluated on its own numbers (``bench published``)."""
from __future__ import annotations

from pathlib import Path

from bench.core.io import atomic_write_text
from bench.reporting.claims import evaluate_claims
from bench.reporting.format import md_table
from bench.reporting.published import PAPER, PAPER_SEEDS, load_published, published_pearson, read_csv
from bench.reporting.stats import Stat
from bench.reporting.summary import Correlation


def render_published(out_dir: Path) -> Path:
    """``<out_dir>/published.md``: the paper's Tables I, II and IV, and its shape claims checked."""
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
        _, values = load_published(dataset)
        stats = {m: {k: Stat(v.mean, v.std, v.n) for k, v in per.items()} for m, per in values.items()}
        correlations = {"rho": Correlation(pearson, 0)} if pearson is not None else {}
        for claim in evaluate_claims(stats, correlations):
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
