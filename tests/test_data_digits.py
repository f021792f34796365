"""The digits split: fixed (the committed leaderboards and the digits-ci baseline use it),
and ``--limit-train`` / ``--limit-test`` stratified like every other dataset."""
from __future__ import annotations

import hashlib

import numpy as np
import pytest
from sklearn.datasets import load_digits

from bench.config.schema import DatasetConfig
from bench.core.errors import BenchError
from bench.data import load_dataset
from bench.suites import load_suite


def _digest(data) -> str:
    h = hashlib.sha256()
    for split in ("train", "val", "test"):
        x, y = data.split(split)
        h.update(x.numpy().tobytes())
        h.update(y.numpy().tobytes())
    return h.hexdigest()[:16]


def _rows(x) -> set[bytes]:
    return {bytes(r) for r in x.numpy().reshape(len(x), -1)}


def test_the_suite_split_is_fixed():
    """1,151 / 287 / 359 (per-class rounding of 20 % and 20 %), byte for byte as committed."""
    cfg = load_suite("digits").dataset
    data = load_dataset(cfg)
    assert (len(data.train_y), len(data.val_y), len(data.test_y)) == (1151, 287, 359)
    assert _digest(data) == "b28b8ef2ec768cf3"        # the split before issue #13, unchanged
    # every image used once; each class split by rounding 20 % of its count
    assert len(data.train_y) + len(data.val_y) + len(data.test_y) == 1797
    counts = np.bincount(load_digits().target)
    test_counts = np.bincount(data.test_y.numpy())
    np.testing.assert_array_equal(test_counts, np.round(0.2 * counts).astype(int))
    rest = counts - test_counts
    np.testing.assert_array_equal(np.bincount(data.val_y.numpy()), np.round(0.2 * rest).astype(int))
    assert load_suite("digits-ci").dataset == cfg


def test_limit_train_is_stratified_before_the_validation_hold_out():
    full = load_dataset(DatasetConfig(name="digits", val_fraction=0.2))
    small = load_dataset(DatasetConfig(name="digits", val_fraction=0.2, limit_train=30, limit_test=50))
    np.testing.assert_array_equal(np.bincount(small.train_y.numpy()), [2] * 10)   # was [5,4,2,2,2,2,2,2,5,4]
    np.testing.assert_array_equal(np.bincount(small.val_y.numpy()), [1] * 10)
    np.testing.assert_array_equal(np.bincount(small.test_y.numpy()), [5] * 10)
    pool = _rows(full.train_x) | _rows(full.val_x)
    assert _rows(small.train_x) | _rows(small.val_x) <= pool and _rows(small.test_x) <= _rows(full.test_x)
    mid = load_dataset(DatasetConfig(name="digits", val_fraction=0.2, limit_train=256))
    assert len(mid.train_y) + len(mid.val_y) == 256
    share = np.bincount(np.r_[mid.train_y.numpy(), mid.val_y.numpy()]) / 256
    whole = np.bincount(np.r_[full.train_y.numpy(), full.val_y.numpy()]) / (len(full.train_y) + len(full.val_y))
    assert np.abs(share - whole).max() < 1 / 256 + 1e-12                          # largest-remainder quotas
    with pytest.raises(BenchError, match="too small for 10 classes"):
        load_dataset(DatasetConfig(name="digits", limit_train=19))
