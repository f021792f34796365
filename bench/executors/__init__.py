"""Where a sweep's runs execute: in this process (default), a local process pool, or Slurm.

All three execute the same unit, ``bench.training.trainer.train_run`` for one run (see
``bench.executors.base``); ``bench.executors.sweep.run_sweep`` decides which runs to give them.
This package's top level stays light (the CLI imports it to build its parser).
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from bench.executors.options import EXECUTOR_KINDS, add_executor_arguments, executor_from_args

if TYPE_CHECKING:
    from bench.config.schema import ExecutorConfig
    from bench.executors.base import Executor


def make_executor(config: "ExecutorConfig", out_root: Path, *, quiet: bool = False, wait: bool = True) -> "Executor":
    """The executor a suite's ``executor`` section (with CLI flags applied) asks for."""
    if config.kind == "slurm":
        from bench.executors.slurm import SlurmExecutor
        return SlurmExecutor(config.slurm, out_root, wait=wait, quiet=quiet)
    if config.kind == "pool" or config.workers > 1:
        from bench.executors.pool import PoolExecutor
        return PoolExecutor(config.workers, quiet=quiet)
    from bench.executors.inprocess import InProcessExecutor
    return InProcessExecutor(quiet=quiet)


__all__ = ["EXECUTOR_KINDS", "add_executor_arguments", "executor_from_args", "make_executor"]
