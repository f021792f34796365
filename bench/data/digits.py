"""scikit-learn's bundled digits (1,797 8×8 grey images, 10 classes): no network needed."""
from __future__ import annotations

import numpy as np
import torch

from bench.config.schema import DatasetConfig
from bench.data.datasets import DATASETS
from bench.data.splits import DataSplits, stratified_split


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
    train_rel, val_rel = stratified_split(y[trainval], cfg.val_fraction, cfg.split_seed + 1)
    train, val = trainval[train_rel], trainval[val_rel]
    if cfg.limit_train is not None:
        train = train[: cfg.limit_train]
    if cfg.limit_test is not None:
        test = test[: cfg.limit_test]
    t = torch.from_numpy
    return DataSplits(
        name="digits", classes=[str(c) for c in range(10)],
        train_x=t(x[train]), train_y=t(y[train]), val_x=t(x[val]), val_y=t(y[val]),
        test_x=t(x[test]), test_y=t(y[test]), pixel_scale=16.0)
