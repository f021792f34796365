"""Crash and concurrency safety of local sweeps, through the real CLI in subprocesses.

* kill -9 a sweep at random (seeded) moments, several times, then rerun until done: the
  results equal an uninterrupted sweep's, every epoch is trained into the log exactly once,
  and no partial or temporary file is left behind;
* two sweeps on one runs tree at the same time: every run is trained exactly once.
"""
from __future__ import annotations

import collections
import json
import random
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from conftest import results_by_run, without_timing
import torch

REPO = Path(__file__).resolve().parents[1]
RUN_FILES = {"config.json", "provenance.json", "log.jsonl", "checkpoint.pt", "result.json", "run.lock"}

EPOCHS = 16
SWEEP = [sys.executable, "-m", "bench", "run", "--suite", "digits", "--plugins", "LPC", "NoPen", "--seeds", "0",
         "--set", f"recipe.epochs={EPOCHS}", "--set", "recipe.checkpoint_every=3", "--set", "recipe.log_every=4",
         "--set", "runtime.num_threads=1", "--set", "evaluation.evaluators=[]", "--set", "evaluation.settings={}",
         "--quiet", "--no-report"]


def log_rows(root: Path) -> int:
    total = 0
    for path in root.rglob("log.jsonl"):
        try:
            total += path.read_bytes().count(b"\n")
        except FileNotFoundError:
            pass
    return total






def logs(root: Path) -> dict[str, list[dict]]:
    return {str(p.parent.relative_to(root)): [without_timing(json.loads(line)) for line in p.read_text().splitlines()]
            for p in root.rglob("log.jsonl")}


@pytest.mark.slow
def test_kill_9_at_random_moments_then_rerun_gives_the_uninterrupted_results_by_run(tmp_path):
    clean, killed = tmp_path / "clean", tmp_path / "killed"
    # the uninterrupted sweep runs alongside (two cores): same command, another tree
    reference = subprocess.Popen(SWEEP + ["--out", str(clean)], cwd=REPO,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    rng = random.Random(2024)
    total_rows = 2 * EPOCHS
    kills = []
    for attempt in range(3):
        proc = subprocess.Popen(SWEEP + ["--out", str(killed)], cwd=REPO,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        # a random moment of the remaining work: once the logs hold a random number of
        # further epochs (the resumed sweep first trims them back to its checkpoints), plus jitter
        rows_before = log_rows(killed)
        target = rng.randint(1, max(1, (total_rows - rows_before) // 2))
        jitter = rng.uniform(0.0, 0.4)
        deadline = time.monotonic() + 180
        seen_low = rows_before
        while proc.poll() is None and time.monotonic() < deadline:
            rows = log_rows(killed)
            seen_low = min(seen_low, rows)
            if rows - seen_low >= target:
                break
            time.sleep(0.02)
        time.sleep(jitter)
        if proc.poll() is not None:
            assert proc.returncode == 0
            break  # the sweep finished before this moment came
        proc.kill()  # SIGKILL: no handler, no clean-up
        proc.wait()
        kills.append((attempt, log_rows(killed), len(results_by_run(killed))))
    assert len(kills) >= 2, f"the sweep finished before it could be killed twice: {kills}"
    final = subprocess.run(SWEEP + ["--out", str(killed)], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert final.returncode == 0, final.stderr
    assert reference.wait(timeout=300) == 0, reference.stderr.read()

    assert results_by_run(killed) == results_by_run(clean) and len(results_by_run(clean)) == 2
    assert logs(killed) == logs(clean)
    for run, rows in logs(killed).items():
        assert [r["epoch"] for r in rows] == list(range(EPOCHS)), run  # each epoch once, none lost
    for run_dir in (p.parent for p in killed.rglob("result.json")):
        assert {p.name for p in run_dir.iterdir()} == RUN_FILES, run_dir
        a = torch.load(run_dir / "checkpoint.pt", weights_only=True)["model"]
        b = torch.load(clean / run_dir.relative_to(killed) / "checkpoint.pt", weights_only=True)["model"]
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    leftovers = [p for p in killed.rglob("*") if p.name.endswith(".tmp") or p.name.startswith(".")]
    assert leftovers == []
    assert {p.relative_to(killed) for p in killed.rglob("*") if p.is_dir()} == \
           {p.relative_to(clean) for p in clean.rglob("*") if p.is_dir()}


# A wrapper around the CLI that logs every training start, and lines both sweeps up so
# that they really start at the same moment.
COUNTED_CLI = textwrap.dedent("""
    import os, sys, time
    from pathlib import Path
    import bench.training.trainer as train
    starts, ready = Path(sys.argv[1]), Path(sys.argv[2])
    real = train._train_run_locked

    def counted(suite, spec, *args, **kwargs):
        with open(starts, "a") as fh:  # one short O_APPEND write per start
            fh.write(f"{spec.key} {os.getpid()}\\n")
        return real(suite, spec, *args, **kwargs)

    train._train_run_locked = counted
    (ready / str(os.getpid())).touch()
    while len(list(ready.iterdir())) < 2:
        time.sleep(0.02)
    from bench.cli.main import main
    sys.exit(main(sys.argv[3:]))
""")


@pytest.mark.slow
def test_two_sweeps_on_one_tree_train_every_run_exactly_once(tmp_path):
    out, starts, ready = tmp_path / "runs", tmp_path / "starts.txt", tmp_path / "ready"
    ready.mkdir()
    args = ["run", "--suite", "digits", "--plugins", "LPC", "NoPen", "LinPen", "--seeds", "0", "1",
            "--set", "recipe.epochs=4", "--set", "recipe.log_every=2", "--set", "runtime.num_threads=1",
            "--set", "evaluation.evaluators=[]", "--set", "evaluation.settings={}",
            "--limit-train", "400", "--no-report", "--out", str(out)]
    procs = [subprocess.Popen([sys.executable, "-c", COUNTED_CLI, str(starts), str(ready), *args], cwd=REPO,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [p.communicate(timeout=300) for p in procs]
    for p, (stdout, stderr) in zip(procs, outputs):
        assert p.returncode == 0, stderr
    started = collections.Counter(line.split()[0] for line in starts.read_text().splitlines())
    expected = {f"{plugin}/seed{seed}-lr0.001" for plugin in ("LPC", "NoPen", "LinPen") for seed in (0, 1)}
    assert set(started) == expected and set(started.values()) == {1}, started
    assert all(r["status"] == "done" for r in results_by_run(out).values()) and len(results_by_run(out)) == 6
    # each sweep reports the runs the other one trained as already done
    summaries = [next(line for line in stdout.splitlines() if line.startswith("digits: ")) for stdout, _ in outputs]
    trained = [int(line.split(" trained")[0].rsplit("(", 1)[1]) for line in summaries]
    assert sum(trained) == 6, summaries
