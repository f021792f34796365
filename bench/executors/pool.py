"""A local process pool: ``--workers N`` runs at once on this machine.

Workers are started with the ``spawn`` method (no forked torch/CUDA state) and live for the
whole sweep, so each loads the dataset once (``bench.training.trainer.get_data`` caches per process)
and then trains run after run. The pool is written out rather than taken from
``concurrent.futures``: when one worker dies (the out-of-memory killer, a segfault) the
parent knows exactly which run it was training, records that run as failed, starts a new
worker and goes on, where a ``ProcessPoolExecutor`` would break as a whole. On Linux the
workers die with the parent (``PR_SET_PDEATHSIG``), so ``kill -9`` of a sweep leaves no
orphan training a run.
"""
from __future__ import annotations

import dataclasses
import multiprocessing as mp
import os
import signal
import time
import traceback
from multiprocessing.connection import wait
from typing import Iterator, Sequence

from bench.core.errors import BenchError
from bench.executors.base import Executor, RunTask
from bench.core.progress import bars_enabled, progress, say
from bench.executors.inprocess import outcome_line
from bench.runs.folder import record_lost_run


def _die_with_parent(parent_pid: int) -> None:
    try:
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(1)


def _worker_main(conn, threads: int, parent_pid: int) -> None:
    """Receive RunTasks, send back ("ok", RunOutcome) or ("error", message); None stops."""
    _die_with_parent(parent_pid)
    try:
        import torch
        torch.set_num_threads(threads)  # the suite's runtime.num_threads, if set, wins later
        import bench.training.trainer  # noqa: F401  (pay the imports once, before the first run)
        while True:
            task = conn.recv()
            if task is None:
                break
            try:
                conn.send(("ok", task()))
            except BenchError as exc:
                conn.send(("error", str(exc)))
            except Exception:  # train_run records failures itself; this is anything else
                conn.send(("error", traceback.format_exc()))
    except (KeyboardInterrupt, EOFError, BrokenPipeError):
        pass  # the parent is going away: the run stays resumable


class _Worker:
    def __init__(self, ctx, threads: int) -> None:
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(target=_worker_main, args=(child, threads, os.getpid()),
                                   daemon=True, name="bench-worker")
        self.process.start()
        child.close()
        self.task: RunTask | None = None
        self.started = 0.0

    def give(self, task: RunTask) -> None:
        self.task, self.started = task, time.perf_counter()
        self.conn.send(task)

    def stop(self, timeout: float = 5.0) -> None:
        try:
            if self.process.is_alive():
                self.conn.send(None)
        except (OSError, BrokenPipeError):
            pass
        self.process.join(timeout)
        if self.process.is_alive():
            self.process.terminate()
            self.process.join(timeout)
        self.conn.close()


def _exit_description(code: int | None) -> tuple[str, str]:
    if code is not None and code < 0:
        name = signal.Signals(-code).name if -code in signal.Signals._value2member_map_ else str(-code)
        if -code == signal.SIGKILL:
            return "killed", f"worker process was killed by {name} (the out-of-memory killer sends it)"
        return "killed", f"worker process was killed by {name}"
    return "crashed", f"worker process exited with code {code} while training"


class PoolExecutor(Executor):
    name = "pool"

    def __init__(self, workers: int, *, quiet: bool = False) -> None:
        if workers < 1:
            raise BenchError(f"--workers must be >= 1, got {workers}")
        self.workers = workers
        self.quiet = quiet

    def run(self, tasks: Sequence[RunTask]) -> Iterator:
        # workers draw no bars of their own: several processes redrawing one terminal line
        # garble it. The parent shows one bar of runs and prints a line per finished run.
        queue = [dataclasses.replace(task, quiet=True) for task in tasks]
        if not queue:
            return
        ctx = mp.get_context("spawn")
        n = min(self.workers, len(queue))
        threads = max(1, (os.cpu_count() or 1) // n)
        workers = [_Worker(ctx, threads) for _ in range(n)]
        total, finished = len(queue), 0
        bar = progress(total=total, quiet=self.quiet, desc=f"{queue[0].suite.name} runs", unit="run")
        # with a bar on screen, wake up now and then so that its clock moves between runs
        tick = 1.0 if bars_enabled(self.quiet) else None
        try:
            while True:
                for w in workers:
                    if w.task is None and queue:
                        w.give(queue.pop(0))
                active = [w for w in workers if w.task is not None]
                if not active:
                    break
                bar.set_postfix_str(", ".join(w.task.spec.key for w in active), refresh=False)
                ready = wait([w.conn for w in active] + [w.process.sentinel for w in active], timeout=tick)
                if not ready:
                    bar.refresh()
                    continue
                for i, w in enumerate(workers):
                    if w.task is None or (w.conn not in ready and w.process.sentinel not in ready):
                        continue
                    outcome = self._collect(w)
                    if outcome is None:
                        continue
                    if not w.process.is_alive():
                        w.stop()
                        workers[i] = _Worker(ctx, threads) if queue else w
                    finished += 1
                    bar.update(1)
                    if not self.quiet:
                        say(outcome_line(outcome, finished, total))
                    yield outcome
        finally:
            bar.close()
            for w in workers:
                w.stop()

    def _collect(self, w: _Worker):
        task = w.task
        try:
            if w.conn.poll():
                kind, payload = w.conn.recv()
                w.task = None
                if kind == "error":
                    raise BenchError(f"run {task.spec.key}: {payload}")
                return payload
        except (EOFError, OSError):
            pass
        if w.process.is_alive():
            return None  # woke up for nothing: keep waiting
        w.process.join(1.0)
        w.task = None
        kind, reason = _exit_description(w.process.exitcode)
        return record_lost_run(task.spec, task.run_dir, kind, reason, time.perf_counter() - w.started)

