"""Latent-geometry metrics: R, Σ_W, Σ_B, neural collapse, entropy, binarity, Lipschitz,
and the separation-vs-robustness analysis across the runs of a suite.

Importing this package registers the ``geometry``, ``entropy``, ``binarity`` and
``lipschitz`` evaluators (``bench list metrics``). The functions below work on plain
arrays too, for use outside the harness.
"""
from bench.metrics.binarity import binarity
from bench.metrics.correlation import analyse_suite, correlate, write_analysis
from bench.metrics.entropy import kl_entropy, knn_radius
from bench.metrics.geometry import (between_class_covariance, class_means, geometry, nc1, nc2, nc3, nc4,
                                    separation_ratios, within_class_covariance)
from bench.metrics.lipschitz import margin_gradient_norms
from bench.metrics import metric_evaluators  # noqa: F401  (registers the evaluators)

__all__ = ["analyse_suite", "between_class_covariance", "binarity", "class_means", "correlate", "geometry",
           "kl_entropy", "knn_radius", "margin_gradient_norms", "nc1", "nc2", "nc3", "nc4",
           "separation_ratios", "within_class_covariance", "write_analysis"]
