"""scikit-learn's bundled digits (1,797 8×8 grey images, 10 classes): no network needed.

The split is fixed and stratified: 20 % of each class is the test set (359 images), then
``val_fraction`` of each class of the rest is held out for validation; with the digits
suites' ``val_fraction: 0.2`` that is 1,151 train / 287 validation / 359 test (per-class
rounding, so not exactly 64 / 16 / 20 %). ``limit_train`` / ``limit_test`` follow the
rule of every dataset (``bench.data.splits``): a stratified N of the training set before
the validation hold-out, a stratified N of the test set.
"""
from __future__ import annotations

import numpy as np

from bench.config.schema import DatasetConfig
from bench.data.datasets import DATASETS
from bench.data.splits import DataSplits, splits_from_arrays, stratified_split


@DATASETS.register("digits")
def load_digits_splits(cfg: DatasetConfig) -> DataSplits:
    """Fixed stratified split: 20 % test, then ``val_fraction`` of the rest for validation.

    Pixels are integers 0..16; stored as uint8 with ``pixel_scale = 16``.
    """
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = bunch.images.astype(np.uint8)[:, None, :, :]  # (N, 1, 8, 8), values 0..16
    y = bunch.target.astype(np.int64)
    trainval, test = stratified_split(y, 0.2, cfg.split_seed)
    # the validation seed split_seed + 1 keeps the split every committed digits result used
    return splits_from_arrays("digits", [str(c) for c in range(10)], x[trainval], y[trainval], x[test], y[test],
                              cfg, pixel_scale=16.0, val_seed=cfg.split_seed + 1)
