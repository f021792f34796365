"""``bench status --runs DIR``: pending / running / done / failed, per run.

The state of a run comes from its folder (``bench.runs.folder.run_state``) and, where it
was submitted to Slurm, from the job's state (``bench.executors.slurm.with_job_state``).
"""
from __future__ import annotations

import json

from bench.cli.common import add_runs, runs_root, suite_name
from bench.runs.folder import STATES


def add_arguments(subparsers) -> None:
    p = subparsers.add_parser("status", help="pending / running / done / failed for every run under --runs")
    add_runs(p)
    p.add_argument("--suite", help="only this suite: a name or a YAML path (default: every suite under --runs)")
    p.add_argument("--json", action="store_true", help="one JSON object per run instead of a table")
    p.add_argument("--only", choices=STATES, help="list only runs in this state")
    p.set_defaults(func=cmd_status)


def collect(root, suite: str | None = None) -> list[dict]:
    """One row per run folder under ``root``: suite, run, dir and its state."""
    from bench.core.errors import BenchError
    from bench.executors.slurm import job_states, read_slurm_file, with_job_state
    from bench.runs.folder import run_folders, run_state

    if not root.is_dir():
        raise BenchError(f"no runs folder {root}")
    found = list(run_folders(root, suite))
    if not found:
        raise BenchError(f"no runs{' of suite ' + suite if suite else ''} under {root}")
    jobs = {run: (read_slurm_file(run) or {}).get("job_id") for _, _, run in found}
    states = job_states([j for j in jobs.values() if j])
    return [{"suite": suite_name, "run": f"{plugin}/{run.name}", "dir": str(run),
             **with_job_state(run_state(run), jobs[run], states)} for suite_name, plugin, run in found]


def cmd_status(args) -> int:
    rows = collect(runs_root(args), suite_name(args))
    if args.only:
        rows = [r for r in rows if r["state"] == args.only]
    if args.json:
        for row in rows:
            print(json.dumps(row, sort_keys=True))
        return 0
    if not rows:
        print(f"no {args.only} runs")
        return 0
    width = max(len(f"{r['suite']}/{r['run']}") for r in rows)
    for r in rows:
        name = f"{r['suite']}/{r['run']}"
        print(f"{name:<{width}}  {r['state']:<8} {r.get('detail', '')}".rstrip())
    counts = {s: sum(r["state"] == s for r in rows) for s in STATES}
    print(", ".join(f"{counts[s]} {s}" for s in STATES))
    return 0
