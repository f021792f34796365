"""The paper's published numbers (Sbailò & Ghiringhelli, arXiv 2310.08224v5), as package data.

``published.csv`` holds Tables I and II (geometry, robustness, accuracy), ``binarity.csv``
Table IV, ``correlation.csv`` the Pearson correlation of R with robustness quoted with
Fig. 3. Every value is mean ± std over the paper's 5 seeds; the paper chose each model's
learning rate on the *test* set. The loaders return the numbers in lpc-bench's units and
under lpc-bench's metric keys (accuracy as a fraction, Σ_W as the mean matrix entry).
"""
from __future__ import annotations

import csv
from dataclasses import dataclass
from importlib import resources

PAPER = "Sbailò & Ghiringhelli, arXiv 2310.08224v5 (Feb 2025)"
PAPER_SEEDS = 5
DATASETS = ("cifar10", "cifar100")

# published column(s) -> (lpc-bench metric key, std column or None, factor to our units)
TABLE_COLUMNS = {
    "published.csv": [
        ("R_mean", "R", "R_std", 1.0),
        ("sigma_w_mean", "sigma_w_mean_entry", "sigma_w_std", 1.0),
        ("cov_norm_mean", "cv_norm", "cov_norm_std", 1.0),
        ("entropy_per_dim_mean", "entropy_per_dim", "entropy_per_dim_std", 1.0),
        ("robustness_mean", "rho", "robustness_std", 1.0),
        ("accuracy_mean", "test_acc", "accuracy_std", 0.01),   # the paper: percent
    ],
    "binarity.csv": [
        ("gmm_score_mean", "gmm_score_mean", "gmm_score_std", 1.0),
        ("gmm_score_min", "gmm_score_min", None, 1.0),
        ("peaks_dist_mean", "peaks_dist_mean", "peaks_dist_std", 1.0),
        ("peaks_dist_min", "peaks_dist_min", None, 1.0),
        ("cov_abs", "cv_abs", None, 1.0),
    ],
}


@dataclass(frozen=True)
class PublishedValue:
    mean: float
    std: float | None     # None: the paper gives no spread for this value
    n: int
    text: str             # as printed in the paper's CSV, e.g. "298.61 ± 58.09"


def read_csv(name: str) -> list[dict[str, str]]:
    """Rows of one of the package's CSV files, as strings."""
    path = resources.files("bench.reporting.published") / name
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def load_published(dataset: str) -> tuple[list[str], dict[str, dict[str, PublishedValue]]]:
    """(models in the paper's order, model -> metric key -> value) for cifar10 or cifar100."""
    if dataset not in DATASETS:
        raise KeyError(dataset)
    order: list[str] = []
    values: dict[str, dict[str, PublishedValue]] = {}
    for filename, columns in TABLE_COLUMNS.items():
        for row in read_csv(filename):
            if row["dataset"] != dataset:
                continue
            model = row["model"]
            if model not in values:
                order.append(model)
                values[model] = {}
            for column, key, std_column, factor in columns:
                mean = float(row[column])
                std = float(row[std_column]) if std_column else None
                text = row[column] + (f" ± {row[std_column]}" if std_column else "")
                values[model][key] = PublishedValue(mean * factor, None if std is None else std * factor,
                                                    PAPER_SEEDS, text)
    return order, values


def published_pearson(dataset: str) -> float | None:
    """The paper's Pearson correlation of R with DeepFool robustness across all runs (Fig. 3)."""
    for row in read_csv("correlation.csv"):
        if row["dataset"] == dataset:
            return float(row["pearson_r_rho"])
    return None
