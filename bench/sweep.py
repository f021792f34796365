"""Run every (plugin, seed, lr) of a suite that is not done yet."""
from __future__ import annotations

import sys
import time
from pathlib import Path

from bench.config import Suite
from bench.errors import BenchError
from bench.progress import progress
from bench.runs import RunSpec, plan_runs, run_status
from bench.train import RunOutcome, train_run


def select_runs(suite: Suite, plugins: list[str] | None = None, seeds: list[int] | None = None) -> list[RunSpec]:
    runs = plan_runs(suite)
    if plugins:
        unknown = sorted(set(plugins) - set(suite.plugins))
        if unknown:
            raise BenchError(f"plugin(s) {', '.join(unknown)} not in suite {suite.name} "
                             f"(its plugins: {', '.join(suite.plugins)})")
        runs = [r for r in runs if r.plugin in plugins]
    if seeds:
        runs = [r for r in runs if r.seed in seeds]
    return runs


def run_sweep(suite: Suite, runs: list[RunSpec], out_root: Path, *, quiet: bool = False,
              retry_failed: bool = False) -> list[RunOutcome]:
    """In-process executor: runs one after the other; a failing run never stops the sweep."""
    outcomes = []
    todo = []
    for spec in runs:
        status = run_status(spec.directory(out_root))
        if status == "failed" and retry_failed:
            (spec.directory(out_root) / "result.json").unlink()
            status = "pending"
        todo.append((spec, status))
    bar = progress(todo, quiet=quiet, desc=f"{suite.name} runs", unit="run")
    for spec, status in bar:
        bar.set_postfix_str(spec.key)
        t0 = time.perf_counter()
        try:
            outcome = train_run(suite, spec, out_root, quiet=quiet)
        except BenchError:
            raise
        except Exception as exc:  # record and go on: one broken run must not lose the sweep
            outcome = RunOutcome(spec, "failed", {"failure": {"reason": f"{type(exc).__name__}: {exc}"}},
                                 time.perf_counter() - t0)
            _record_crash(spec, out_root, exc)
        outcomes.append(outcome)
        if outcome.status == "failed" and not quiet:
            reason = (outcome.result or {}).get("failure", {})
            print(f"run {spec.key} failed: {reason}", file=sys.stderr)
    return outcomes


def _record_crash(spec: RunSpec, out_root: Path, exc: Exception) -> None:
    from bench.io import atomic_write_json
    from bench.runs import RESULT_SCHEMA
    atomic_write_json(spec.directory(out_root) / "result.json",
                      {"schema": RESULT_SCHEMA, **spec.as_dict(), "status": "failed",
                       "failure": {"epoch": None, "reason": f"{type(exc).__name__}: {exc}"}})
