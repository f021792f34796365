"""Datasets as uint8 tensors and the on-device loader."""
from bench.data.datasets import DATASETS
from bench.data.splits import DataSplits, stratified_split
from bench.data.loader import DeviceLoader, random_crop_flip
from bench.data import digits  # noqa: F401  (registers "digits")
from bench.data import cifar, imagefolder  # noqa: F401  (register "cifar10", "cifar100", "imagefolder")


def load_dataset(cfg) -> DataSplits:
    return DATASETS.create(cfg.name, cfg)


__all__ = ["DATASETS", "DataSplits", "DeviceLoader", "random_crop_flip", "stratified_split", "load_dataset"]
