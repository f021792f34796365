"""``bench status --runs DIR``: pending / running / done / failed, per run.

Read from the run directories alone (result.json, the run's lock, checkpoint and log),
plus Slurm where a run was submitted there (slurm.json → squeue/sacct): a run whose job
is still queued is pending, one whose job ended without a result is failed.
"""
from __future__ import annotations

import json
from pathlib import Path

STATES = ("pending", "running", "done", "failed")


def add_arguments(subparsers) -> None:
    p = subparsers.add_parser("status", help="pending / running / done / failed for every run under --runs")
    p.add_argument("--runs", default="runs", help="runs root (default: runs/)")
    p.add_argument("--suite", help="only this suite (default: every suite under --runs)")
    p.add_argument("--json", action="store_true", help="one JSON object per run instead of a table")
    p.add_argument("--only", choices=STATES, help="list only runs in this state")
    p.set_defaults(func=cmd_status)


def _run_dirs(root: Path, suite: str | None):
    """<root>/<suite>/<plugin>/<seed..-lr..> folders that look like runs."""
    markers = ("config.json", "result.json", "slurm.json", "run.lock", "log.jsonl")
    suites = [root / suite] if suite else sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    for s in suites:
        if not s.is_dir():
            continue
        for plugin in sorted(p for p in s.iterdir() if p.is_dir()):
            for run in sorted(p for p in plugin.iterdir() if p.is_dir()):
                if any((run / m).exists() for m in markers):
                    yield s.name, plugin.name, run


def _epochs(run: Path) -> tuple[int | None, int | None]:
    """(epochs logged, epochs the run trains) from log.jsonl and config.json."""
    from bench.core import io
    rows = io.read_jsonl(run / "log.jsonl")
    done = rows[-1]["epoch"] + 1 if rows and "epoch" in rows[-1] else None
    try:
        total = io.read_json(run / "config.json")["suite"]["recipe"]["epochs"]
    except (OSError, ValueError, KeyError, TypeError):
        total = None
    return done, total


def run_state(run: Path, slurm_states: dict[str, str]) -> dict:
    """{state, detail, ...} of one run directory."""
    from bench.core import io
    from bench.executors.slurm import ACTIVE_STATES, STATE_KINDS, read_slurm_file
    from bench.core.locks import holder

    info: dict = {}
    try:
        result = io.read_json(run / "result.json")
    except FileNotFoundError:
        result = None
    except (OSError, ValueError):
        result = {"status": "failed", "failure": {"kind": "unreadable", "reason": "result.json cannot be read"}}
    job = (read_slurm_file(run) or {}).get("job_id")
    if job:
        info["slurm_job"] = job
        if job in slurm_states:
            info["slurm_state"] = slurm_states[job]
    if result is not None:
        if result.get("status") == "done":
            acc = result.get("test_acc")
            return {**info, "state": "done", "detail": f"test acc {acc:.4f}" if isinstance(acc, float) else ""}
        failure = result.get("failure") or {}
        detail = f"{failure.get('kind', 'failed')}: {failure.get('reason', 'no reason recorded')}"
        if failure.get("epoch") is not None:
            detail += f" (epoch {failure['epoch']})"
        return {**info, "state": "failed", "detail": detail, "failure": failure}
    done, total = _epochs(run)
    progress = f"epoch {done}/{total}" if done is not None else "not started"
    owner = holder(run)
    if owner is not None:
        where = ", ".join(f"{k} {owner[k]}" for k in ("host", "pid", "slurm_job") if k in owner)
        return {**info, "state": "running", "detail": f"{progress}; {where}", "holder": owner}
    state = info.get("slurm_state")
    if state in ACTIVE_STATES:
        verb = "starting" if state == "RUNNING" else "queued"
        return {**info, "state": "running" if state == "RUNNING" else "pending",
                "detail": f"{verb} as Slurm job {job} ({state}); {progress}"}
    if state in STATE_KINDS:  # the job failed, was cancelled or timed out, and left no result
        return {**info, "state": "failed", "detail": f"Slurm job {job} ended {state} without a result; {progress}"}
    resumable = " (resumes from its checkpoint)" if (run / "checkpoint.pt").exists() else ""
    return {**info, "state": "pending", "detail": f"{progress}{resumable}"}


def collect(root: Path, suite: str | None = None) -> list[dict]:
    from bench.core.errors import BenchError
    from bench.executors.slurm import job_states, read_slurm_file

    root = Path(root)
    if not root.is_dir():
        raise BenchError(f"no runs folder {root}")
    found = list(_run_dirs(root, suite))
    jobs = [(read_slurm_file(run) or {}).get("job_id") for _, _, run in found]
    states = job_states([j for j in jobs if j])
    rows = []
    for suite_name, plugin, run in found:
        rows.append({"suite": suite_name, "run": f"{plugin}/{run.name}", "dir": str(run), **run_state(run, states)})
    return rows


def cmd_status(args) -> int:
    rows = collect(Path(args.runs), args.suite)
    if args.only:
        rows = [r for r in rows if r["state"] == args.only]
    if args.json:
        for row in rows:
            print(json.dumps(row, sort_keys=True))
        return 0
    if not rows:
        print(f"no runs under {args.runs}")
        return 0
    width = max(len(f"{r['suite']}/{r['run']}") for r in rows)
    for r in rows:
        name = f"{r['suite']}/{r['run']}"
        print(f"{name:<{width}}  {r['state']:<8} {r.get('detail', '')}".rstrip())
    counts = {s: sum(r["state"] == s for r in rows) for s in STATES}
    print(", ".join(f"{counts[s]} {s}" for s in STATES))
    return 0
