"""The pre-sweep estimate (printed first on CPU) and the memory check."""
from __future__ import annotations

import contextlib
import io
import json

import numpy as np
import pytest
import torch

from bench.training import estimate
from bench.suites import load_suite
from bench.data.cifar import write_cifar_pickles
from bench.runs.folder import plan_runs

CLASSES = [f"k{i}" for i in range(10)]


@pytest.fixture
def tiny_cifar10(tmp_path):
    rng = np.random.default_rng(0)
    write_cifar_pickles(tmp_path / "data", "cifar10",
                        (rng.integers(0, 256, (100, 3, 32, 32), dtype=np.uint8), np.arange(100) % 10),
                        (rng.integers(0, 256, (20, 3, 32, 32), dtype=np.uint8), np.arange(20) % 10), CLASSES)
    return tmp_path / "data"


def _args(root, out) -> list[str]:
    return ["--set", "backbone.name=small_cnn", "--set", "backbone.channels=[4, 8]",
            "--set", "evaluation.evaluators=[]", "--set", "evaluation.settings={}",
            "--set", "recipe.batch_size=16", "--set", "recipe.epochs=3", "--set", "runtime.device=cpu",
            "--data-root", str(root), "--out", str(out), "--plugins", "LPC", "NoPen", "--seeds", "0"]


def test_estimate_only_prints_one_line_and_trains_nothing(tiny_cifar10, tmp_path):
    from bench.cli.main import main
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["run", "--suite", "cifar10", "--estimate-only", *_args(tiny_cifar10, tmp_path / "runs")])
    assert code == 0
    (line,) = out.getvalue().strip().splitlines()
    # 2 plugins × 4 lrs, 3 epochs each; cifar10's epochs are reference epochs of 391 steps
    # (90 training examples in batches of 16 would be 6 steps a pass)
    assert line.startswith("estimate: 8 pending run(s) of cifar10, 24 epochs × 391 steps of batch 16 on cpu ≈ ")
    assert "2 plugins timed" in line and "the suite runs no evaluators" in line
    assert not (tmp_path / "runs").exists()


def test_estimate_counts_only_remaining_epochs(tiny_cifar10, tmp_path):
    suite = load_suite("cifar10", [
        "backbone.name=small_cnn", "backbone.channels=[4, 8]", "evaluation.evaluators=[]", "evaluation.settings={}",
        "recipe.batch_size=16", "recipe.epochs=3", "recipe.epoch_steps=null", "runtime.device=cpu",
        f"dataset.root={tiny_cifar10}"])
    runs = [r for r in plan_runs(suite) if r.plugin == "NoPen" and r.seed == 0]
    done, running = runs[0].directory(tmp_path), runs[1].directory(tmp_path)
    done.mkdir(parents=True)
    (done / "result.json").write_text(json.dumps({"status": "done"}))
    running.mkdir(parents=True)
    # two epochs logged, the checkpoint after one: a rerun resumes (and is counted) from the checkpoint
    (running / "log.jsonl").write_text('{"epoch": 0}\n{"epoch": 1}\n')
    torch.save({"format": 1, "epoch": 1, "model": {}, "optimizer": {}}, running / "checkpoint.pt")
    assert [estimate.epochs_left(r, tmp_path, 3) for r in runs] == [0, 2, 3, 3]
    est = estimate.estimate_sweep(suite, runs, tmp_path)
    # unpaced: an epoch is a pass, 90 training examples in batches of 16 -> 6 steps
    assert est.runs == 3 and est.epochs_left == 8 and est.steps_per_epoch == 6 and est.total_s > 0
    assert estimate.estimate_sweep(suite, runs[:1], tmp_path) is None  # nothing left: nothing measured


def test_suite_that_cannot_fit_is_one_line(tiny_cifar10, tmp_path, monkeypatch, capsys):
    from bench.cli.main import main
    monkeypatch.setattr(estimate, "_available_ram", lambda: 10_000)
    code = main(["run", "--suite", "cifar10", *_args(tiny_cifar10, tmp_path / "runs")])
    assert code == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("error: suite cifar10 does not fit on cpu: needs about") and "batch_size" in line
    assert not (tmp_path / "runs").exists()


def test_durations_read_naturally():
    assert [estimate.format_duration(s) for s in (5, 600, 7200, 5 * 86400, 3e8)] == [
        "5 s", "10 min", "2.0 h", "5.0 days", "9.5 years"]
