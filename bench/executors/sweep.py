"""Run every (plugin, seed, lr) of a suite that is not done yet, on an executor.

The sweep decides *which* runs to execute; the executor (``bench.executors``) decides
*where*. Only runs without a result are handed over (with ``retry_failed``, failed ones
too). Sweeps are safe to run several at once on one runs tree, and to kill at any
moment: each run has one writer at a time (its lock), all files are written atomically,
and a rerun resumes every unfinished run from its last checkpoint.
"""
from __future__ import annotations

from pathlib import Path

from bench.config.schema import Suite
from bench.core.errors import BenchError
from bench.executors import make_executor
from bench.executors.base import Executor, RunTask
from bench.core.locks import wait_until_free
from bench.runs.folder import RunOutcome, RunSpec, failure_text, is_done, plan_runs, read_result, reset_failed


def select_runs(suite: Suite, plugins: list[str] | None = None, seeds: list[int] | None = None) -> list[RunSpec]:
    """The runs of ``suite``, only of these plugins and seeds (each must be in the suite:
    ``bench.suites.add_plugins`` puts a plugin the suite does not list into it first)."""
    from bench.config.schema import seed_problem
    if seeds and seed_problem(list(dict.fromkeys(seeds))):
        raise BenchError(f"--seeds: {seed_problem(list(dict.fromkeys(seeds)))}")
    runs = plan_runs(suite)
    for kind, given, known in (("plugin", plugins, suite.plugins), ("seed", seeds, suite.seeds)):
        unknown = [str(v) for v in dict.fromkeys(given or ()) if v not in known]
        if unknown:
            more = " (add seeds with --set seeds=[...])" if kind == "seed" else ""
            raise BenchError(f"{kind}(s) {', '.join(unknown)} not in suite {suite.name} "
                             f"(its {kind}s: {', '.join(map(str, known))}){more}")
    if plugins:
        runs = [r for r in runs if r.plugin in plugins]
    if seeds:
        runs = [r for r in runs if r.seed in seeds]
    return runs


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
        result = read_result(run_dir)
        if result is None:
            todo.append(spec)
        else:
            outcomes[spec] = RunOutcome(spec, "skipped" if is_done(result) else "failed", result)
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


def summary_lines(suite: Suite, outcomes: list[RunOutcome], wall_s: float, out_root: Path) -> tuple[str, int]:
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
        lines += [f"  {o.spec.key}: {failure_text(o.result)}" for o in failed]
        lines.append("rerun with --retry-failed to retry them (they resume from their checkpoints)")
    busy = [o for o in outcomes if o.status == "busy"]
    for o in busy:
        h = (o.result or {}).get("holder") or {}
        where = ", ".join(f"{k} {h[k]}" for k in ("host", "pid", "slurm_job") if k in h)
        lines.append(f"  {o.spec.key}: being trained by another process ({where or 'unknown'})")
    if count["queued"]:
        lines.append(f"follow them with: bench status --runs {out_root}")
    return "\n".join(lines), 1 if failed else 0
