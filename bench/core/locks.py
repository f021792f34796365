"""One writer per run: an exclusive advisory lock on ``<run_dir>/run.lock``.

Whoever trains a run (a sweep in this process, a pool worker, a Slurm array task) holds
the lock for the whole run; every other process sees the run as busy and leaves it
alone. The lock is ``fcntl.flock``: the kernel drops it when the holder's process ends
in any way (exit, exception, ``kill -9``, the out-of-memory killer), so a dead job never
leaves a run stuck and no stale-lock clean-up is ever needed.

While held, the file holds one JSON line about the holder (pid, host, Slurm job, since)
for ``bench status``; it is emptied on release. The file itself is never deleted:
deleting a lock file lets two processes lock two different files of the same name.

Shared filesystems: Linux NFS clients turn ``flock`` into POSIX locks held on the server
(NFSv4, or NFSv3 with lockd), so the lock holds across nodes; on Lustre the filesystem
must be mounted with ``-o flock``. With POSIX-lock emulation, closing *any* descriptor of
the lock file drops the lock, so a holder must never open ``run.lock`` a second time:
this module reads it only from other processes (``holder``).
"""
from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import time
from pathlib import Path


LOCK_NAME = "run.lock"


def now() -> str:
    from datetime import datetime, timezone
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def slurm_job_id() -> str | None:
    """The Slurm job of this process (``<array>_<task>`` for an array task), if any."""
    array, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    if array and task:
        return f"{array}_{task}"
    return os.environ.get("SLURM_JOB_ID")


class RunLock:
    """``with RunLock(run_dir) as lock: if lock.held: ...`` or explicit acquire/release."""

    def __init__(self, run_dir: Path) -> None:
        self.path = Path(run_dir) / LOCK_NAME
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self, *, blocking: bool = False, patience_s: float = 1.0) -> bool:
        """Take the lock. Non-blocking by default, but tried for ``patience_s`` seconds, so that
        a ``bench status`` probing the file at the same instant does not make a run look busy."""
        if self._fd is not None:
            return True
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        deadline = time.monotonic() + patience_s
        try:
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
                    break
                except OSError as exc:
                    if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                        raise
                    if time.monotonic() >= deadline:
                        os.close(fd)
                        return False
                    time.sleep(0.1)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        info = {"pid": os.getpid(), "host": socket.gethostname(), "since": now()}
        job = slurm_job_id()
        if job:
            info["slurm_job"] = job
        data = (json.dumps(info, sort_keys=True) + "\n").encode()
        os.ftruncate(fd, 0)
        os.pwrite(fd, data, 0)
        return True

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            os.ftruncate(fd, 0)  # no holder any more
        except OSError:
            pass
        finally:
            try:
                fcntl.flock(fd, fcntl.LOCK_UN)
            finally:
                os.close(fd)

    def __enter__(self) -> "RunLock":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def holder(run_dir: Path) -> dict | None:
    """Who holds the run's lock right now ({pid, host, since[, slurm_job]}), or None if nobody.

    Never call this from the process that holds the lock (see the module note on NFS)."""
    path = Path(run_dir) / LOCK_NAME
    try:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            text = os.pread(fd, 4096, 0).decode(errors="replace").strip()
            try:
                info = json.loads(text) if text else {}
            except ValueError:  # the holder is writing it this very moment
                info = {}
            return info if isinstance(info, dict) else {}
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def wait_until_free(run_dir: Path) -> None:
    """Block until nobody holds the run's lock (returns at once if nobody does)."""
    lock = RunLock(run_dir)
    if lock.acquire(blocking=True):
        lock.release()


# Files a run's lock holder writes (atomically, through bench.core.io): a leftover temporary of
# one of them is a write cut short by a crash, safe to delete once the lock is ours.
_OWNED = ("result.json", "checkpoint.pt", "log.jsonl", "provenance.json", "config.json")


def remove_stale_temporaries(run_dir: Path, *, older_than_s: float = 300.0) -> list[Path]:
    """Delete temporaries that a killed writer left in ``run_dir``. Call with the lock held.

    ``bench.core.io`` writes ``.<name>.<random>.tmp`` next to ``<name>`` and renames it; a kill
    between the two leaves the temporary. Those of the files the lock holder owns go at once;
    others (written without the lock, e.g. slurm.json by a submitting sweep) only once old.
    """
    removed = []
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return removed
    cutoff = time.time() - older_than_s
    for path in run_dir.glob(".*.tmp"):
        owned = any(path.name.startswith(f".{name}.") for name in _OWNED)
        try:
            if owned or path.stat().st_mtime < cutoff:
                path.unlink()
                removed.append(path)
        except FileNotFoundError:
            pass
    return removed
