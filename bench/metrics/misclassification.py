"""Misclassification detection: how well a confidence score separates a model's correct
predictions from its wrong ones.

Hendrycks & Gimpel (2017, "A baseline for detecting misclassified and out-of-distribution
examples", ICLR) score each input by the maximum softmax probability; the LPC follow-up
(ICLR 2025 submission, "Latent Point Collapse Induces an Information Bottleneck…") claims
that LPC improves this detection. With c_i the confidence of input i and e_i = 1 when the
prediction is wrong:

* **AUROC** = P(c_correct > c_wrong) + ½·P(c_correct = c_wrong) over (correct, wrong) pairs
  (the Mann–Whitney statistic, with ties counted half; 1 = perfect, 0.5 = chance). Computed
  from mid-ranks in O(N log N).
* **AURC** (Geifman, Uziel & El-Yaniv 2019): sort the inputs by confidence, most confident
  first; keeping the top k gives coverage k/N and selective risk r_k = (errors among the top
  k)/k; AURC = (1/N) Σ_{k=1..N} r_k (lower is better; the model's error rate at full
  coverage is its last term). Inputs of equal confidence are accepted or rejected together:
  a group of tied inputs contributes its mean risk at every k inside it (so the value does
  not depend on the order of ties).

The scores (higher = more confident):

* ``msp``: max_c softmax(f)_c;
* ``neg_entropy``: Σ_c p_c log p_c (the negative predictive entropy, nats);
* ``neg_centre_distance``: −min_c ‖z − μ_c‖₂ with μ_c the training-split class means of the
  latent (true labels).

Fewer than ``MIN_ERRORS`` wrong (or correct) inputs: AUROC/AURC are not reported (None with
the reason and the counts): five errors make a detection AUROC a coin toss of its own.
"""
from __future__ import annotations

import numpy as np
from scipy.stats import rankdata

from bench.core.errors import BenchError

MIN_ERRORS = 5
SCORES = ("msp", "neg_entropy", "neg_centre_distance")


def auroc(scores: np.ndarray, correct: np.ndarray) -> float:
    """AUROC of ``scores`` for correct (positive) vs wrong (negative), ties counted half."""
    scores = np.asarray(scores, dtype=np.float64)
    correct = np.asarray(correct, dtype=bool)
    n_pos, n_neg = int(correct.sum()), int((~correct).sum())
    if n_pos == 0 or n_neg == 0:
        raise BenchError("AUROC needs both correct and wrong predictions")
    ranks = rankdata(scores)                       # mid-ranks: ties share their mean rank
    u = ranks[correct].sum() - n_pos * (n_pos + 1) / 2
    return float(u / (n_pos * n_neg))


def aurc(scores: np.ndarray, correct: np.ndarray) -> float:
    """Area under the risk–coverage curve (see the module docstring), ties accepted together."""
    scores = np.asarray(scores, dtype=np.float64)
    errors = ~np.asarray(correct, dtype=bool)
    n = scores.shape[0]
    if n == 0:
        raise BenchError("AURC needs at least one input")
    order = np.argsort(-scores, kind="stable")
    s, e = scores[order], errors[order].astype(np.float64)
    # group boundaries of equal confidence; within a group the expected error count after
    # accepting j of its m members (in random order) is j·(group errors)/m
    starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])
    ends = np.r_[starts[1:], n]
    before = np.r_[0.0, np.cumsum(e)][starts]          # errors accepted before each group
    total = 0.0
    for start, end, prior in zip(starts, ends, before):
        m = end - start
        rate = e[start:end].sum() / m
        k = np.arange(start + 1, end + 1, dtype=np.float64)
        total += float(np.sum((prior + (k - start) * rate) / k))
    return total / n


def softmax_scores(logits: np.ndarray) -> dict[str, np.ndarray]:
    """MSP and negative predictive entropy from (N, K) logits (float64, max-shifted)."""
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=1, keepdims=True)
    log_p = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    p = np.exp(log_p)
    return {"msp": p.max(axis=1), "neg_entropy": np.sum(p * log_p, axis=1)}


def detection(scores: dict[str, np.ndarray], correct: np.ndarray, *, min_errors: int = MIN_ERRORS) -> dict:
    """``{score: {auroc, aurc}}`` plus the counts; None with a reason below ``min_errors``."""
    correct = np.asarray(correct, dtype=bool)
    n_wrong, n_right = int((~correct).sum()), int(correct.sum())
    out: dict = {"n": int(correct.size), "n_errors": n_wrong, "error_rate": n_wrong / max(1, correct.size),
                 "min_errors": min_errors}
    reason = None
    if n_wrong < min_errors:
        reason = f"only {n_wrong} misclassified input(s) (< {min_errors}): detection is not measured"
    elif n_right < min_errors:
        reason = f"only {n_right} correct input(s) (< {min_errors}): detection is not measured"
    for name, values in scores.items():
        values = np.asarray(values, dtype=np.float64)
        if reason is not None:
            out[name] = {"auroc": None, "auroc_reason": reason, "aurc": None, "aurc_reason": reason}
        elif not np.isfinite(values).all():
            why = f"{int((~np.isfinite(values)).sum())} non-finite score(s)"
            out[name] = {"auroc": None, "auroc_reason": why, "aurc": None, "aurc_reason": why}
        else:
            out[name] = {"auroc": auroc(values, correct), "aurc": aurc(values, correct)}
    return out
