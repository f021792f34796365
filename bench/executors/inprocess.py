"""The default executor: one run after the other, in this process."""
from __future__ import annotations

import math
from typing import Iterator, Sequence

from bench.executors.base import Executor, RunTask
from bench.core.progress import progress, say
from bench.runs.folder import failure_text


def _number(value) -> float | None:
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


def outcome_line(outcome, finished: int, total: int) -> str:
    """One line per finished run, for a person watching a sweep (or its log): which run,
    how it ended, its headline numbers (test accuracy, DeepFool ρ, and the best-known ρ
    of the minimum-norm attacks where the suite measures it) and its wall time."""
    head = f"[{finished}/{total}] {outcome.spec.key}"
    result = outcome.result or {}
    wall = _number(result.get("wall_s")) or _number(outcome.wall_s)
    took = f" in {wall:.1f} s" if wall else ""
    if outcome.status == "failed":
        return f"{head}: FAILED{took}: {failure_text(outcome.result)}"
    if outcome.status == "busy":
        holder = result.get("holder") or {}
        where = ", ".join(f"{k} {holder[k]}" for k in ("host", "pid") if k in holder)
        return f"{head}: being trained by another process ({where or 'unknown'}); waiting for it"
    if outcome.status != "done":
        return f"{head}: {'already done' if outcome.status == 'skipped' else outcome.status}"
    numbers = []
    acc = _number(result.get("test_acc"))
    if acc is not None:
        numbers.append(f"test acc {100 * acc:.2f} %")
    evaluations = result.get("evaluations") or {}
    rho = _number((evaluations.get("deepfool") or {}).get("rho_mean"))
    if rho is not None:
        numbers.append(f"DeepFool ρ {rho:#.3g}")
    best = _number((evaluations.get("best_known") or {}).get("rho_best_mean"))
    if best is not None:
        numbers.append(f"best-known ρ {best:#.3g}")
    return f"{head}: done{took}" + (f"; {', '.join(numbers)}" if numbers else "")


class InProcessExecutor(Executor):
    name = "inprocess"

    def __init__(self, *, quiet: bool = False) -> None:
        self.quiet = quiet

    def run(self, tasks: Sequence[RunTask]) -> Iterator:
        if not tasks:
            return
        bar = progress(list(tasks), quiet=self.quiet, desc=f"{tasks[0].suite.name} runs", unit="run")
        for finished, task in enumerate(bar, 1):
            bar.set_postfix_str(task.spec.key)
            outcome = task()
            if not self.quiet:
                say(outcome_line(outcome, finished, len(tasks)))
            yield outcome
