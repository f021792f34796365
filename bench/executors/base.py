"""The executor interface: "execute this one Run", for many runs, somewhere.

A run is trained by ``bench.training.trainer.train_run(suite, spec, out_root)``: idempotent, resumes
from its checkpoint, and takes the run's lock so that one process at a time writes it.
An executor only decides *where* those calls happen (this process, worker processes, Slurm
array tasks) and reports one ``RunOutcome`` per task. Statuses an executor may report:

    done      trained and evaluated now            skipped  already done (result.json existed)
    failed    recorded as failed in result.json    busy     another live process holds the run
    queued    submitted and not waited for (``--no-wait``)
"""
from __future__ import annotations

import abc
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

from bench.config.schema import Suite
from bench.runs.folder import RunSpec


@dataclass(frozen=True)
class RunTask:
    """One run to execute: picklable (spawned workers, Slurm jobs)."""

    suite: Suite
    spec: RunSpec
    out_root: Path
    quiet: bool = True

    @property
    def run_dir(self) -> Path:
        return self.spec.directory(self.out_root)

    def __call__(self, **train_kwargs):
        from bench.suites.imports import load_imports
        from bench.training.trainer import train_run
        load_imports(self.suite.runtime.imports)   # a worker process or Slurm job: the user's plugin modules
        return train_run(self.suite, self.spec, self.out_root, quiet=self.quiet, **train_kwargs)


class Executor(abc.ABC):
    """Runs tasks and yields their outcomes (in completion order)."""

    name: str = "executor"
    # True: a run reported busy is waited for and retried by the sweep (local executors);
    # False: busy is final for this sweep (Slurm: a job must not sit idle waiting).
    waits_for_busy: bool = True

    @abc.abstractmethod
    def run(self, tasks: Sequence[RunTask]) -> Iterator:
        """Execute every task; yield a ``RunOutcome`` for each, as it finishes."""
