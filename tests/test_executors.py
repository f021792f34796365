"""Executors, run locks, failure records, retries and `bench status` (no Slurm needed)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from conftest import without_timing

from bench.core import io
from bench.config.schema import ExecutorConfig
from bench.suites import load_suite
from bench.executors import executor_from_args, make_executor
from bench.executors.base import RunTask
from bench.executors.inprocess import InProcessExecutor
from bench.executors.pool import PoolExecutor
from bench.executors.slurm import JobSignals, JobTerminated
from bench.core.locks import RunLock, holder, remove_stale_temporaries
from bench.executors.sweep import run_sweep, select_runs, summary_lines
from bench.runs.folder import FAILED_KEPT
from bench.training.trainer import failure_kind, train_run

REPO = Path(__file__).resolve().parents[1]


def tiny_suite(*overrides: str, plugins=("NoPen", "LPC"), seeds=(0,)):
    return load_suite("digits", [f"plugins={list(plugins)}", f"seeds={list(seeds)}", "recipe.epochs=3",
                                 "recipe.checkpoint_every=1", "recipe.log_every=1",
                                 "dataset.limit_train=200", "dataset.limit_test=100",
                                 "evaluation.evaluators=[]", "evaluation.settings={}", *overrides])




def hold_lock_in_subprocess(run_dir: Path, seconds: float) -> subprocess.Popen:
    """A separate process that takes the run's lock, says so on stdout, sleeps, and exits."""
    code = textwrap.dedent(f"""
        import sys, time
        from bench.core.locks import RunLock
        lock = RunLock({str(run_dir)!r})
        assert lock.acquire()
        print("locked", flush=True)
        time.sleep({seconds})
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    return proc


# ---------------------------------------------------------------- locks


def test_lock_is_exclusive_and_records_its_holder(tmp_path):
    first, second = RunLock(tmp_path), RunLock(tmp_path)
    assert first.acquire()
    assert not second.acquire(patience_s=0.2)  # flock conflicts between descriptors, even in one process
    info = json.loads((tmp_path / "run.lock").read_text())
    assert info["pid"] == os.getpid() and info["host"]
    first.release()
    assert (tmp_path / "run.lock").read_text() == ""  # emptied, never deleted
    assert second.acquire()
    second.release()
    assert holder(tmp_path) is None


def test_a_killed_holder_leaves_no_stuck_lock(tmp_path):
    proc = hold_lock_in_subprocess(tmp_path, 60)
    try:
        info = holder(tmp_path)
        assert info is not None and info["pid"] == proc.pid
        assert not RunLock(tmp_path).acquire(patience_s=0.2)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert holder(tmp_path) is None  # the kernel dropped it with the process
    lock = RunLock(tmp_path)
    assert lock.acquire()
    lock.release()


def test_stale_temporaries_of_owned_files_are_removed(tmp_path):
    (tmp_path / ".result.json.abc.tmp").write_text("{half")
    (tmp_path / ".checkpoint.pt.xyz.tmp").write_bytes(b"\0")
    young = tmp_path / ".slurm.json.q.tmp"
    young.write_text("{")
    removed = remove_stale_temporaries(tmp_path)
    assert sorted(p.name for p in removed) == [".checkpoint.pt.xyz.tmp", ".result.json.abc.tmp"]
    assert young.exists()  # not the lock holder's file and recent: may be being written
    os.utime(young, (time.time() - 3600, time.time() - 3600))
    assert remove_stale_temporaries(tmp_path) == [young]


# ---------------------------------------------------------------- train_run under a lock, failures


def test_train_run_reports_busy_and_writes_nothing_while_another_process_holds_the_run(tmp_path):
    suite = tiny_suite(plugins=("NoPen",))
    spec = select_runs(suite)[0]
    run_dir = spec.directory(tmp_path)
    proc = hold_lock_in_subprocess(run_dir, 60)
    try:
        outcome = train_run(suite, spec, tmp_path)
        assert outcome.status == "busy"
        assert outcome.result["holder"]["pid"] == proc.pid
        assert sorted(p.name for p in run_dir.iterdir()) == ["run.lock"]
    finally:
        proc.kill()
        proc.wait()


def test_sweep_waits_for_a_busy_run_and_takes_it_over_when_its_holder_dies_unfinished(tmp_path):
    suite = tiny_suite(plugins=("NoPen",))
    spec = select_runs(suite)[0]
    proc = hold_lock_in_subprocess(spec.directory(tmp_path), 2)  # exits after 2 s, run unfinished
    t0 = time.monotonic()
    outcomes = run_sweep(suite, [spec], tmp_path, quiet=True)
    proc.wait()
    assert time.monotonic() - t0 >= 1.0
    assert [o.status for o in outcomes] == ["done"]


def test_exceptions_and_oom_are_recorded_as_failed_results(tmp_path, monkeypatch):
    import bench.training.trainer
    suite = tiny_suite(plugins=("NoPen", "LPC"))
    calls = {"n": 0}
    real_epoch = bench.training.trainer._train_epoch

    def flaky_epoch(model, optimizer, loader, suite_, spec, epoch, *args):
        calls["n"] += 1
        if spec.plugin == "NoPen" and epoch == 1:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        if spec.plugin == "LPC" and epoch == 2:
            raise ValueError("something broke")
        return real_epoch(model, optimizer, loader, suite_, spec, epoch, *args)

    monkeypatch.setattr(bench.training.trainer, "_train_epoch", flaky_epoch)
    outcomes = run_sweep(suite, select_runs(suite), tmp_path, quiet=True)
    by_plugin = {o.spec.plugin: o for o in outcomes}
    assert {p: o.status for p, o in by_plugin.items()} == {"NoPen": "failed", "LPC": "failed"}
    nopen = io.read_json(by_plugin["NoPen"].spec.directory(tmp_path) / "result.json")
    lpc = io.read_json(by_plugin["LPC"].spec.directory(tmp_path) / "result.json")
    assert nopen["failure"]["kind"] == "oom" and "out of memory" in nopen["failure"]["reason"]
    assert nopen["failure"]["epoch"] == 1  # the epoch that was running (epoch 0 had finished)
    assert lpc["failure"]["epoch"] == 2 and lpc["failure"]["stage"] == "training"
    assert lpc["failure"]["kind"] == "exception" and lpc["failure"]["reason"] == "ValueError: something broke"
    assert "Traceback" in lpc["failure"]["traceback"]
    text, code = summary_lines(suite, outcomes, 1.0, tmp_path)
    assert code == 1 and "NoPen/seed0-lr0.001: oom: RuntimeError: CUDA out of memory" in text
    assert "--retry-failed" in text

    # a plain rerun keeps them failed and trains nothing
    calls["n"] = 0
    again = run_sweep(suite, select_runs(suite), tmp_path, quiet=True)
    assert [o.status for o in again] == ["failed", "failed"] and calls["n"] == 0

    # --retry-failed reruns only those, from their checkpoints; the old failure is kept aside
    monkeypatch.setattr(bench.training.trainer, "_train_epoch", real_epoch)
    retried = run_sweep(suite, select_runs(suite), tmp_path, quiet=True, retry_failed=True)
    assert [o.status for o in retried] == ["done", "done"]
    for o in retried:
        assert io.read_json(o.spec.directory(tmp_path) / FAILED_KEPT)["status"] == "failed"
    # resumed from the checkpoint of the epoch before the failure: identical to a clean run
    clean = run_sweep(suite, select_runs(suite), tmp_path / "clean", quiet=True)
    for o, c in zip(retried, clean):
        assert without_timing(o.result) == without_timing(c.result)


def test_failure_kinds():
    assert failure_kind(MemoryError()) == "oom"
    assert failure_kind(RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried")) == "oom"
    assert failure_kind(RuntimeError("shape mismatch")) == "exception"


# ---------------------------------------------------------------- preemption (the Slurm path, simulated)


def _interrupted_run(tmp_path, monkeypatch, signals_sent, expected):
    """Train a 6-epoch run (periodic checkpoints every 4) under JobSignals; the signals arrive
    in the middle of epoch 1; ``expected`` is the exception the run must end with."""
    import bench.training.trainer
    suite = tiny_suite("recipe.epochs=6", "recipe.checkpoint_every=4", plugins=("LPC",))
    spec = select_runs(suite)[0]
    handed_over = []

    def stand_in(signum, frame):  # what submitit's USR2 handler does: checkpoint(), requeue, exit
        handed_over.append(signum)
        raise SystemExit(-1)

    real_epoch = bench.training.trainer._train_epoch

    def epoch_with_signals(model, optimizer, loader, suite_, spec_, epoch, *args):
        if epoch == 1:
            for signum in signals_sent:
                os.kill(os.getpid(), signum)
        return real_epoch(model, optimizer, loader, suite_, spec_, epoch, *args)

    monkeypatch.setattr(bench.training.trainer, "_train_epoch", epoch_with_signals)
    previous = signal.signal(signal.SIGUSR2, stand_in)
    guard = JobSignals(suite.recipe.epochs, grace_s=60, term_grace_s=60)
    try:
        assert guard.install(signal.SIGUSR2)
        with pytest.raises(expected):
            train_run(suite, spec, tmp_path, on_epoch_end=guard.on_epoch_end,
                      checkpoint_requested=guard.checkpoint_requested)
    finally:
        guard.uninstall()
        signal.signal(signal.SIGUSR2, previous)
    monkeypatch.setattr(bench.training.trainer, "_train_epoch", real_epoch)
    return suite, spec, handed_over


def _assert_stopped_after_epoch_1_and_resumes_exactly(tmp_path, suite, spec):
    import torch
    run_dir = spec.directory(tmp_path)
    assert torch.load(run_dir / "checkpoint.pt", weights_only=True)["epoch"] == 2  # not a multiple of 4
    assert [r["epoch"] for r in io.read_jsonl(run_dir / "log.jsonl")] == [0, 1]
    assert not (run_dir / "result.json").exists() and holder(run_dir) is None
    resumed = train_run(suite, spec, tmp_path)
    clean = train_run(suite, spec, tmp_path / "clean")
    assert resumed.status == clean.status == "done"
    assert without_timing(resumed.result) == without_timing(clean.result)


def test_time_limit_warning_checkpoints_at_the_epoch_end_then_requeues(tmp_path, monkeypatch):
    """USR2 mid-epoch: the epoch finishes, a checkpoint is saved off the periodic schedule,
    then submitit's handler takes over; rerunning resumes exactly."""
    suite, spec, handed_over = _interrupted_run(tmp_path, monkeypatch, [signal.SIGUSR2], SystemExit)
    assert handed_over == [signal.SIGUSR2]
    _assert_stopped_after_epoch_1_and_resumes_exactly(tmp_path, suite, spec)


def test_preemption_sigterm_then_usr2_requeues(tmp_path, monkeypatch):
    suite, spec, handed_over = _interrupted_run(tmp_path, monkeypatch, [signal.SIGTERM, signal.SIGUSR2],
                                                SystemExit)
    assert handed_over == [signal.SIGUSR2]
    _assert_stopped_after_epoch_1_and_resumes_exactly(tmp_path, suite, spec)


def test_scancel_sigterm_alone_saves_the_epoch_and_stops(tmp_path, monkeypatch):
    t0 = time.monotonic()
    suite, spec, handed_over = _interrupted_run(tmp_path, monkeypatch, [signal.SIGTERM], JobTerminated)
    assert handed_over == [] and time.monotonic() - t0 >= JobSignals.TERM_WAIT_S
    _assert_stopped_after_epoch_1_and_resumes_exactly(tmp_path, suite, spec)


def test_signals_act_after_their_grace_if_the_epoch_does_not_end():
    handed_over = []
    previous = signal.signal(signal.SIGUSR2, lambda s, f: handed_over.append(s))
    guard = JobSignals(total_epochs=10, grace_s=1)
    try:
        guard.install(signal.SIGUSR2)
        os.kill(os.getpid(), signal.SIGUSR2)
        assert guard.checkpoint_requested() and not handed_over
        deadline = time.monotonic() + 5
        while not handed_over and time.monotonic() < deadline:
            time.sleep(0.05)  # an epoch that never ends
        assert handed_over == [signal.SIGUSR2]
    finally:
        guard.uninstall()
        signal.signal(signal.SIGUSR2, previous)
    guard = JobSignals(total_epochs=10, grace_s=60, term_grace_s=1.5)
    signal.signal(signal.SIGUSR2, lambda s, f: None)
    try:
        guard.install(signal.SIGUSR2)
        with pytest.raises(JobTerminated):
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)
    finally:
        guard.uninstall()
        signal.signal(signal.SIGUSR2, previous)


# ---------------------------------------------------------------- configuration


def test_executor_section_from_yaml_and_flags(tmp_path):
    yaml_path = tmp_path / "suite.yaml"
    text = (REPO / "bench" / "suites" / "digits.yaml").read_text()
    yaml_path.write_text(text + textwrap.dedent("""
        executor:
          kind: slurm
          slurm: {partition: gpu, gpus_per_job: 1, time_min: 120, sbatch: {account: proj}}
    """))
    suite = load_suite(str(yaml_path))
    assert suite.executor.kind == "slurm" and suite.executor.slurm.partition == "gpu"

    class Args:
        executor = None
        workers = None
        partition = "a100"
        gpus_per_job = None
        cpus_per_job = 8
        mem_gb = 32.0
        time_limit = None
        array_parallelism = 10
        sbatch = ["qos=high", "exclusive=true"]
        slurm_setup = ["source ~/venv/bin/activate"]

    config = executor_from_args(suite.executor, Args)
    assert config.kind == "slurm"
    assert (config.slurm.partition, config.slurm.gpus_per_job, config.slurm.cpus_per_job, config.slurm.mem_gb,
            config.slurm.time_min, config.slurm.array_parallelism) == ("a100", 1, 8, 32.0, 120, 10)
    assert config.slurm.sbatch == {"account": "proj", "qos": "high", "exclusive": True}
    assert config.slurm.setup == ("source ~/venv/bin/activate",)

    class Workers(Args):
        workers = 3
    local = executor_from_args(ExecutorConfig(), Workers)
    assert (local.kind, local.workers) == ("pool", 3)
    assert isinstance(make_executor(local, tmp_path), PoolExecutor)
    assert isinstance(make_executor(ExecutorConfig(), tmp_path), InProcessExecutor)

    # how a run executes is not part of what it is: same config.json, same folder
    from bench.runs.folder import run_config
    spec = select_runs(suite)[0]
    assert run_config(suite, spec) == run_config(suite.replace(executor=ExecutorConfig()), spec)


# ---------------------------------------------------------------- the process pool


class SelfKillingTask(RunTask):
    """A run whose worker process dies under it (as under the out-of-memory killer)."""

    def __call__(self, **kwargs):
        os.kill(os.getpid(), signal.SIGKILL)


def test_pool_matches_in_process_and_survives_a_killed_worker(tmp_path):
    suite = tiny_suite(plugins=("NoPen", "LPC"), seeds=(0, 1))
    runs = select_runs(suite)
    reference = {o.spec: o for o in run_sweep(suite, runs, tmp_path / "serial", quiet=True,
                                              executor=InProcessExecutor(quiet=True))}
    pooled = tmp_path / "pool"
    doomed = runs[1]
    tasks = [(SelfKillingTask if spec == doomed else RunTask)(suite, spec, pooled, True) for spec in runs]
    outcomes = {o.spec: o for o in PoolExecutor(2, quiet=True).run(tasks)}
    assert set(outcomes) == set(runs)
    failure = io.read_json(doomed.directory(pooled) / "result.json")["failure"]
    assert outcomes[doomed].status == "failed" and failure["kind"] == "killed" and "SIGKILL" in failure["reason"]
    for spec in runs:
        if spec != doomed:
            assert outcomes[spec].status == "done"
            assert without_timing(outcomes[spec].result) == without_timing(reference[spec].result)


# ---------------------------------------------------------------- bench status


def test_status_reports_each_state(tmp_path, capsys):
    from bench.cli.main import main
    root = tmp_path / "runs" / "digits"
    done, failed, running, pending = (root / "NoPen" / f"seed{i}-lr0.001" for i in range(4))
    for d in (done, failed, running, pending):
        d.mkdir(parents=True)
        io.atomic_write_json(d / "config.json", {"suite": {"recipe": {"epochs": 10}}})
    io.atomic_write_json(done / "result.json", {"status": "done", "test_acc": 0.9})
    io.atomic_write_json(failed / "result.json", {"status": "failed",
                                                   "failure": {"kind": "nan", "reason": "loss is nan", "epoch": 3}})
    for d, epochs in ((running, 4), (pending, 6)):
        for e in range(epochs):
            io.append_jsonl(d / "log.jsonl", {"epoch": e})
    (pending / "checkpoint.pt").write_bytes(b"")
    proc = hold_lock_in_subprocess(running, 60)
    try:
        assert main(["status", "--runs", str(tmp_path / "runs")]) == 0
    finally:
        proc.kill()
        proc.wait()
    out = capsys.readouterr().out
    lines = {line.split()[0]: line for line in out.splitlines() if line.startswith("digits/")}
    assert "done" in lines["digits/NoPen/seed0-lr0.001"] and "0.9000" in lines["digits/NoPen/seed0-lr0.001"]
    assert "failed   nan: loss is nan (epoch 3)" in lines["digits/NoPen/seed1-lr0.001"]
    assert "running  epoch 4/10" in lines["digits/NoPen/seed2-lr0.001"]
    assert f"pid {proc.pid}" in lines["digits/NoPen/seed2-lr0.001"]
    assert "pending  epoch 6/10 (resumes from its checkpoint)" in lines["digits/NoPen/seed3-lr0.001"]
    assert "1 pending, 1 running, 1 done, 1 failed" in out


def test_slurm_array_ids_from_sacct_are_expanded():
    from bench.executors.slurm import _expand_job_id
    assert _expand_job_id("31_[0-1%2]") == ["31_0", "31_1"]
    assert _expand_job_id("12_[0-2,5]") == ["12_0", "12_1", "12_2", "12_5"]
    assert _expand_job_id("7_3") == ["7_3"] and _expand_job_id("9") == ["9"]
