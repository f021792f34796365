"""What a new user sees in the first hour (issue #13): progress on a terminal and in a log,
an estimate that counts what the run will do, one error line instead of a traceback, the
loss term that broke, the epoch a failure happened in, and `bench check` against the
committed runs."""
from __future__ import annotations

import json
import os
import pty
import re
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch

from bench.core import io
from bench.executors.inprocess import outcome_line
from bench.runs.folder import RunSpec
from bench.training import estimate
from bench.runs.folder import record_lost_run, running_epoch
from bench.training.trainer import RunOutcome, first_nonfinite, train_run
from registry import PLUGINS, Plugin

from conftest import REPO, cli_env, run_cli

SMALL_RUN = ["--plugins", "LPC", "NoPen", "--seeds", "0", "--no-report",
             "--set", "recipe.epochs=2", "--set", "dataset.limit_train=200",
             "--set", "evaluation.evaluators=[deepfool]"]
LINE = re.compile(r"^\[(\d+)/(\d+)\] (\S+): done in [\d.]+ s; test acc ([\d.]+) %, DeepFool ρ ([\d.e-]+)$")


# ----- progress: bars on a terminal, lines in a log ----------------------------------------

def test_bars_draw_on_a_pseudo_terminal_that_reports_no_size():
    """`script`, CI runners and IDE consoles open a pty of 0 × 0; tqdm took that as -1 rows
    and drew nothing, bar after bar."""
    master, slave = pty.openpty()
    assert tuple(os.get_terminal_size(slave)) == (0, 0)  # the case in question
    env = {k: v for k, v in cli_env().items() if not k.startswith(("TQDM_", "COLUMNS", "LINES"))}
    code = "from bench.core.progress import progress\nfor _ in progress(range(3), desc='probe'): pass\n"
    proc = subprocess.Popen([sys.executable, "-c", code], stdin=slave, stdout=slave, stderr=slave,
                            env=env, cwd=REPO)
    os.close(slave)
    chunks = []
    while True:
        try:
            chunk = os.read(master, 4096)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(master)
    assert proc.wait(timeout=60) == 0
    text = b"".join(chunks).decode("utf-8", "replace")
    assert "probe: 100%" in text and "3/3" in text, text


def _results(root: Path) -> dict[str, dict]:
    return {f"{p.parent.parent.name}/{p.parent.name}": json.loads(p.read_text())
            for p in (root / "digits").rglob("result.json")}


@pytest.mark.parametrize("workers", [1, 2])
def test_a_sweep_whose_stdout_is_not_a_terminal_prints_one_line_per_finished_run(tmp_path, workers):
    proc = run_cli(["run", *SMALL_RUN, "--out", str(tmp_path / "runs"), "--workers", str(workers)], tmp_path,
                   timeout=400)
    assert proc.returncode == 0, proc.stderr
    lines = [LINE.match(line) for line in proc.stdout.splitlines() if line.startswith("[")]
    assert len(lines) == 2 and all(lines), proc.stdout
    assert sorted(int(m[1]) for m in lines) == [1, 2] and {m[2] for m in lines} == {"2"}
    results = _results(tmp_path / "runs")
    for m in lines:  # the numbers on the line are the run's own
        result = results[m[3]]
        assert m[4] == f"{100 * result['test_acc']:.2f}"
        assert m[5] == f"{result['evaluations']['deepfool']['rho_mean']:#.3g}"
    assert "Traceback" not in proc.stderr


def test_quiet_prints_no_run_lines(tmp_path):
    proc = run_cli(["run", *SMALL_RUN, "--out", str(tmp_path / "runs"), "--quiet", "--no-report"], tmp_path,
                   timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "", proc.stdout       # no estimate, no run lines, no summary
    assert len(_results(tmp_path / "runs")) == 2


def test_the_run_line_shows_the_best_known_rho_and_failures_with_their_epoch():
    spec = RunSpec("digits", "LPC", 1, 1e-3)
    done = RunOutcome(spec, "done", {"test_acc": 0.975, "wall_s": 12.34, "evaluations": {
        "deepfool": {"rho_mean": 0.1492}, "best_known": {"rho_best_mean": 0.1391}}}, 12.34)
    assert outcome_line(done, 3, 33) == ("[3/33] LPC/seed1-lr0.001: done in 12.3 s; test acc 97.50 %, "
                                         "DeepFool ρ 0.149, best-known ρ 0.139")
    failed = RunOutcome(spec, "failed", {"failure": {"kind": "nan", "epoch": 4,
                                                     "reason": "loss term 'wild' is nan at step 3 of 36"}}, 2.0)
    assert outcome_line(failed, 1, 2) == ("[1/2] LPC/seed1-lr0.001: FAILED in 2.0 s: nan: loss term 'wild' is nan "
                                          "at step 3 of 36 (epoch 4)")
    in_eval = RunOutcome(spec, "failed", {"failure": {"kind": "exception", "epoch": None, "stage": "evaluation",
                                                      "reason": "ValueError: x"}})
    assert outcome_line(in_eval, 2, 2).endswith("FAILED: exception: ValueError: x (in the evaluation)")


# ----- the estimate --------------------------------------------------------------------------

class FakeClock:
    """A perf_counter that only the probe evaluators below move: an exact cost model."""

    def __init__(self) -> None:
        self.now = 0.0

    def perf_counter(self) -> float:
        return self.now


@pytest.fixture
def costed_evaluators(monkeypatch):
    """Two evaluators of known cost: an attack at 0.05 s + 0.01 s per attack input and a metric
    at 0.2 s flat, on a clock of their own."""
    from bench.evaluation.hook import EVALUATORS, register_evaluator
    clock = FakeClock()
    fake_time = types.SimpleNamespace(perf_counter=clock.perf_counter)
    monkeypatch.setattr(estimate, "time", fake_time)
    # the evaluators are timed where they run: the one evaluation entry point (bench.evaluation.hook)
    import bench.evaluation.hook as hook
    monkeypatch.setattr(hook, "time", fake_time)

    @register_evaluator("probe_attack", kind="attack")
    def probe_attack(ctx, opts):
        clock.now += 0.05 + 0.01 * len(ctx.subset)
        return {}

    @register_evaluator("probe_metric", kind="metric")
    def probe_metric(ctx, opts):
        clock.now += 0.2
        return {}
    yield
    EVALUATORS.remove("probe_attack")
    EVALUATORS.remove("probe_metric")


def test_the_evaluators_are_timed_and_extended_to_the_whole_attack_subset(costed_evaluators, tiny_suite):
    suite = tiny_suite("evaluation.evaluators=[probe_attack, probe_metric]", "evaluation.settings={}",
                       "evaluation.subset_size=300")
    from bench.training.trainer import get_data
    data = get_data(suite)
    spec = RunSpec(suite.name, "LPC", 0, suite.lrs[0])
    n = min(300, data.test_y.shape[0])
    # timed at 16 and 64 inputs, extended along the line to all n: the closed form exactly
    assert estimate.time_evaluators(suite, spec, data, torch.device("cpu")) == pytest.approx(0.05 + 0.01 * n + 0.2)
    small = suite.replace(evaluation=suite.evaluation.__class__(
        evaluators=suite.evaluation.evaluators, subset_size=10, subset_seed=0, settings={}))
    assert estimate.time_evaluators(small, spec, data, torch.device("cpu")) == pytest.approx(0.05 + 0.1 + 0.2)


def test_the_estimate_line_includes_the_evaluators(tmp_path, tiny_suite):
    suite = tiny_suite("evaluation.evaluators=[deepfool]", "plugins=[LPC, NoPen]", "seeds=[0]")
    runs = [RunSpec(suite.name, p, 0, suite.lrs[0]) for p in suite.plugins]
    est = estimate.estimate_sweep(suite, runs, tmp_path)
    assert est.evaluators_s > 0 and est.total_s == pytest.approx(est.train_s + est.eval_s + est.evaluators_s)
    line = est.line(suite)
    assert "2 plugins timed" in line and "1 evaluator(s) timed on an untrained model" in line, line
    assert set(est.step_s_by_plugin) == {"LPC", "NoPen"}
    none = estimate.estimate_sweep(tiny_suite("plugins=[LPC]", "seeds=[0]"), runs[:1], tmp_path)
    assert none.evaluators_s == 0 and "the suite runs no evaluators" in none.line(suite)


def test_a_rerun_is_estimated_from_its_checkpoint(tmp_path, tiny_suite):
    """A run killed after logging epoch 2 with its last checkpoint after epoch 1 resumes at
    epoch 1: two epochs left of three, not one."""
    suite = tiny_suite(epochs=3)
    spec = RunSpec(suite.name, "LPC", 0, suite.lrs[0])
    assert train_run(suite, spec, tmp_path).status == "done"
    run_dir = spec.directory(tmp_path)
    state = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    torch.save({**state, "epoch": 1}, run_dir / "checkpoint.pt")
    (run_dir / "result.json").unlink()
    assert len(io.read_jsonl(run_dir / "log.jsonl")) == 3
    assert estimate.epochs_left(spec, tmp_path, 3) == 2
    assert estimate.estimate_sweep(suite, [spec], tmp_path).epochs_left == 2


def _fake_result(run_dir: Path, status: str) -> None:
    run_dir.mkdir(parents=True)
    (run_dir / "result.json").write_text(json.dumps({"status": status}))


def test_estimate_only_with_nothing_pending_says_so(tmp_path, capsys):
    from bench.cli.main import main
    runs = tmp_path / "runs" / "digits"
    _fake_result(runs / "LPC" / "seed0-lr0.001", "done")
    _fake_result(runs / "NoPen" / "seed0-lr0.001", "done")
    args = ["run", "--plugins", "LPC", "NoPen", "--seeds", "0", "--out", str(tmp_path / "runs"), "--estimate-only",
            "--set", "dataset.limit_train=200", "--set", "recipe.epochs=2"]
    assert main(args) == 0
    (line,) = capsys.readouterr().out.strip().splitlines()
    assert line == f"estimate: nothing to train: all 2 selected run(s) of digits under {runs} are done"
    (runs / "NoPen" / "seed0-lr0.001" / "result.json").write_text(json.dumps({"status": "failed"}))
    assert main(args) == 0
    (line,) = capsys.readouterr().out.strip().splitlines()
    assert line.endswith("are finished (1 done, 1 failed; --retry-failed reruns the failed ones)"), line
    assert main(args + ["--retry-failed"]) == 0  # the failed one is pending again
    (line,) = capsys.readouterr().out.strip().splitlines()
    assert line.startswith("estimate: 1 pending run(s) of digits, 2 epochs × "), line


CIFAR_SMALL = ["--set", "backbone.name=small_cnn", "--set", "backbone.channels=[4, 8]",
               "--set", "evaluation.evaluators=[]", "--set", "recipe.batch_size=16",
               "--set", "runtime.device=cpu", "--plugins", "LPC", "--seeds", "0", "--set", "lrs=[1e-4]"]


def test_estimate_only_without_a_data_folder_times_the_datasets_shapes(tmp_path, capsys):
    """The README's `bench run --suite cifar100 --estimate-only` on a machine without the data."""
    from bench.cli.main import main
    assert main(["run", "--suite", "cifar100", "--estimate-only", "--out", str(tmp_path / "runs"), *CIFAR_SMALL]) == 0
    (line,) = capsys.readouterr().out.strip().splitlines()
    # cifar100 counts reference epochs of 391 optimizer steps (the paper's epoch), whatever the batch
    assert line.startswith("estimate: 1 pending run(s) of cifar100, 800 epochs × 391 steps of batch 16 on cpu ≈ ")
    assert line.endswith("no --data-root: timed on random images of cifar100's shapes "
                         "(50,000 train / 10,000 test, 3×32×32)")
    assert not (tmp_path / "runs").exists()
    # a real run still needs the data: one error line, before anything is written
    assert main(["run", "--suite", "cifar100", "--out", str(tmp_path / "runs"), *CIFAR_SMALL]) == 2
    (err,) = capsys.readouterr().err.strip().splitlines()
    assert err.startswith("error: CIFAR-100 needs --data-root DIR")
    assert not (tmp_path / "runs").exists()


# ----- failures: the term that broke, the epoch that was running -----------------------------

class WildTerm(Plugin):
    """A toy plugin: cross-entropy plus a term that is 0 until step 5 of epoch 1, then NaN, with
    a NaN gradient (as a real overflow has): that step's update poisons the weights, and from
    the next step on the cross-entropy is NaN too."""
    latent_width = "intermediate"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.calls = {}

    def loss_terms(self, out, y):
        self.calls[self.epoch] = self.calls.get(self.epoch, 0) + 1
        broken = self.epoch == 1 and self.calls[1] >= 5
        wild = (out.latent * (float("nan") if broken else 0.0)).mean()
        return {"ce": self.cross_entropy(out, y), "wild": wild}


class RaisesInEpochOne(Plugin):
    """A toy plugin whose loss raises in epoch 1 (epoch 0 finishes and is logged)."""

    def loss_terms(self, out, y):
        if self.epoch == 1:
            raise ValueError("broken in epoch 1")
        return {"ce": self.cross_entropy(out, y)}


@pytest.fixture
def toy_plugins():
    added = {"WildTerm": WildTerm, "RaisesInEpochOne": RaisesInEpochOne}
    for name, cls in added.items():
        PLUGINS.add(name, cls)
    yield
    for name in added:
        PLUGINS.remove(name)


def test_a_nan_in_the_plugins_own_term_is_blamed_on_that_term(tmp_path, tiny_suite, toy_plugins):
    """Before: the epoch means were checked in order, and by the epoch's end the NaN update had
    made the cross-entropy's mean NaN too, so 'ce' was named."""
    suite = tiny_suite("plugins=[WildTerm]", epochs=3)
    spec = RunSpec(suite.name, "WildTerm", 0, suite.lrs[0])
    assert train_run(suite, spec, tmp_path).status == "failed"
    failure = json.loads((spec.directory(tmp_path) / "result.json").read_text())["failure"]
    assert failure["kind"] == "nan" and failure["epoch"] == 1 and failure["term"] == "wild"
    assert re.fullmatch(r"loss term 'wild' is nan at step 5 of \d+", failure["reason"]), failure
    assert [row["epoch"] for row in io.read_jsonl(spec.directory(tmp_path) / "log.jsonl")] == [0]


def test_first_nonfinite_names_the_first_bad_step_and_not_total():
    nan, inf = float("nan"), float("inf")
    names = ["ce", "wild", "total"]
    per_step = torch.tensor([[1.0, 0.0, 1.0], [1.0, nan, nan], [nan, nan, nan]], dtype=torch.float64)
    assert first_nonfinite(names, per_step)[0::2] == ("wild", 1)
    per_step = torch.tensor([[1.0, 0.0, 1.0], [2.0, 3.0, inf]], dtype=torch.float64)  # the sum overflowed
    assert first_nonfinite(names, per_step) == ("total", inf, 1)
    assert first_nonfinite(names, torch.ones(4, 3, dtype=torch.float64)) is None


def test_an_exception_in_epoch_one_is_recorded_as_epoch_one(tmp_path, tiny_suite, toy_plugins):
    suite = tiny_suite("plugins=[RaisesInEpochOne]", epochs=3)
    spec = RunSpec(suite.name, "RaisesInEpochOne", 0, suite.lrs[0])
    assert train_run(suite, spec, tmp_path).status == "failed"
    failure = json.loads((spec.directory(tmp_path) / "result.json").read_text())["failure"]
    assert failure["reason"] == "ValueError: broken in epoch 1"
    assert failure["epoch"] == 1 and failure["stage"] == "training"


def test_running_epoch_reads_the_log():
    assert running_epoch([], 5) == (0, "training")
    assert running_epoch([{"epoch": 0}, {"epoch": 1}], 5) == (2, "training")
    assert running_epoch([{"epoch": e} for e in range(5)], 5) == (None, "evaluation")


def test_a_worker_killed_in_epoch_two_is_recorded_as_epoch_two(tmp_path, tiny_suite):
    suite = tiny_suite(epochs=4)
    spec = RunSpec(suite.name, "LPC", 0, suite.lrs[0])
    run_dir = spec.directory(tmp_path)
    run_dir.mkdir(parents=True)
    (run_dir / "log.jsonl").write_text('{"epoch": 0}\n{"epoch": 1}\n')
    outcome = record_lost_run(spec, run_dir, "killed", "worker process was killed by SIGKILL")
    assert outcome.status == "failed" and outcome.result["failure"]["epoch"] == 2


# ----- bench attack on runs whose plugin is gone ----------------------------------------------

def test_attack_on_runs_of_an_unregistered_plugin_is_one_error_line(tmp_path, tiny_suite, toy_plugins, capsys):
    from bench.cli.main import main
    suite = tiny_suite("plugins=[RaisesInEpochOne]", epochs=1)
    spec = RunSpec(suite.name, "RaisesInEpochOne", 0, suite.lrs[0])
    assert train_run(suite, spec, tmp_path / "runs").status == "done"
    PLUGINS.remove("RaisesInEpochOne")  # a new process, without the module that registered it
    try:
        code = main(["attack", "--runs", str(tmp_path / "runs"), "--attacks", "fgsm", "--quiet"])
    finally:
        PLUGINS.add("RaisesInEpochOne", RaisesInEpochOne)
    captured = capsys.readouterr()
    assert code == 2 and "Traceback" not in captured.err
    (line,) = captured.err.strip().splitlines()
    assert line.startswith("error: plugin(s) not registered in this Python: 'RaisesInEpochOne' (1 run(s)")
    assert "lpc_bench.plugins" in line and "import the module" in line
    result = json.loads((spec.directory(tmp_path / "runs") / "result.json").read_text())
    assert "attacks" not in result["evaluations"]  # nothing attacked, nothing written


# ----- bench check against a runs tree --------------------------------------------------------

def test_check_against_the_committed_runs_tree(tmp_path):
    """The documented way to compare a rerun: `bench check --runs RERUN --against leaderboards/runs`.
    The committed tree against itself passes every comparison."""
    proc = run_cli(["check", "--suite", "digits", "--runs", str(REPO / "leaderboards" / "runs"),
                    "--against", str(REPO / "leaderboards" / "runs")], tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    last = proc.stdout.strip().splitlines()[-1]
    assert re.fullmatch(r"PASSED: \d+ passed, 0 failed, 0 skipped\.", last), last


def test_check_against_a_runs_tree_of_another_configuration_is_one_error_line(tmp_path, capsys):
    from bench.cli.main import main
    small = ["run", "--plugins", "NoPen", "--seeds", "0", "--no-report", "--quiet", "--set", "plugins=[NoPen]",
             "--set", "dataset.limit_train=200", "--set", "evaluation.evaluators=[]"]
    for out, epochs in (("a", 2), ("b", 3)):
        assert main([*small, "--out", str(tmp_path / out), "--set", f"recipe.epochs={epochs}"]) == 0
    capsys.readouterr()
    assert main(["check", "--runs", str(tmp_path / "a"), "--against", str(tmp_path / "a")]) == 0
    assert "PASSED" in capsys.readouterr().out
    assert main(["check", "--runs", str(tmp_path / "a"), "--against", str(tmp_path / "b")]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("error: ") and "different configuration" in line and "epochs" in line, line


def test_estimate_only_for_slurm_says_why_there_is_no_estimate(tmp_path, capsys):
    from bench.cli.main import main
    assert main(["run", "--executor", "slurm", "--estimate-only", "--out", str(tmp_path / "runs")]) == 0
    (line,) = capsys.readouterr().out.strip().splitlines()
    assert line.startswith("estimate: not measured for --executor slurm")
    assert not (tmp_path / "runs").exists()


def test_an_evaluator_that_fails_on_an_untrained_model_does_not_stop_the_estimate(tmp_path, tiny_suite):
    from bench.evaluation.hook import EVALUATORS, register_evaluator

    @register_evaluator("probe_fragile", kind="metric")
    def probe_fragile(ctx, opts):
        raise ValueError("needs a trained model")
    try:
        suite = tiny_suite("evaluation.evaluators=[probe_fragile]", "evaluation.settings={}", "plugins=[LPC]")
        est = estimate.estimate_sweep(suite, [RunSpec(suite.name, "LPC", 0, suite.lrs[0])], tmp_path)
    finally:
        EVALUATORS.remove("probe_fragile")
    assert est is not None and est.evaluators_s is None and est.train_s > 0
    assert ("evaluators not included (timing them on an untrained model failed: ValueError: needs a trained "
            "model)") in est.line(suite)
