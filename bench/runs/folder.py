"""A Run is one (suite, plugin, seed, lr): an independent, idempotent unit with its own folder.

    <out>/<suite>/<plugin>/seed<k>-lr<x>/
        config.json      resolved suite + this run's identity (written first)
        provenance.json  commit, versions, device, start/end time
        log.jsonl        one JSON line per epoch (loss terms, γ, accuracies)
        checkpoint.pt    model + optimizer + next epoch (atomic; weights_only loadable)
        result.json      written last, atomically: status "done" or "failed"
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from bench.core.io import read_json

RESULT_SCHEMA = 1


@dataclass(frozen=True)
class RunSpec:
    suite: str
    plugin: str
    seed: int
    lr: float

    @property
    def key(self) -> str:
        return f"{self.plugin}/seed{self.seed}-lr{self.lr:g}"

    def directory(self, out_root: Path) -> Path:
        return Path(out_root) / self.suite / self.plugin / f"seed{self.seed}-lr{self.lr:g}"

    def as_dict(self) -> dict:
        return {"suite": self.suite, "plugin": self.plugin, "seed": self.seed, "lr": self.lr}


def plan_runs(suite) -> list[RunSpec]:
    """Every run of a suite, in a stable order: plugin, seed, lr."""
    return [RunSpec(suite.name, p, s, lr) for p in suite.plugins for s in suite.seeds for lr in suite.lrs]


def run_status(run_dir: Path) -> str:
    """'done', 'failed', 'running' (a checkpoint or log but no result), or 'pending'."""
    result = Path(run_dir) / "result.json"
    if result.exists():
        try:
            return read_json(result).get("status", "failed")
        except (OSError, ValueError):
            return "failed"
    if (Path(run_dir) / "checkpoint.pt").exists() or (Path(run_dir) / "log.jsonl").exists():
        return "running"
    return "pending"
