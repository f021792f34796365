"""The run folder: its layout, a run's identity, its records and its state, in one place.

A Run is one (suite, plugin, seed, lr): an independent, idempotent unit with its own folder

    <runs>/<suite>/<plugin>/seed<k>-lr<x>/
        config.json        the run's configuration and identity (written first)
        provenance.json    commit, versions, device, start/end time, resumptions
        log.jsonl          one JSON line per epoch (loss terms, γ, accuracies)
        checkpoint.pt      model + optimizer + next epoch (atomic; weights_only loadable)
        checkpoint.unreadable.pt  a checkpoint that did not load, set aside (the run restarted)
        result.json        written last, atomically: status "done" or "failed"
        result.failed.json the last failure of a run being retried (--retry-failed)
        run.lock           its one writer (bench.core.locks); slurm.json: its Slurm job

Everything that reads or writes these files goes through this module: the trainer,
the executors, ``bench status``, the report, ``bench check`` and ``bench baseline``.

**Identity.** What determines a run's numbers is its config.json minus what cannot change
them (``NON_IDENTITY_KEYS``: where the data lies, how and where it ran, prose), minus the
suite's *selection* of runs (its other plugins, seeds and learning rates) and with only
its own plugin's parameters, resolved against the plugin's declared defaults. Old config
files (plugin parameters in the recipe) are read through ``bench.config.migrate``. The
same definition decides whether ``bench run`` may continue a folder, whether the runs of
a report share one configuration, and whether a baseline fits them.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.config.migrate import migrate_suite_dict
from bench.config.params import params_dict, suite_params
from bench.config.schema import seed_problem
from bench.core import io
from bench.core.errors import BenchError
from bench.core.locks import RunLock, holder

CONFIG = "config.json"
PROVENANCE = "provenance.json"
LOG = "log.jsonl"
CHECKPOINT = "checkpoint.pt"
CHECKPOINT_SET_ASIDE = "checkpoint.unreadable.pt"
RESULT = "result.json"
FAILED_KEPT = "result.failed.json"
RESULT_SCHEMA = 1

# config keys that cannot change a run's numbers (dotted; a key covers its sub-keys)
NON_IDENTITY_KEYS = ("dataset.root", "dataset.download", "runtime", "executor", "description", "paper_differences")
# which runs a suite has, not what any one of them computes
SELECTION_KEYS = ("plugins", "seeds", "plugin_seeds", "lrs")


@dataclass(frozen=True)
class RunSpec:
    suite: str
    plugin: str
    seed: int
    lr: float

    @property
    def key(self) -> str:
        return f"{self.plugin}/seed{self.seed}-lr{self.lr:g}"

    def directory(self, runs_root: Path) -> Path:
        return Path(runs_root) / self.suite / self.plugin / f"seed{self.seed}-lr{self.lr:g}"

    def as_dict(self) -> dict:
        return {"suite": self.suite, "plugin": self.plugin, "seed": self.seed, "lr": self.lr}


def plan_runs(suite) -> list[RunSpec]:
    """Every run of a suite, in a stable order: plugin, seed, lr."""
    return [RunSpec(suite.name, p, s, lr) for p in suite.plugins for s in suite.seeds_of(p) for lr in suite.lrs]


@dataclass
class RunOutcome:
    """What executing one run came to: done | failed | skipped | busy | queued."""

    spec: RunSpec
    status: str
    result: dict | None
    wall_s: float = 0.0


# --------------------------------------------------------------------------- identity

def run_config(suite, spec: RunSpec) -> dict:
    """config.json of a run: the suite (without runtime, executor and description; every
    plugin's parameters resolved), the run, and the modules imported for it."""
    config = suite.to_dict()
    for key in ("runtime", "executor", "description"):
        config.pop(key, None)
    config["plugin_params"] = suite_params(suite)
    return _plain({"suite": config, "run": spec.as_dict(), "imports": list(suite.runtime.imports)})


def _plain(data: Any) -> Any:
    """JSON's view of ``data`` (tuples as lists, NaN as text), for comparisons with files."""
    return json.loads(json.dumps(io._jsonable(data)))


def _drop(data: dict, dotted: str) -> None:
    *parents, key = dotted.split(".")
    for part in parents:
        data = data.get(part) if isinstance(data, dict) else None
    if isinstance(data, dict):
        data.pop(key, None)


def _resolved(plugin: str, given: Any) -> dict:
    """A plugin's parameters with its declared defaults filled in (as stored when the
    plugin is not importable here: then only stored values can be compared)."""
    try:
        return params_dict(plugin, given)
    except BenchError:
        return dict(given) if isinstance(given, dict) else {}


def suite_identity(suite: dict) -> tuple[dict, dict[str, dict]]:
    """(what every run of a suite shares, each plugin's resolved parameters) of a suite dict."""
    shared = _plain(migrate_suite_dict(suite))
    for dotted in NON_IDENTITY_KEYS:
        _drop(shared, dotted)
    # recipe.epoch_steps came after runs and baselines were recorded: at its default (schedules
    # paced by passes) it is left out, so that those keep their identity
    if isinstance(shared.get("recipe"), dict) and shared["recipe"].get("epoch_steps") is None:
        shared["recipe"].pop("epoch_steps", None)
    given = shared.pop("plugin_params", None) or {}
    params = {p: _resolved(p, given.get(p)) for p in shared.get("plugins") or ()}
    for key in SELECTION_KEYS:
        shared.pop(key, None)
    return shared, params


def run_identity(config: dict) -> dict:
    """What determines the numbers of the run a config.json describes."""
    shared, params = suite_identity(config.get("suite") or {})
    run = _plain(config.get("run") or {})
    return {"suite": shared, "plugin_params": params.get(run.get("plugin"), {}), "run": run}


def same_identity(stored: dict, current: dict) -> bool:
    return run_identity(stored) == run_identity(current)


def flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(data, dict):
        out: dict[str, Any] = {}
        for key in sorted(data):
            out.update(flatten(data[key], f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: data}


def differences(a: dict, b: dict, limit: int = 4) -> str:
    """'recipe.epochs: 30 vs 5, …' between two nested configs; '' when equal."""
    a, b = flatten(a), flatten(b)
    keys = sorted(k for k in set(a) | set(b) if a.get(k, "(absent)") != b.get(k, "(absent)"))
    parts = [f"{k}: {a.get(k, '(absent)')} vs {b.get(k, '(absent)')}" for k in keys[:limit]]
    if len(keys) > limit:
        parts.append(f"and {len(keys) - limit} more")
    return ", ".join(parts)


def suite_differences(a: dict, b: dict) -> str:
    """Where two suite dicts differ in what their runs compute: the shared part, and the
    parameters of every plugin both run ('' when they agree)."""
    shared_a, params_a = suite_identity(a)
    shared_b, params_b = suite_identity(b)
    common = [p for p in params_a if p in params_b]
    return differences({**shared_a, "plugin_params": {p: params_a[p] for p in common}},
                       {**shared_b, "plugin_params": {p: params_b[p] for p in common}})


def mixed_configs(records: list["RunRecord"]) -> str:
    """'' when the runs share one configuration (each plugin's runs the same parameters),
    else where the first two that differ do."""
    first = records[0]
    for rec in records[1:]:
        text = suite_differences(first.config.get("suite") or {}, rec.config.get("suite") or {})
        if text:
            return text
    return ""


def suite_from_config(config: dict):
    """The typed Suite a run was made with (from its config.json; old shapes migrated)."""
    from bench.config.schema import Suite
    from bench.core.typed import from_dict
    suite = migrate_suite_dict(config.get("suite") or {})
    suite.pop("description", None)
    return from_dict(Suite, suite)


# --------------------------------------------------------------------------- records

UNREADABLE = "unreadable"


def read_result(run_dir: Path) -> dict | None:
    """result.json, or None when there is none.

    One that cannot be read (truncated, not JSON, not a JSON object) is a *failed* record of
    kind "unreadable", for every command alike: ``bench status`` and ``bench report`` list it
    as failed with this reason, ``bench run`` counts it failed (``--retry-failed`` redoes the
    run from its checkpoint), and the commands that need the result (``bench attack``,
    ``bench metrics``) refuse with one line (``require_readable``)."""
    path = Path(run_dir) / RESULT
    try:
        result = io.read_json(path)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        return unreadable_record(f"{RESULT} cannot be read ({type(exc).__name__}: {exc})")
    if not isinstance(result, dict):
        return unreadable_record(f"{RESULT} holds a JSON {type(result).__name__}, not an object")
    return result


def unreadable_record(problem: str) -> dict:
    return {"status": "failed", "failure": {"kind": UNREADABLE, "problem": problem,
                                            "reason": f"{problem}; bench run --retry-failed redoes the run"}}


def is_unreadable(result: dict | None) -> bool:
    return isinstance(result, dict) and (result.get("failure") or {}).get("kind") == UNREADABLE


def require_readable(records: list["RunRecord"], command: str) -> None:
    """One error line when any run's result.json cannot be read: ``command`` needs every result
    it was pointed at, and a damaged one is not silently skipped."""
    bad = [r for r in records if is_unreadable(r.result)]
    if bad:
        raise BenchError(f"{len(bad)} run(s) have a {RESULT} that cannot be read (e.g. {bad[0].path / RESULT}: "
                         f"{bad[0].result['failure']['problem']}); bench status lists them as failed. "
                         f"Redo them with bench run --retry-failed (same suite and --runs), then rerun bench "
                         f"{command}")


def is_done(result: dict | None) -> bool:
    return result is not None and result.get("status") == "done"


def result_status(run_dir: Path) -> str | None:
    """"done" or "failed" for a run with a result.json (an unreadable one counts as failed), else None."""
    result = read_result(run_dir)
    if result is None:
        return None
    return "done" if is_done(result) else "failed"


def write_result(run_dir: Path, result: dict) -> None:
    io.atomic_write_json(Path(run_dir) / RESULT, result)


def last_epoch(run_dir: Path) -> int | None:
    rows = io.read_jsonl(Path(run_dir) / LOG)
    return rows[-1].get("epoch") if rows else None


def failure_record(spec: RunSpec, kind: str, reason: str, *, epoch: int | None = None,
                   wall_s: float | None = None, **extra) -> dict:
    """A failed result.json: what went wrong (kind, reason), at which epoch, and any details."""
    result = {"schema": RESULT_SCHEMA, **spec.as_dict(), "status": "failed",
              "failure": {"kind": kind, "reason": reason, "epoch": epoch, **extra}}
    if wall_s is not None:
        result["train_wall_s"] = wall_s
    return result


def running_epoch(rows: list[dict], total_epochs: int | None) -> tuple[int | None, str]:
    """(epoch, stage) a run was in when it stopped, from its log (one row per finished epoch,
    contiguous from 0): the epoch after the last logged one, or stage "evaluation" (epoch
    None) once every epoch is logged."""
    epoch = int(rows[-1]["epoch"]) + 1 if rows else 0
    if total_epochs is not None and epoch >= total_epochs:
        return None, "evaluation"
    return epoch, "training"


def planned_epochs(run_dir: Path) -> int | None:
    """The epochs a run trains, from its config.json (None where that cannot be read)."""
    try:
        total = io.read_json(Path(run_dir) / CONFIG)["suite"]["recipe"]["epochs"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return total if isinstance(total, int) else None


_RUNNING = object()


def write_failure(run_dir: Path, spec: RunSpec, kind: str, reason: str, *, epoch: Any = _RUNNING,
                  wall_s: float | None = None, **extra) -> dict:
    """Record a failed run (the caller holds its lock). ``epoch`` defaults to the epoch that
    was running when it stopped (from the log), with ``stage`` "training" or "evaluation"."""
    if epoch is _RUNNING:
        epoch, stage = running_epoch(io.read_jsonl(Path(run_dir) / LOG), planned_epochs(run_dir))
        extra.setdefault("stage", stage)
    result = failure_record(spec, kind, reason, epoch=epoch, wall_s=wall_s, **extra)
    write_result(run_dir, result)
    return result


def failure_text(result: dict | None) -> str:
    """'nan: loss term 'penalty' is inf (epoch 3)' for a failed result."""
    failure = (result or {}).get("failure") or {}
    text = f"{failure.get('kind', 'failed')}: {failure.get('reason', 'no reason recorded')}"
    if failure.get("epoch") is not None:
        return text + f" (epoch {failure['epoch']})"
    return text + (" (in the evaluation)" if failure.get("stage") == "evaluation" else "")


def record_lost_run(spec: RunSpec, run_dir: Path, kind: str, reason: str, wall_s: float = 0.0, *,
                    patience_s: float = 10.0, extra: dict | None = None) -> RunOutcome:
    """A run whose process died without writing result.json: record why, as a failed result.

    Takes the run's lock (the dead process's lock is gone; ``patience_s`` covers one still
    being torn down). If another live process holds the run, or it has a result by now,
    nothing is written and that state is reported instead.
    """
    lock = RunLock(run_dir)
    if not lock.acquire(patience_s=patience_s):
        return RunOutcome(spec, "busy", {"holder": holder(run_dir) or {}})
    try:
        result = read_result(run_dir)
        if result is not None:
            return RunOutcome(spec, "done" if is_done(result) else "failed", result)
        result = write_failure(run_dir, spec, kind, reason, **(extra or {}))
        return RunOutcome(spec, "failed", result, wall_s)
    finally:
        lock.release()


def reset_failed(run_dir: Path) -> bool:
    """Make a failed run runnable again: its result.json moves to result.failed.json (kept for
    the record); checkpoint and log stay, so the run resumes where it was. Done under the
    run's lock, so a concurrent sweep never loses a result it has just written."""
    run_dir = Path(run_dir)
    lock = RunLock(run_dir)
    if not (run_dir / RESULT).exists() or not lock.acquire():
        return False
    try:
        result = read_result(run_dir)
        if result is None or is_done(result):
            return False
        os.replace(run_dir / RESULT, run_dir / FAILED_KEPT)
        return True
    finally:
        lock.release()


# --------------------------------------------------------------------------- checkpoints

class UnreadableCheckpoint(Exception):
    """checkpoint.pt exists but does not load as a checkpoint of this run (damaged on disk,
    truncated by a copy, or of another model)."""


def read_checkpoint(run_dir: Path, map_location=None) -> dict | None:
    """The run's checkpoint (``weights_only``), None when there is none.

    Raises UnreadableCheckpoint when the file does not unpickle into a checkpoint mapping
    (every write is atomic, so this is damage from outside: a disk, a copy, an edit)."""
    import pickle
    import torch
    path = Path(run_dir) / CHECKPOINT
    if not path.exists():
        return None
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except (OSError, RuntimeError, ValueError, EOFError, AttributeError, KeyError, IndexError,
            pickle.UnpicklingError) as exc:
        text = str(exc).split(". ")[0]   # torch's first sentence says what broke; the rest is advice
        raise UnreadableCheckpoint(f"{type(exc).__name__}: {text}"[:300]) from None
    if not isinstance(state, dict) or not {"model", "optimizer", "epoch"} <= set(state):
        raise UnreadableCheckpoint("not an lpc-bench checkpoint (no model, optimizer and epoch)")
    return state


def set_aside_checkpoint(run_dir: Path, problem: str) -> str:
    """Move a checkpoint that does not load to checkpoint.unreadable.pt (kept for a look, never
    loaded again) and return the one warning line saying so: the run then restarts from
    scratch, so a damaged file cannot trap it in a loop of failures. (Checkpoints are
    replaced atomically; there is no older one to fall back to.)"""
    run_dir = Path(run_dir)
    os.replace(run_dir / CHECKPOINT, run_dir / CHECKPOINT_SET_ASIDE)
    return (f"warning: {run_dir / CHECKPOINT} does not load ({problem}); moved to {CHECKPOINT_SET_ASIDE}, "
            f"the run restarts from epoch 0")


# --------------------------------------------------------------------------- state

STATES = ("pending", "running", "done", "failed")


def epochs_logged(run_dir: Path) -> tuple[int | None, int | None]:
    """(epochs logged, epochs the run trains) from log.jsonl and config.json."""
    last = last_epoch(run_dir)
    return (last + 1 if isinstance(last, int) else None), planned_epochs(run_dir)


def run_state(run_dir: Path) -> dict:
    """{state, detail, ...} of one run folder from its files and its lock: done (with the
    test accuracy), failed (with the failure), running (held by a live process), or pending
    (with how far it got, and whether it resumes from a checkpoint)."""
    run_dir = Path(run_dir)
    result = read_result(run_dir)
    if result is not None:
        if is_done(result):
            acc = result.get("test_acc")
            return {"state": "done", "detail": f"test acc {acc:.4f}" if isinstance(acc, float) else ""}
        return {"state": "failed", "detail": failure_text(result), "failure": result.get("failure") or {}}
    done, total = epochs_logged(run_dir)
    progress = f"epoch {done}/{total}" if done is not None else "not started"
    owner = holder(run_dir)
    if owner is not None:
        where = ", ".join(f"{k} {owner[k]}" for k in ("host", "pid", "slurm_job") if k in owner)
        return {"state": "running", "detail": f"{progress}; {where}", "holder": owner, "progress": progress}
    resumable = " (resumes from its checkpoint)" if (run_dir / CHECKPOINT).exists() else ""
    return {"state": "pending", "detail": f"{progress}{resumable}", "progress": progress}


def run_folders(root: Path, suite: str | None = None):
    """(suite, plugin, folder) of every folder under ``root`` that looks like a run."""
    from bench.core.locks import LOCK_NAME
    markers = (CONFIG, RESULT, LOG, LOCK_NAME, "slurm.json")
    root = Path(root)
    suites = [root / suite] if suite else sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    for s in suites:
        if not s.is_dir():
            continue
        for plugin in sorted(p for p in s.iterdir() if p.is_dir()):
            for run in sorted(p for p in plugin.iterdir() if p.is_dir()):
                if any((run / m).exists() for m in markers):
                    yield s.name, plugin.name, run


# --------------------------------------------------------------------------- reading runs back

@dataclass
class RunRecord:
    """A run folder read back: its config.json and result.json (None while unfinished)."""

    path: Path
    config: dict
    result: dict | None

    @property
    def suite(self) -> str:
        """The suite's name (``suite_config()`` is the typed Suite)."""
        return self.config["run"]["suite"]

    @property
    def plugin(self) -> str:
        return self.config["run"]["plugin"]

    @property
    def seed(self) -> int:
        return self.config["run"]["seed"]

    @property
    def lr(self) -> float:
        return self.config["run"]["lr"]

    @property
    def name(self) -> str:
        return f"{self.plugin}/seed{self.seed}-lr{self.lr:g}"

    @property
    def status(self) -> str:
        if self.result is None:
            return "incomplete"
        return self.result.get("status", "failed")

    @property
    def evaluated(self) -> bool:
        """A model evaluated by ``bench evaluate`` (no checkpoint here), not trained by lpc-bench."""
        return (self.result or {}).get("origin") == "evaluated"

    @property
    def imports(self) -> list[str]:
        return list(self.config.get("imports") or ())

    def suite_config(self):
        return suite_from_config(self.config)

    def log(self) -> list[dict]:
        return io.read_jsonl(self.path / LOG)

    def provenance(self) -> dict | None:
        try:
            return io.read_json(self.path / PROVENANCE)
        except (OSError, ValueError):
            return None

    def file(self, name: str) -> Path:
        return self.path / name


def not_done_text(records: list[RunRecord]) -> str:
    """'1 failed, 2 unfinished' for the runs of ``records`` that are not done ('' when all are)."""
    failed = sum(r.status == "failed" for r in records)
    unfinished = sum(r.result is None for r in records)
    return ", ".join(f"{n} {what}" for n, what in ((failed, "failed"), (unfinished, "unfinished")) if n)


def load_runs(root: Path, suite: str | None = None) -> list[RunRecord]:
    """Every run folder (one with config.json) under ``root``, optionally of one suite."""
    root = Path(root)
    if not root.exists():
        raise BenchError(f"runs directory {root} does not exist")
    records = []
    for config_path in sorted(root.rglob(CONFIG)):
        try:
            config = io.read_json(config_path)
            run = config["run"]
        except (ValueError, KeyError, OSError, TypeError):
            raise BenchError(f"{config_path} is not an lpc-bench run config") from None
        if isinstance(run, dict) and seed_problem([run.get("seed")]):
            raise BenchError(f"{config_path}: run.seed: {seed_problem([run.get('seed')])}")
        if suite is not None and run["suite"] != suite:
            continue
        result = read_result(config_path.parent)
        if result is not None and not is_unreadable(result) and result.get("schema") != RESULT_SCHEMA:
            raise BenchError(f"{config_path.parent / RESULT} has result schema {result.get('schema')!r}; "
                             f"this lpc-bench reads schema {RESULT_SCHEMA}")
        records.append(RunRecord(config_path.parent, config, result))
    if not records:
        raise BenchError(f"no runs{' of suite ' + suite if suite else ''} under {root}")
    suites = sorted({r.suite for r in records})
    if len(suites) > 1:
        raise BenchError(f"{root} mixes runs of several suites ({', '.join(suites)}); pass --suite")
    return records


def select_best_lr(records: list[RunRecord]) -> dict[tuple[str, int], RunRecord]:
    """Per (plugin, seed), the done run with the best *validation* accuracy (ties: smaller lr).

    The paper selected on the test set; selecting on held-out validation data keeps the
    test numbers unbiased.
    """
    best: dict[tuple[str, int], RunRecord] = {}
    for rec in records:
        if rec.status != "done":
            continue
        key = (rec.plugin, rec.seed)
        cur = best.get(key)
        if cur is None or (rec.result["val_acc"], -rec.lr) > (cur.result["val_acc"], -cur.lr):
            best[key] = rec
    return best
