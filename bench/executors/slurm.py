"""Slurm through submitit: the runs not complete go out as one job array, one run per task.

Per run, the submitting sweep writes ``slurm.json`` (job id, submit time, log folder) into
the run directory, so ``bench status`` and a later sweep can tell a queued run from an
abandoned one. In the job, the run is an ordinary ``train_run`` call (same code, same
result.json as a local run), wrapped in a ``submitit.helpers.Checkpointable``:

* Time limit / preemption: Slurm sends USR2 ``signal_delay_s`` before the limit. The job
  then finishes its current epoch, saves a checkpoint, and hands over to submitit, which
  calls ``checkpoint()`` (the same run again), requeues the job and exits; the requeued job
  resumes from that checkpoint. If the epoch does not end within half of
  ``signal_delay_s``, it hands over at once and resumes from the last periodic checkpoint.
* A job that ends without a result.json (scancel, killed at its time limit, out of memory,
  node failure, an uncaught error) is recorded by the waiting sweep as a failed result with
  the Slurm state as its reason; ``bench run --retry-failed`` resumes it from its checkpoint.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator, Sequence

from bench.core import io
from bench.config.schema import SlurmConfig
from bench.core.errors import BenchError
from bench.executors.base import Executor, RunTask
from bench.runs import folder
from bench.runs.folder import RunOutcome, failure_text, record_lost_run

SLURM_FILE = "slurm.json"
# Slurm job states of a job that may still run (squeue's long names)
ACTIVE_STATES = {"PENDING", "RUNNING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "CONFIGURING",
                 "COMPLETING", "RESIZING", "SUSPENDED", "STAGE_OUT", "SIGNALING", "PREEMPTED",
                 "RESV_DEL_HOLD", "STOPPED"}
# final states without a result.json → failure kind recorded in the run directory
STATE_KINDS = {"CANCELLED": "cancelled", "TIMEOUT": "timeout", "OUT_OF_MEMORY": "oom",
               "NODE_FAIL": "node_fail", "BOOT_FAIL": "node_fail", "PREEMPTED": "preempted",
               "DEADLINE": "timeout", "FAILED": "job_failed"}


def _import_submitit():
    try:
        import submitit
    except ImportError:
        raise BenchError("--executor slurm needs submitit: pip install 'lpc-bench[slurm]'") from None
    return submitit


# ---------------------------------------------------------------- in the job


class JobTerminated(BaseException):
    """SIGTERM without a preemption warning (scancel): the run's progress is saved and the job
    exits; like KeyboardInterrupt it is not a failure of the run (Slurm's state says why)."""


class JobSignals:
    """The signals a Slurm job gets, handled at epoch ends, where a checkpoint is exact.

    * USR2 (submitit's ``--signal``, ``signal_delay_s`` before the time limit, or at a
      preemption): save a checkpoint at the end of the current epoch, then call submitit's
      own handler, which calls ``checkpoint()`` (the same run again), requeues the job and
      exits; the requeued job resumes from that checkpoint. Without the deferral submitit
      would requeue mid-epoch, where the model cannot be saved as "after epoch k".
    * SIGTERM alone (scancel; Slurm then SIGKILLs after KillWait): save a checkpoint at the
      end of the epoch and exit (JobTerminated), so a cancelled run loses nothing. A SIGTERM
      followed within ``TERM_WAIT_S`` by USR2 is a preemption (submitit ignores SIGTERM for
      that reason) and takes the USR2 path.
    * If the epoch does not end in time (``grace_s`` after USR2, ``term_grace_s`` after
      SIGTERM) an alarm acts at once; the run then resumes from its last periodic checkpoint.
    """

    TERM_WAIT_S = 1.0

    def __init__(self, total_epochs: int, grace_s: float, term_grace_s: float = 3.0) -> None:
        self.total_epochs = total_epochs
        self.grace_s = max(0.5, float(grace_s))
        self.term_grace_s = max(self.TERM_WAIT_S + 0.5, float(term_grace_s))
        self.warned = False              # USR2 seen
        self.term_at: float | None = None  # when SIGTERM came
        self._deadline = float("inf")
        self._usr_sig = None
        self._previous: dict[int, object] = {}

    def install(self, usr_sig: int) -> bool:
        handler = signal.getsignal(usr_sig)
        if not callable(handler):  # not under submitit: nothing to hand over to
            return False
        self._usr_sig = usr_sig
        for signum, mine in ((usr_sig, self._on_usr), (signal.SIGTERM, self._on_term),
                             (signal.SIGALRM, self._on_alarm)):
            self._previous[signum] = signal.signal(signum, mine)
        return True

    def uninstall(self) -> None:
        signal.setitimer(signal.ITIMER_REAL, 0)
        for signum, handler in self._previous.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
        self._previous = {}

    # -- signal handlers (run in the main thread, between two bytecodes)
    def _on_usr(self, signum, frame) -> None:
        if self.warned:
            return
        self.warned = True
        _say(f"got {signal.Signals(signum).name}: checkpoint at the end of this epoch, then requeue "
             f"(at the latest in {self.grace_s:.0f} s)")
        self._arm(time.monotonic() + self.grace_s)

    def _on_term(self, signum, frame) -> None:
        if self.warned or self.term_at is not None:
            return
        self.term_at = time.monotonic()
        _say("got SIGTERM: checkpoint at the end of this epoch, then stop")
        self._arm(self.term_at + self.term_grace_s)

    def _on_alarm(self, signum, frame) -> None:
        if time.monotonic() < self._deadline - 0.01:
            self._arm(self._deadline)
            return
        _say("the epoch did not end in time: stopping now (the run resumes from its last checkpoint)")
        self._act()

    def _arm(self, deadline: float) -> None:
        self._deadline = min(self._deadline, deadline)
        signal.setitimer(signal.ITIMER_REAL, max(0.01, self._deadline - time.monotonic()))

    # -- hooks for train_run
    def checkpoint_requested(self) -> bool:
        return self.warned or self.term_at is not None

    def on_epoch_end(self, epoch: int) -> None:
        if not self.checkpoint_requested():
            return
        if not self.warned:  # a preemption's USR2 may still be on its way
            time.sleep(max(0.0, self.term_at + self.TERM_WAIT_S - time.monotonic()))
        if epoch + 1 < self.total_epochs:  # after the last epoch, let the evaluation finish
            self._act()

    def _act(self) -> None:
        signal.setitimer(signal.ITIMER_REAL, 0)
        if self.warned:
            handler, signum = self._previous.get(self._usr_sig), self._usr_sig
            self.uninstall()
            handler(signum, None)  # submitit: checkpoint() → requeue → sys.exit
        elif self.term_at is not None:
            self.uninstall()
            raise JobTerminated()


def _say(text: str) -> None:
    print(f"bench: {text}", file=sys.stderr, flush=True)


def _submitit_signal() -> int:
    submitit = _import_submitit()
    return getattr(signal, "SIG" + submitit.JobEnvironment.USR_SIG)


def _kill_wait_s(default: float = 30.0) -> float:
    """Slurm's KillWait: the time between SIGTERM and SIGKILL."""
    text = _run_quiet(["scontrol", "show", "config"], timeout=10) or ""
    for line in text.splitlines():
        if line.strip().startswith("KillWait"):
            try:
                return float(line.split("=", 1)[1].split()[0])
            except (IndexError, ValueError):
                break
    return default


def _checkpointable_base():
    try:
        import submitit
        return submitit.helpers.Checkpointable
    except ImportError:  # the class must still be definable without submitit
        return object


class SlurmRunJob(_checkpointable_base()):
    """The callable an array task runs: one run, requeued from its checkpoint when preempted."""

    def __init__(self, task: RunTask, grace_s: int = 60) -> None:
        self.task = task
        self.grace_s = grace_s

    def __call__(self):
        cpus = os.environ.get("SLURM_CPUS_PER_TASK")
        if cpus and cpus.isdigit() and not self.task.suite.runtime.num_threads:
            import torch
            torch.set_num_threads(int(cpus))  # the job's CPUs, not the whole node's
        signum = _submitit_signal()
        guard = JobSignals(self.task.suite.recipe.epochs, self.grace_s, term_grace_s=0.5 * _kill_wait_s())
        guard.install(signum)
        try:
            return self.task(on_epoch_end=guard.on_epoch_end,
                             checkpoint_requested=guard.checkpoint_requested)
        except JobTerminated:
            raise SystemExit(143) from None  # no result: Slurm's state (CANCELLED) tells the sweep
        finally:
            guard.uninstall()
            # the run is over (finished, failed, stopped or requeued): a late signal has nothing
            # left to save, and at interpreter exit Python would let USR2 kill the job
            signal.signal(signum, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, signal.SIG_IGN)

    def checkpoint(self, *args, **kwargs):
        """Called by submitit on the requeue signal: run the same run again. Its state is on
        disk already (the checkpoint saved at the end of the epoch), so nothing else to keep."""
        submitit = _import_submitit()
        return submitit.helpers.DelayedSubmission(SlurmRunJob(self.task, self.grace_s))


# ---------------------------------------------------------------- Slurm queries


def _run_quiet(cmd: list[str], timeout: float = 20.0) -> str | None:
    if shutil.which(cmd[0]) is None:
        return None
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout if out.returncode == 0 else None


def _expand_job_id(jid: str) -> list[str]:
    """sacct's "12_[0-3,5%2]" (array tasks not started yet) → 12_0 … 12_3, 12_5."""
    base, sep, rest = jid.partition("_[")
    if not sep:
        return [jid]
    ids = []
    for part in rest.rstrip("]").split("%")[0].split(","):
        lo, _, hi = part.partition("-")
        try:
            ids += [f"{base}_{i}" for i in range(int(lo), int(hi or lo) + 1)]
        except ValueError:
            continue
    return ids


def job_states(job_ids: Sequence[str]) -> dict[str, str]:
    """Slurm state of each job id ("123" or "123_4"): squeue for live jobs, sacct for ended
    ones (when accounting is on). Ids Slurm no longer knows are left out."""
    ids = sorted({str(j) for j in job_ids if j})
    if not ids:
        return {}
    bases = sorted({j.split("_")[0] for j in ids})
    states: dict[str, str] = {}
    text = _run_quiet(["sacct", "-n", "-P", "-X", "-o", "JobID,State", "-j", ",".join(bases)])
    for line in (text or "").splitlines():
        jid, _, state = line.partition("|")
        if jid and state:
            for one in _expand_job_id(jid.strip()):
                states[one] = state.split()[0].strip()  # "CANCELLED by 0" → CANCELLED
    text = _run_quiet(["squeue", "-h", "-r", "-o", "%i|%T", "-j", ",".join(bases)])
    for line in (text or "").splitlines():
        jid, _, state = line.partition("|")
        if jid and state:
            states[jid.strip()] = state.strip()
    return {j: states[j] for j in ids if j in states}


def read_slurm_file(run_dir: Path) -> dict | None:
    try:
        return io.read_json(Path(run_dir) / SLURM_FILE)
    except (OSError, ValueError):
        return None


def with_job_state(state: dict, job: str | None, states: dict[str, str]) -> dict:
    """A run's folder state (``bench.runs.folder.run_state``) with what Slurm says of its job:
    a run without a result whose job is queued is pending (running once the job runs), one
    whose job ended (failed, cancelled, timed out) without a result is failed."""
    if not job:
        return state
    info = {"slurm_job": job}
    if job in states:
        info["slurm_state"] = states[job]
    slurm = info.get("slurm_state")
    if state["state"] != "pending" or slurm is None:
        return {**info, **state}
    progress = state.get("progress", "")
    if slurm in ACTIVE_STATES:
        verb = "starting" if slurm == "RUNNING" else "queued"
        return {**info, **state, "state": "running" if slurm == "RUNNING" else "pending",
                "detail": f"{verb} as Slurm job {job} ({slurm}); {progress}"}
    if slurm in STATE_KINDS:  # the job failed, was cancelled or timed out, and left no result
        return {**info, **state, "state": "failed",
                "detail": f"Slurm job {job} ended {slurm} without a result; {progress}"}
    return {**info, **state}


# ---------------------------------------------------------------- the executor


class SlurmExecutor(Executor):
    name = "slurm"
    waits_for_busy = False

    def __init__(self, config: SlurmConfig, out_root: Path, *, wait: bool = True, quiet: bool = False,
                 poll_s: float = 5.0) -> None:
        self.config = config
        self.out_root = Path(out_root).resolve()
        self.folder = Path(config.folder).resolve() if config.folder else self.out_root / ".submitit"
        self.wait = wait
        self.quiet = quiet
        self.poll_s = poll_s
        self.array_id: str | None = None

    def _make_executor(self, suite_name: str):
        submitit = _import_submitit()
        if shutil.which("sbatch") is None:
            raise BenchError("--executor slurm: sbatch not found; run this on a Slurm login node")
        c = self.config
        executor = submitit.SlurmExecutor(folder=self.folder / "%j", max_num_timeout=c.max_requeues)
        params = {"job_name": f"bench-{suite_name}", "time": c.time_min, "cpus_per_task": c.cpus_per_job,
                  "array_parallelism": c.array_parallelism, "signal_delay_s": c.signal_delay_s,
                  "additional_parameters": {"requeue": True, **c.sbatch}}
        if c.partition:
            params["partition"] = c.partition
        if c.gpus_per_job:
            params["gpus_per_node"] = c.gpus_per_job
        if c.mem_gb:
            params["mem"] = f"{int(round(c.mem_gb * 1024))}M"
        if c.setup:
            params["setup"] = list(c.setup)
        try:
            executor.update_parameters(**params)
        except ValueError as exc:
            raise BenchError(f"executor.slurm: {exc}") from None
        return executor

    def run(self, tasks: Sequence[RunTask]) -> Iterator:
        from bench.core.locks import holder

        tasks = list(tasks)
        if not tasks:
            return
        # runs another process is training, or a job of an earlier sweep still has queued
        previous = {t.spec: (read_slurm_file(t.run_dir) or {}).get("job_id") for t in tasks}
        states = job_states([j for j in previous.values() if j])
        submit = []
        for t in tasks:
            owner = holder(t.run_dir)
            if owner is not None:
                yield RunOutcome(t.spec, "busy", {"holder": owner})
            elif states.get(previous[t.spec] or "") in ACTIVE_STATES:
                yield RunOutcome(t.spec, "queued", {"slurm_job": previous[t.spec],
                                                    "slurm_state": states[previous[t.spec]]})
            else:
                submit.append(t)
        if not submit:
            return

        executor = self._make_executor(submit[0].suite.name)
        grace = max(1, self.config.signal_delay_s // 2)
        try:
            with executor.batch():
                jobs = [executor.submit(SlurmRunJob(RunTask(t.suite, t.spec, self.out_root, True), grace))
                        for t in submit]
        except Exception as exc:  # sbatch refused: bad partition, account, limits...
            raise BenchError(f"sbatch failed: {str(exc).strip().splitlines()[-1] if str(exc).strip() else exc}") \
                from None
        self.array_id = jobs[0].job_id.split("_")[0]
        submitted_at = time.time()
        for t, job in zip(submit, jobs):
            io.atomic_write_json(t.run_dir / SLURM_FILE, {
                "job_id": job.job_id, "submitted": submitted_at, "submit_host": socket.gethostname(),
                "folder": str(self.folder), "stdout": str(job.paths.stdout)})
        print(f"submitted {len(jobs)} run(s) as Slurm job {self.array_id} "
              f"({'array' if len(jobs) > 1 else 'single job'}); job files and logs under {self.folder}",
              file=sys.stderr, flush=True)
        if not self.wait:
            for t, job in zip(submit, jobs):
                yield RunOutcome(t.spec, "queued", {"slurm_job": job.job_id, "slurm_state": "PENDING"})
            return
        yield from self._wait(submit, jobs)

    def _wait(self, tasks: list[RunTask], jobs: list) -> Iterator:
        pending = dict(enumerate(zip(tasks, jobs)))
        unseen = dict.fromkeys(pending, 0)
        started, finished, total = time.monotonic(), 0, len(jobs)
        try:
            while pending:
                states = job_states([job.job_id for _, job in pending.values()])
                for i, (task, job) in list(pending.items()):
                    state = states.get(job.job_id, "")
                    # unknown to Slurm (no accounting, job gone), or preempted and maybe about to be
                    # requeued: taken as the end only when it stays so for a few polls
                    unseen[i] = unseen[i] + 1 if state in ("", "PREEMPTED") else 0
                    # over: the job's function returned or raised (submitit's result pickle), or
                    # Slurm says it ended
                    if not (job.paths.result_pickle.exists() or (state and state not in ACTIVE_STATES)
                            or unseen[i] >= 3):
                        continue
                    del pending[i]
                    outcome = self._outcome(task, job, state)
                    finished += 1
                    if not self.quiet:
                        line = f"[{finished}/{total}] {task.spec.key} (job {job.job_id}): {outcome.status}"
                        if outcome.status == "failed":
                            line += f" ({failure_text(outcome.result)})"
                        print(line, file=sys.stderr, flush=True)
                    yield outcome
                if pending:
                    elapsed = time.monotonic() - started
                    time.sleep(min(30.0, max(self.poll_s, elapsed / 20)))
        except KeyboardInterrupt:
            print(f"\nstopped waiting; the jobs keep running on Slurm (scancel {self.array_id} stops them). "
                  f"`bench status --runs {self.out_root}` shows them.", file=sys.stderr)
            raise

    def _outcome(self, task: RunTask, job, state: str):
        from bench.core.locks import holder

        result = folder.read_result(task.run_dir)
        if result is not None:
            return RunOutcome(task.spec, "done" if folder.is_done(result) else "failed", result)
        returned = None
        if job.paths.result_pickle.exists():
            try:
                from submitit.core.utils import pickle_load
                returned = pickle_load(job.paths.result_pickle)
            except Exception:  # a half-written pickle: go by the Slurm state
                returned = None
        if returned and returned[0] == "success" and getattr(returned[1], "status", None):
            return returned[1]  # e.g. busy: another process held the run
        extra = {"slurm_job": job.job_id, "slurm_state": state or "unknown", "log": str(job.paths.stdout)}
        # the job's own process may still be dying (Slurm's KillWait) and hold the run's lock
        owner = holder(task.run_dir) or {}
        patience = 90.0 if owner.get("slurm_job") == job.job_id else 1.0
        if returned and returned[0] == "error":
            trace = str(returned[1]).strip()
            last = trace.splitlines()[-1] if trace else "unknown error"
            kind = "timeout" if "timed-out too many times" in trace else "job_error"
            return record_lost_run(task.spec, task.run_dir, kind, f"Slurm job {job.job_id}: {last}", extra=extra,
                                   patience_s=patience)
        kind = STATE_KINDS.get(state, "job_failed")
        reason = f"Slurm job {job.job_id} ended {state or 'without a state'} before the run finished"
        return record_lost_run(task.spec, task.run_dir, kind, reason, extra=extra, patience_s=patience)
