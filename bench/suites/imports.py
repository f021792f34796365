"""What to import so that names resolve: the built-in evaluators, and ``--import MODULE_OR_FILE``.

``load_builtin_evaluators`` imports the packages whose decorators register the built-in
attacks and metrics (a report needs their columns, a suite their names).

``--import`` loads a user's plugin or evaluator module before a run.

A module name (``my_plugins``) is imported from the Python path; a path to a ``.py`` file
is loaded as a module named after the file. Importing it runs its ``@register_plugin`` /
``@register_evaluator`` decorators, after which a suite (or ``--plugins``) can name what it
registers. The resolved list (module names, absolute file paths) is recorded in each
run's config.json, so ``bench report``, ``attack`` and ``metrics`` on those runs load the
same modules again, and so does every worker process or Slurm job that trains them.
"""
from __future__ import annotations

import importlib
import importlib.util
import sys
import traceback
from pathlib import Path
from typing import Iterable

from bench.core.errors import BenchError


def load_builtin_evaluators() -> None:
    """Import the packages whose decorators register the built-in attacks and metrics."""
    import bench.attacks  # noqa: F401
    import bench.metrics  # noqa: F401


def is_file_spec(spec: str) -> bool:
    return spec.endswith(".py") or "/" in spec or "\\" in spec


def resolve_import(spec: str) -> str:
    """A file as its absolute path (it must exist), a module name as written."""
    spec = spec.strip()
    if not spec:
        raise BenchError("--import needs a module name or a .py file")
    if is_file_spec(spec):
        path = Path(spec).expanduser()
        if not path.is_file():
            raise BenchError(f"--import {spec}: no such file")
        return str(path.resolve())
    return spec


def _where(exc: BaseException) -> str:
    frames = traceback.extract_tb(exc.__traceback__)
    return f" ({Path(frames[-1].filename).name}, line {frames[-1].lineno})" if frames else ""


def _load_file(path: Path) -> None:
    name = path.stem
    loaded = sys.modules.get(name)
    if loaded is not None:
        if Path(getattr(loaded, "__file__", "") or "").resolve() == path:
            return
        name = f"{name}_{abs(hash(str(path))) % 10**8}"   # a module of that name exists: do not shadow it
        if name in sys.modules:
            return
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module   # before running it: dataclasses and typing look it up there
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        raise


def load_import(spec: str) -> str:
    """Import one module or file (idempotent); return its recorded form."""
    resolved = resolve_import(spec)
    try:
        if is_file_spec(resolved):
            _load_file(Path(resolved))
        else:
            importlib.import_module(resolved)
    except ModuleNotFoundError as exc:
        if exc.name and resolved.split(".")[0] == exc.name.split(".")[0]:
            raise BenchError(f"--import {spec}: no module named {resolved!r} on the Python path "
                             f"(give a module name, or the path of a .py file)") from None
        raise BenchError(f"--import {spec}: {type(exc).__name__}: {exc}{_where(exc)}") from None
    except BenchError:
        raise
    except Exception as exc:  # an error inside the user's module: one line naming where
        raise BenchError(f"--import {spec}: {type(exc).__name__}: {exc}{_where(exc)}") from None
    return resolved


def load_imports(specs: Iterable[str]) -> tuple[str, ...]:
    """Import every module or file in order; return their recorded forms."""
    return tuple(dict.fromkeys(load_import(spec) for spec in specs))


def load_run_imports(recorded: Iterable[str], given: Iterable[str] = ()) -> None:
    """Load the modules recorded with runs, after the ones given on the command line.

    A recorded module that cannot be loaded any more (a moved file) is skipped when a
    module of the same name was given with ``--import``; otherwise it is an error that
    says how to fix it.
    """
    loaded = load_imports(given)
    names = {Path(s).stem if is_file_spec(s) else s for s in loaded}
    for spec in dict.fromkeys(recorded):
        try:
            load_import(spec)
        except BenchError as exc:
            name = Path(spec).stem if is_file_spec(spec) else spec
            if name in names:
                continue
            raise BenchError(f"these runs were made with --import {spec}, which cannot be loaded now "
                             f"({exc}); pass --import with its current location") from None
