"""Dataset loaders by name: ``DATASETS.create(name, cfg) -> DataSplits``."""
from registry import Registry

DATASETS = Registry("dataset", entry_point_group="lpc_bench.datasets")
