"""Read run directories back: the report never uses in-memory state, so results from many
machines merge by copying folders."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from bench.core.errors import BenchError
from bench.core.io import read_json
from bench.runs.folder import RESULT_SCHEMA


@dataclass
class RunRecord:
    path: Path
    config: dict
    result: dict | None

    @property
    def suite(self) -> str:
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
    def status(self) -> str:
        if self.result is None:
            return "incomplete"
        return self.result.get("status", "failed")


def load_runs(root: Path, suite: str | None = None) -> list[RunRecord]:
    """Every run directory (one with config.json) under ``root``, optionally of one suite."""
    root = Path(root)
    if not root.exists():
        raise BenchError(f"runs directory {root} does not exist")
    records = []
    for config_path in sorted(root.rglob("config.json")):
        try:
            config = read_json(config_path)
            run = config["run"]
        except (ValueError, KeyError, OSError):
            raise BenchError(f"{config_path} is not an lpc-bench run config") from None
        if suite is not None and run["suite"] != suite:
            continue
        result_path = config_path.parent / "result.json"
        result = read_json(result_path) if result_path.exists() else None
        if result is not None and result.get("schema") != RESULT_SCHEMA:
            raise BenchError(f"{result_path} has result schema {result.get('schema')!r}; "
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
