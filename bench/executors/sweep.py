"""Run every (plugin, seed, lr) of a suite that is not done yet, on an executor.

The sweep decides *which* runs to execute; the executor (``bench.executors``) decides
*where*. Only runs without a result are handed over (with ``retry_failed``, failed ones
too). Sweeps are safe to run several at once on one runs tree, and to kill at any
moment: each run has one writer at a time (its lock), all files are written atomically,
and a rerun resumes every unfinished run from its last checkpoint.
"""
from __future__ import annotations

import os
from pathlib import Path

from bench.core import io
from bench.config.schema import Suite
from bench.core.errors import BenchError
from bench.executors import make_executor
from bench.executors.base import Executor, RunTask
from bench.executors.inprocess import failure_text
from bench.core.locks import RunLock, wait_until_free
from bench.runs.folder import RunSpec, plan_runs
from bench.training.trainer import RunOutcome

FAILED_KEPT = "result.failed.json"   # the last failure of a run that is being retried


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


def _read_result(run_dir: Path) -> dict | None:
    try:
        return io.read_json(run_dir / "result.json")
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {"status": "failed", "failure": {"kind": "unreadable", "reason": "result.json cannot be read"}}


def reset_failed(run_dir: Path) -> bool:
    """Make a failed run runnable again: its result.json moves to result.failed.json (kept for
    the record); checkpoint and log stay, so the run resumes where it was. Done under the
    run's lock, so a concurrent sweep never loses a result it has just written."""
    lock = RunLock(run_dir)
    if not (run_dir / "result.json").exists() or not lock.acquire():
        return False
    try:
        result = _read_result(run_dir)
        if result is None or result.get("status") == "done":
            return False
        os.replace(run_dir / "result.json", run_dir / FAILED_KEPT)
        return True
    finally:
        lock.release()


def run_sweep(suite: Suite, runs: list[RunSpec], out_root: Path, *, quiet: bool = False,
              retry_failed: bool = False, executor: Executor | None = None) -> list[RunOutcome]:
    """Execute the runs not done yet; one outcome per run, in the order of ``runs``.

    A run already done is "skipped"; one recorded as failed stays "failed" unless
    ``retry_failed``. A run that another live process is training ("busy") is waited for
    with local executors and taken over if that process ends without finishing it.
    """
    out_root = Path(out_root)
    executor = executor or make_executor(suite.executor, out_root, quiet=quiet)
    outcomes: dict[RunSpec, RunOutcome] = {}
    todo: list[RunSpec] = []
    for spec in runs:
        run_dir = spec.directory(out_root)
        if retry_failed:
            reset_failed(run_dir)
        result = _read_result(run_dir)
        if result is None:
            todo.append(spec)
        else:
            outcomes[spec] = RunOutcome(spec, "skipped" if result.get("status") == "done" else "failed", result)
    while todo:
        tasks = [RunTask(suite, spec, out_root, quiet) for spec in todo]
        busy = []
        for outcome in executor.run(tasks):
            if outcome.status == "busy" and executor.waits_for_busy:
                busy.append(outcome.spec)
            else:
                outcomes[outcome.spec] = outcome
        for spec in busy:  # held by another live process: wait until it lets go, then look again
            wait_until_free(spec.directory(out_root))
        todo = busy
    return [outcomes[spec] for spec in runs]


def summarize(suite: Suite, outcomes: list[RunOutcome], wall_s: float, out_root: Path) -> tuple[str, int]:
    """The sweep's closing lines, and the command's exit code (1 if any run failed)."""
    count = {s: sum(o.status == s for o in outcomes) for s in ("done", "skipped", "failed", "busy", "queued")}
    parts = [f"{count['done']} trained", f"{count['skipped']} already done", f"{count['failed']} failed"]
    if count["busy"]:
        parts.append(f"{count['busy']} running elsewhere")
    if count["queued"]:
        parts.append(f"{count['queued']} queued on Slurm")
    lines = [f"{suite.name}: {len(outcomes)} runs ({', '.join(parts)}) in {wall_s:.1f} s; "
             f"results under {Path(out_root) / suite.name}"]
    failed = [o for o in outcomes if o.status == "failed"]
    if failed:
        lines.append("failed runs:")
        lines += [f"  {o.spec.key}: {failure_text(o)}" for o in failed]
        lines.append("rerun with --retry-failed to retry them (they resume from their checkpoints)")
    busy = [o for o in outcomes if o.status == "busy"]
    for o in busy:
        h = (o.result or {}).get("holder") or {}
        where = ", ".join(f"{k} {h[k]}" for k in ("host", "pid", "slurm_job") if k in h)
        lines.append(f"  {o.spec.key}: being trained by another process ({where or 'unknown'})")
    if count["queued"]:
        lines.append(f"follow them with: bench status --runs {out_root}")
    return "\n".join(lines), 1 if failed else 0
