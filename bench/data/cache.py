"""Decode once, train many times: a uint8 array cache for datasets that need decoding.

Decoding tens of thousands of JPEG/PNG files costs tens of seconds on a small CPU; a
sweep loads its dataset once per process and many processes share a machine, so the
decoded arrays are written once to an ``.npz`` file and reused.

* Where: ``$LPC_BENCH_CACHE`` if set, else ``$XDG_CACHE_HOME/lpc-bench`` (default
  ``~/.cache/lpc-bench``). Never next to the data by default: data folders are often
  read-only (shared datasets, mounted volumes).
* Key: a SHA-256 over the loader's format version and, for every source file, its
  relative path, size and modification time. Touching, adding or removing one file
  changes the key, so a stale cache is never read; old entries are left for the user
  to delete (``rm -r ~/.cache/lpc-bench``).
* Writes are atomic (``bench.core.io``): a process killed mid-write leaves no half file,
  and two processes building the same entry at once both end with a complete one.
"""
from __future__ import annotations

import hashlib
import io as _io
import os
import sys
import zipfile
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from bench.core import io

CACHE_ENV = "LPC_BENCH_CACHE"


def cache_dir() -> Path:
    explicit = os.environ.get(CACHE_ENV)
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "lpc-bench"


def fingerprint(version: str, entries: Iterable[tuple[str, int, int]]) -> str:
    """Key over ``(relative path, size, mtime_ns)`` triples; order-independent."""
    digest = hashlib.sha256(version.encode())
    for rel, size, mtime in sorted(entries):
        digest.update(f"\0{rel}\0{size}\0{mtime}".encode())
    return digest.hexdigest()[:24]


def file_entry(path: Path, base: Path) -> tuple[str, int, int]:
    stat = path.stat()
    return (path.relative_to(base).as_posix(), stat.st_size, stat.st_mtime_ns)


def save_arrays(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Uncompressed ``.npz``, written atomically: loading is a plain memory copy."""
    buffer = _io.BytesIO()
    np.savez(buffer, **arrays)
    io.atomic_write_bytes(path, buffer.getvalue())


def load_arrays(path: Path) -> dict[str, np.ndarray] | None:
    """The arrays of a cache file, or None when it is absent or unreadable."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as archive:
            return {name: archive[name] for name in archive.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile):
        return None


def cached_arrays(name: str, key: str, build: Callable[[], dict[str, np.ndarray]],
                  *, quiet: bool = False) -> dict[str, np.ndarray]:
    """``build()`` once per key; later calls read ``<cache_dir>/<name>-<key>.npz``.

    An unreadable cache file (disk full during an old write, a manual edit) is rebuilt,
    not trusted. If the cache folder cannot be written, the arrays are still returned
    and a one-line note says decoding will happen again next time.
    """
    path = cache_dir() / f"{name}-{key}.npz"
    arrays = load_arrays(path)
    if arrays is not None:
        return arrays
    if not quiet:
        print(f"{name}: decoding images once into {path} …", file=sys.stderr, flush=True)
    arrays = build()
    try:
        save_arrays(path, arrays)
    except OSError as exc:
        print(f"{name}: could not write the decode cache {path} ({exc.strerror or exc}); "
              f"set {CACHE_ENV} to a writable folder to avoid decoding again", file=sys.stderr)
    return arrays
