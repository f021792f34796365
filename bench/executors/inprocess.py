"""The default executor: one run after the other, in this process."""
from __future__ import annotations

import sys
from typing import Iterator, Sequence

from bench.executors.base import Executor, RunTask
from bench.core.progress import progress
from bench.runs.folder import failure_text


class InProcessExecutor(Executor):
    name = "inprocess"

    def __init__(self, *, quiet: bool = False) -> None:
        self.quiet = quiet

    def run(self, tasks: Sequence[RunTask]) -> Iterator:
        if not tasks:
            return
        bar = progress(list(tasks), quiet=self.quiet, desc=f"{tasks[0].suite.name} runs", unit="run")
        for task in bar:
            bar.set_postfix_str(task.spec.key)
            outcome = task()
            if outcome.status == "failed" and not self.quiet:
                print(f"run {task.spec.key} failed: {failure_text(outcome.result)}", file=sys.stderr)
            yield outcome
