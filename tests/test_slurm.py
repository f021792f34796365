"""`bench run --executor slurm` against a real single-node Slurm.

The module fixture uses a Slurm that answers `sinfo`, or starts one with
.ci/start-slurm.sh (root + apt-get; CI runs it before pytest); where neither works the
tests skip and say why. What they show:

* a small digits sweep submitted as a job array gives the result.json files of a local run;
* a job cancelled mid-run (scancel) is reported failed (cancelled), and `--retry-failed`
  completes it from its checkpoint, with the local run's result;
* a run longer than its job's time limit (1 minute) checkpoints at the USR2 warning,
  requeues, and finishes — here with no periodic checkpoints at all, so every epoch it
  keeps across a requeue was saved by the preemption path.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import results_by_run, without_timing

REPO = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.slurm, pytest.mark.slow]

EPOCHS = 40
COMMON = ["--suite", "digits", "--set", "runtime.num_threads=1", "--set", "evaluation.evaluators=[]",
          "--set", "evaluation.settings={}", "--no-report"]
SMALL = [*COMMON, "--plugins", "LPC", "NoPen", "--seeds", "0", "--set", f"recipe.epochs={EPOCHS}",
         "--set", "recipe.checkpoint_every=5", "--set", "recipe.log_every=5"]
ON_SLURM = ["--executor", "slurm", "--cpus-per-job", "1", "--time-limit", "5"]
# training time of the time-limit test's run (timed here, before any job runs): more than a
# 1-minute job can do (its warning comes at most 50 s into it), little enough to finish
# after a few requeues
TIMELIMIT_TRAIN_S = 110.0   # well past one 1-minute job even if the job runs faster than the calibration


def bench(capsys, *args: str) -> tuple[int, str, str]:
    """``bench ARGS`` in this process (the Slurm submitter is light: the training is in the
    jobs); torch's thread count, which a local run may set, is restored afterwards."""
    import torch

    from bench.cli.main import main
    threads = torch.get_num_threads()
    capsys.readouterr()
    try:
        code = main(list(args))
    finally:
        torch.set_num_threads(threads)
    out = capsys.readouterr()
    return code, out.out, out.err


def sinfo_answers() -> bool:
    if shutil.which("sinfo") is None:
        return False
    try:
        out = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return False
    return out.returncode == 0 and any(s.strip() in ("idle", "mixed", "allocated") for s in out.stdout.split())


@pytest.fixture(scope="module")
def slurm():
    pytest.importorskip("submitit", reason="submitit is not installed (pip install -e '.[slurm]')")
    if not sinfo_answers():
        if os.geteuid() != 0:
            pytest.skip("no Slurm answers `sinfo`, and starting one (.ci/start-slurm.sh) needs root")
        if shutil.which("slurmctld") is None and shutil.which("apt-get") is None:
            pytest.skip("no Slurm answers `sinfo`, and there is no apt-get to install one")
        started = subprocess.run([str(REPO / ".ci" / "start-slurm.sh")], capture_output=True, text=True,
                                 timeout=900)
        if started.returncode != 0 or not sinfo_answers():
            tail = (started.stderr or started.stdout).strip().splitlines()[-3:]
            pytest.skip(f".ci/start-slurm.sh could not start Slurm (exit {started.returncode}): {' | '.join(tail)}")
    accounting = subprocess.run(["sacct", "-n", "-X", "-o", "JobID"], capture_output=True, timeout=20).returncode == 0
    return {"accounting": accounting}






def log(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def timelimit_sweep(slurm, tmp_path_factory):
    """Started first and left running in the background (minutes of wall time, one CPU): a
    run of about 110 s of training (more under load), in jobs limited to 1 minute and warned
    10 s before it, with no periodic checkpoint (checkpoint_every = epochs). Its length is set
    from a few epochs timed here, so that it outlasts one job on a fast machine too."""
    import torch

    from bench.suites import load_suite
    from bench.runs.folder import RunSpec
    from bench.training.trainer import train_run
    calibrate = ["evaluation.evaluators=[]", "evaluation.settings={}", "runtime.num_threads=1",
                 "recipe.epochs=6", "recipe.log_every=6"]
    suite = load_suite("digits", calibrate)
    threads, calibration = torch.get_num_threads(), tmp_path_factory.mktemp("calibrate")
    try:
        train_run(suite, RunSpec("digits", "NoPen", 1, suite.lrs[0]), calibration)
    finally:
        torch.set_num_threads(threads)
    timing_dir = calibration / "digits" / "NoPen" / "seed1-lr0.001"
    # the fastest calibration epoch: the calibration may share the CPU with other tests while
    # the job later runs alone, and a job that finishes inside its limit proves nothing
    per_epoch = min(r["time_s"] for r in map(json.loads, (timing_dir / "log.jsonl").read_text().splitlines()))
    epochs = min(12000, max(100, math.ceil(TIMELIMIT_TRAIN_S / per_epoch)))
    out = tmp_path_factory.mktemp("timelimit")
    args = [*COMMON, "--plugins", "NoPen", "--seeds", "1", "--set", f"recipe.epochs={epochs}",
            "--set", f"recipe.checkpoint_every={epochs}", "--set", f"recipe.log_every={epochs}",
            "--executor", "slurm", "--cpus-per-job", "1", "--time-limit", "1",
            "--set", "executor.slurm.signal_delay_s=10", "--set", "executor.slurm.max_requeues=15",
            "--out", str(out)]
    proc = subprocess.Popen([sys.executable, "-m", "bench", "run", *args], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    yield {"proc": proc, "out": out, "epochs": epochs}
    if proc.poll() is None:
        proc.kill()
        run_dir = out / "digits" / "NoPen" / "seed1-lr0.001"
        if (run_dir / "slurm.json").exists():
            subprocess.run(["scancel", json.loads((run_dir / "slurm.json").read_text())["job_id"]])


@pytest.fixture(scope="module")
def local_reference(timelimit_sweep, tmp_path_factory):
    """The same sweep, run locally: what Slurm must reproduce."""
    import torch

    from bench.cli.main import main
    out = tmp_path_factory.mktemp("local")
    threads = torch.get_num_threads()
    try:
        assert main(["run", *SMALL, "--out", str(out)]) == 0
    finally:
        torch.set_num_threads(threads)
    return out


def test_slurm_sweep_gives_the_local_results_by_run(slurm, timelimit_sweep, local_reference, tmp_path, capsys):
    code, out, err = bench(capsys, "run", *SMALL, *ON_SLURM, "--out", str(tmp_path))
    assert code == 0, err
    assert "submitted 2 run(s) as Slurm job" in err and "2 trained" in out
    assert results_by_run(tmp_path) == results_by_run(local_reference) and len(results_by_run(tmp_path)) == 2
    for run_dir in (p.parent for p in tmp_path.rglob("result.json")):
        assert json.loads((run_dir / "slurm.json").read_text())["job_id"]
        reference = local_reference / run_dir.relative_to(tmp_path)
        assert without_timing(log(run_dir)) == without_timing(log(reference))
    code, out, _ = bench(capsys, "status", "--runs", str(tmp_path))
    assert "0 pending, 0 running, 2 done, 0 failed" in out
    # a second submission finds nothing left to do and submits nothing
    code, out, err = bench(capsys, "run", *SMALL, *ON_SLURM, "--out", str(tmp_path))
    assert code == 0 and "submitted" not in err and "2 already done" in out


def test_cancelled_job_is_reported_failed_and_a_rerun_resumes_it(slurm, local_reference, tmp_path, capsys):
    if not slurm["accounting"]:
        pytest.skip("telling a cancelled job from a running one needs Slurm accounting (sacct)")
    args = [*COMMON, "--plugins", "LPC", "--seeds", "0", "--set", f"recipe.epochs={EPOCHS}",
            "--set", "recipe.checkpoint_every=5", "--set", "recipe.log_every=5", *ON_SLURM, "--out", str(tmp_path)]
    run_dir = tmp_path / "digits" / "LPC" / "seed0-lr0.001"
    proc = subprocess.Popen([sys.executable, "-m", "bench", "run", *args], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while not (run_dir / "log.jsonl").exists() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert (run_dir / "log.jsonl").exists(), proc.communicate()
    job = json.loads((run_dir / "slurm.json").read_text())["job_id"]
    subprocess.run(["scancel", job], check=True)  # as soon as the job trains
    stdout, stderr = proc.communicate(timeout=240)
    assert proc.returncode == 1, stderr
    assert "LPC/seed0-lr0.001: cancelled: Slurm job" in stdout and "CANCELLED" in stdout
    failure = json.loads((run_dir / "result.json").read_text())["failure"]
    assert failure["kind"] == "cancelled" and failure["slurm_job"] == job
    code, out, _ = bench(capsys, "status", "--runs", str(tmp_path))
    assert "failed   cancelled" in out

    # the job saved the epoch it was in when SIGTERM came (off the every-5 schedule, usually)
    import torch
    resume_epoch = torch.load(run_dir / "checkpoint.pt", weights_only=True)["epoch"]
    assert 0 < resume_epoch < EPOCHS
    before = [r for r in log(run_dir) if r["epoch"] < resume_epoch]
    code, out, err = bench(capsys, "run", *args)  # a plain rerun leaves a failed run alone
    assert code == 1 and "submitted" not in err
    code, out, err = bench(capsys, "run", *args, "--retry-failed")
    assert code == 0, err
    assert "1 trained" in out
    # resumed: the epochs before the checkpoint were not trained again (their log lines,
    # timings included, are the first job's), and the result is the uninterrupted local one
    assert [r for r in log(run_dir) if r["epoch"] < resume_epoch] == before
    assert [r["epoch"] for r in log(run_dir)] == list(range(EPOCHS))
    assert results_by_run(tmp_path)["digits/LPC/seed0-lr0.001"] == results_by_run(local_reference)["digits/LPC/seed0-lr0.001"]
    assert json.loads((run_dir / "result.failed.json").read_text())["failure"]["kind"] == "cancelled"


def test_run_longer_than_the_time_limit_requeues_and_finishes(slurm, timelimit_sweep):
    proc, out, epochs = timelimit_sweep["proc"], timelimit_sweep["out"], timelimit_sweep["epochs"]
    stdout, stderr = proc.communicate(timeout=600)
    assert proc.returncode == 0, stderr
    run_dir = out / "digits" / "NoPen" / "seed1-lr0.001"
    result = json.loads((run_dir / "result.json").read_text())
    assert result["status"] == "done"
    assert [r["epoch"] for r in log(run_dir)] == list(range(epochs))  # every epoch once
    job = json.loads((run_dir / "slurm.json").read_text())["job_id"]
    job_log = Path(json.loads((run_dir / "slurm.json").read_text())["stdout"]).with_suffix(".err")
    requeued = job_log.read_text().count("checkpoint at the end of this epoch, then requeue")
    assert requeued >= 1, f"job {job} was never warned before its time limit"
    if slurm["accounting"]:
        # slurmdbd records the final state a few seconds after the job's result file exists
        deadline = time.monotonic() + 60
        while True:
            history = subprocess.run(["sacct", "-n", "-X", "-D", "-P", "-o", "JobID,State", "-j", job],
                                     capture_output=True, text=True).stdout
            if "COMPLETED" in history or time.monotonic() > deadline:
                break
            time.sleep(2)
        assert "REQUEUED" in history and "COMPLETED" in history, history
