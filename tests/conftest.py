"""Shared helpers for the test suite.

* Everything a test writes goes under pytest's ``tmp_path``: CLI subprocesses run with that
  folder as their working directory, so a default ``runs/`` or ``leaderboards/`` can never
  land in the repository.
* One intra-op thread everywhere (here and in subprocesses): the models are tiny, and on a
  shared 2-core machine two spinning OpenMP threads make an epoch several times slower.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]

torch.set_num_threads(1)

# the fields of a run's files that measure time, not results
TIMING_KEYS = ("time_s", "wall_s", "train_wall_s", "started", "finished")


def cli_env(extra_pythonpath: list[str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    paths = [*(extra_pythonpath or []), str(REPO)]
    if env.get("PYTHONPATH"):
        paths.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(paths)
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONWARNINGS="ignore", TQDM_DISABLE="1")
    return env


def bench_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "bench", *args]


def run_cli(args: list[str], cwd: Path, *, timeout: float = 240,
            extra_pythonpath: list[str] | None = None) -> subprocess.CompletedProcess:
    """``python -m bench ARGS`` in ``cwd``; returns the completed process (text output)."""
    return subprocess.run(bench_command(*args), cwd=cwd, env=cli_env(extra_pythonpath),
                          capture_output=True, text=True, timeout=timeout)


def start_cli(args: list[str], cwd: Path, *, extra_pythonpath: list[str] | None = None) -> subprocess.Popen:
    """Like :func:`run_cli` but returns at once (outputs in ``cwd``/stdout.txt, stderr.txt)."""
    return subprocess.Popen(bench_command(*args), cwd=cwd, env=cli_env(extra_pythonpath),
                            stdout=open(Path(cwd) / "stdout.txt", "w"),
                            stderr=open(Path(cwd) / "stderr.txt", "w"), text=True)


def kill_at_first_checkpoint(victim: subprocess.Popen, cwd: Path, find_run_dir, *, timeout: float = 240,
                             poll: float = 0.005) -> Path:
    """SIGKILL ``victim`` (a :func:`start_cli` process) as soon as ``find_run_dir()`` names a
    run folder holding a checkpoint; returns that folder. Fails if the process exits first
    or no checkpoint appears within ``timeout`` seconds."""
    import signal
    import time
    deadline = time.monotonic() + timeout
    try:
        while True:
            run_dir = find_run_dir()
            if run_dir is not None and (Path(run_dir) / "checkpoint.pt").exists():
                break
            assert victim.poll() is None, (Path(cwd) / "stderr.txt").read_text()
            assert time.monotonic() < deadline, f"no checkpoint within {timeout:g} s"
            time.sleep(poll)
        os.kill(victim.pid, signal.SIGKILL)
        victim.wait(timeout=30)
    finally:
        if victim.poll() is None:
            victim.kill()
            victim.wait()
    return Path(run_dir)


def without_timing(obj):
    """A result/log structure with every timing field removed (recursively)."""
    if isinstance(obj, dict):
        return {k: without_timing(v) for k, v in obj.items()
                if k not in TIMING_KEYS and not k.endswith("wall_s") and not k.endswith("time_s")}
    if isinstance(obj, list):
        return [without_timing(v) for v in obj]
    return obj


def results_by_run(root: Path) -> dict[str, dict]:
    """Every result.json under ``root`` (timing fields removed), keyed by its run folder."""
    return {str(p.parent.relative_to(root)): without_timing(json.loads(p.read_text()))
            for p in Path(root).rglob("result.json")}


def read_run(run_dir: Path) -> tuple[dict, list[dict]]:
    """(result.json, log.jsonl rows) of a run, timing fields removed."""
    result = json.loads((run_dir / "result.json").read_text())
    rows = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines() if line.strip()]
    return without_timing(result), without_timing(rows)


def leftover_temporaries(root: Path) -> list[Path]:
    """Atomic-write temporaries (``.<name>.<random>.tmp``) left anywhere under ``root``."""
    return sorted(p for p in Path(root).rglob("*") if p.name.endswith(".tmp"))


# small, fast digits runs: 256 training images (4 steps of 64), no evaluators
TINY = ["dataset.limit_train=256", "evaluation.evaluators=[]", "recipe.log_every=1"]


@pytest.fixture
def tiny_suite():
    """``tiny_suite(*overrides)`` → the digits suite, shrunk, with extra ``key=value`` overrides."""
    from bench.suites import load_suite

    def make(*overrides: str, epochs: int = 3, checkpoint_every: int = 1):
        return load_suite("digits", [*TINY, f"recipe.epochs={epochs}",
                                     f"recipe.checkpoint_every={checkpoint_every}", *overrides])
    return make
