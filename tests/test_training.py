"""Runs: determinism, interruption and resume (in-process at every epoch boundary, and a real
``kill -9`` of ``python -m bench run``), idempotent reruns, diverging runs, atomic files."""
from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest
import torch

from bench.core import io
from bench.config.params import resolve_params
from bench.runs.folder import RunSpec
from bench.training.trainer import train_run

from conftest import kill_at_first_checkpoint, leftover_temporaries, read_run, run_cli, start_cli


def spec_for(suite, plugin: str = "LPC", seed: int = 0) -> RunSpec:
    return RunSpec(suite.name, plugin, seed, suite.lrs[0])


def checkpoint_tensors(run_dir: Path) -> dict:
    return torch.load(run_dir / "checkpoint.pt", weights_only=True)["model"]


def assert_same_checkpoint(a: Path, b: Path) -> None:
    sa, sb = checkpoint_tensors(a), checkpoint_tensors(b)
    assert sa.keys() == sb.keys()
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key


class Interrupt(BaseException):
    """Stands for a kill: not an Exception, so nothing records it as a failed run."""


# ----- determinism -----------------------------------------------------------------------
@pytest.mark.parametrize("plugin", ["LPC", "LPC-SCL", "ArcFace"])
def test_same_seed_gives_identical_results_in_two_folders(tmp_path, tiny_suite, plugin):
    suite = tiny_suite()
    spec = spec_for(suite, plugin)
    a = train_run(suite, spec, tmp_path / "a")
    b = train_run(suite, spec, tmp_path / "b")
    assert a.status == b.status == "done"
    result_a, log_a = read_run(spec.directory(tmp_path / "a"))
    result_b, log_b = read_run(spec.directory(tmp_path / "b"))
    assert result_a == result_b
    assert log_a == log_b and len(log_a) == suite.recipe.epochs
    assert_same_checkpoint(spec.directory(tmp_path / "a"), spec.directory(tmp_path / "b"))
    # and the comparison is not vacuous: another seed gives other numbers
    other = spec_for(suite, plugin, seed=1)
    train_run(suite, other, tmp_path / "a")
    assert read_run(other.directory(tmp_path / "a"))[1] != log_a


def test_log_rows_hold_every_loss_term_and_the_schedules(tmp_path, tiny_suite):
    suite = tiny_suite()
    spec = spec_for(suite, "LPC-SCL")
    train_run(suite, spec, tmp_path)
    rows = io.read_jsonl(spec.directory(tmp_path) / "log.jsonl")
    assert [r["epoch"] for r in rows] == [0, 1, 2]
    for r in rows:
        assert {"loss_ce", "loss_penalty", "loss_supcon", "loss_total", "gamma", "lr", "train_acc",
                "val_acc", "time_s"} <= set(r)
        assert r["loss_total"] == pytest.approx(r["loss_ce"] + r["loss_penalty"] + r["loss_supcon"], rel=1e-6)
        gamma = resolve_params("LPC-SCL", suite.plugin_params.get("LPC-SCL")).gamma
        assert r["gamma"] == pytest.approx(gamma(r["epoch"]))
        assert 0.0 <= r["train_acc"] <= 1.0


# ----- interruption and resume, in-process -----------------------------------------------
def reference_run(suite, spec, root: Path) -> tuple[dict, list[dict]]:
    assert train_run(suite, spec, root).status == "done"
    return read_run(spec.directory(root))


def assert_resumable_state(run_dir: Path) -> None:
    assert not (run_dir / "result.json").exists()
    assert leftover_temporaries(run_dir) == []


@pytest.mark.parametrize("checkpoint_every", [1, 2])
def test_interrupted_after_every_epoch_ends_identical(tmp_path, tiny_suite, checkpoint_every):
    """Stopped after each epoch in turn (last one included), resumed each time."""
    suite = tiny_suite(epochs=5, checkpoint_every=checkpoint_every)
    spec = spec_for(suite, "LPC")
    expected = reference_run(suite, spec, tmp_path / "ref")
    out = tmp_path / "resumed"
    for stop in range(suite.recipe.epochs):
        def on_epoch_end(epoch, stop=stop):
            if epoch == stop:
                raise Interrupt
        with pytest.raises(Interrupt):
            train_run(suite, spec, out, on_epoch_end=on_epoch_end)
        assert_resumable_state(spec.directory(out))
    assert train_run(suite, spec, out).status == "done"
    assert read_run(spec.directory(out)) == expected
    assert_same_checkpoint(spec.directory(out), spec.directory(tmp_path / "ref"))
    # provenance keeps the first start and lists every resumption with the epoch it resumed at
    provenance = json.loads((spec.directory(out) / "provenance.json").read_text())
    resumed_at = [r["epoch"] for r in provenance["resumed"]]
    assert resumed_at == sorted(resumed_at) and resumed_at[0] >= 1 and provenance["started"] <= provenance["resumed"][0]["at"]


@pytest.mark.parametrize("plugin", ["ArcFace", "LPC-SCL"])
def test_resumed_after_the_final_checkpoint_reports_the_final_schedules(tmp_path, tiny_suite, plugin):
    """Killed after the last checkpoint but before result.json: nothing left to train, and the
    result (inference scale of ArcFace, final γ) must still be the uninterrupted run's."""
    suite = tiny_suite(epochs=3, checkpoint_every=3)
    spec = spec_for(suite, plugin)
    expected = reference_run(suite, spec, tmp_path / "ref")

    def on_epoch_end(epoch):
        if epoch == suite.recipe.epochs - 1:
            raise Interrupt
    with pytest.raises(Interrupt):
        train_run(suite, spec, tmp_path / "resumed", on_epoch_end=on_epoch_end)
    assert train_run(suite, spec, tmp_path / "resumed").status == "done"
    assert read_run(spec.directory(tmp_path / "resumed")) == expected


def test_killed_between_log_line_and_checkpoint(tmp_path, tiny_suite, monkeypatch):
    """The log is ahead of the checkpoint, and its last line is cut: both are repaired."""
    suite = tiny_suite(epochs=4, checkpoint_every=2)
    spec = spec_for(suite, "LPC")
    expected = reference_run(suite, spec, tmp_path / "ref")
    real_save = io.atomic_torch_save
    calls = []

    def dying_save(path, obj):
        calls.append(obj["epoch"])
        if obj["epoch"] == 4:            # the final checkpoint: log row 3 is already written
            raise Interrupt
        real_save(path, obj)
    monkeypatch.setattr(io, "atomic_torch_save", dying_save)
    with pytest.raises(Interrupt):
        train_run(suite, spec, tmp_path / "resumed")
    monkeypatch.setattr(io, "atomic_torch_save", real_save)
    run_dir = spec.directory(tmp_path / "resumed")
    assert [r["epoch"] for r in io.read_jsonl(run_dir / "log.jsonl")] == [0, 1, 2, 3]
    with open(run_dir / "log.jsonl", "a") as fh:
        fh.write('{"epoch": 4, "loss_t')    # a line cut by the kill
    assert_resumable_state(run_dir)
    assert train_run(suite, spec, tmp_path / "resumed").status == "done"
    assert read_run(run_dir) == expected


def test_rerunning_a_completed_run_skips_it(tmp_path, tiny_suite):
    suite = tiny_suite(epochs=2)
    spec = spec_for(suite, "NoPen")
    assert train_run(suite, spec, tmp_path).status == "done"
    run_dir = spec.directory(tmp_path)
    before = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in run_dir.iterdir()
              if p.name != "run.lock"}
    again = train_run(suite, spec, tmp_path)
    assert again.status == "skipped" and again.result["status"] == "done"
    after = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in run_dir.iterdir()
             if p.name != "run.lock"}
    assert after == before


def test_a_changed_configuration_in_the_same_folder_is_refused(tmp_path, tiny_suite):
    from bench.core.errors import BenchError
    suite = tiny_suite(epochs=2)
    spec = spec_for(suite, "NoPen")
    with pytest.raises(Interrupt):
        train_run(suite, spec, tmp_path, on_epoch_end=lambda e: (_ for _ in ()).throw(Interrupt()))
    with pytest.raises(BenchError, match="different configuration"):
        train_run(tiny_suite(epochs=3), spec, tmp_path)


def test_run_folder_contents(tmp_path, tiny_suite):
    suite = tiny_suite(epochs=2)
    spec = spec_for(suite, "LPC")
    train_run(suite, spec, tmp_path)
    run_dir = spec.directory(tmp_path)
    assert run_dir == tmp_path / "digits" / "LPC" / "seed0-lr0.001"
    names = {p.name for p in run_dir.iterdir()}
    assert {"config.json", "provenance.json", "log.jsonl", "checkpoint.pt", "result.json"} <= names
    config = json.loads((run_dir / "config.json").read_text())
    assert config["run"] == spec.as_dict() and config["suite"]["recipe"]["epochs"] == 2
    assert "runtime" not in config["suite"]
    state = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    assert state["epoch"] == 2 and {"model", "optimizer"} <= set(state)
    result = json.loads((run_dir / "result.json").read_text())
    assert result["status"] == "done" and 0.0 <= result["test_acc"] <= 1.0
    assert result["latent"] == {"name": "z", "dim": suite.latent_widths["intermediate"]}
    provenance = json.loads((run_dir / "provenance.json").read_text())
    assert provenance.get("finished")


# ----- diverging runs --------------------------------------------------------------------
# AdamW steps of size ~lr: with lr = 1e30 the activations overflow in the first epoch. (A huge
# γ does not diverge: Adam normalises the gradient, and the penalty just collapses z.)
DIVERGING = ["lrs=[1e30]"]


def test_a_diverging_run_is_recorded_failed_with_epoch_and_reason(tmp_path, tiny_suite):
    suite = tiny_suite(*DIVERGING, epochs=3)
    spec = spec_for(suite, "LPC")
    outcome = train_run(suite, spec, tmp_path)
    assert outcome.status == "failed"
    run_dir = spec.directory(tmp_path)
    result = json.loads((run_dir / "result.json").read_text())
    assert result["status"] == "failed" and result["plugin"] == "LPC"
    failure = result["failure"]
    assert failure["epoch"] == 0
    assert "loss term" in failure["reason"] and ("inf" in failure["reason"] or "nan" in failure["reason"])
    assert leftover_temporaries(tmp_path) == []
    # a rerun does not train it again: the failure stays on record
    assert train_run(suite, spec, tmp_path).status == "skipped"


def test_nan_in_a_later_epoch_names_that_epoch(tmp_path, tiny_suite, monkeypatch):
    from registry.plugins.lpc_family import LPC
    real = LPC.loss_terms

    def poisoned(self, out, y):
        terms = real(self, out, y)
        if self.epoch == 1:
            terms["penalty"] = terms["penalty"] * float("nan")
        return terms
    monkeypatch.setattr(LPC, "loss_terms", poisoned)
    suite = tiny_suite(epochs=3)
    spec = spec_for(suite, "LPC")
    assert train_run(suite, spec, tmp_path).status == "failed"
    failure = json.loads((spec.directory(tmp_path) / "result.json").read_text())["failure"]
    # the NaN penalty poisons the weights, so several terms may be NaN by the epoch's end
    assert failure["epoch"] == 1 and failure["reason"].startswith("loss term '") and "nan" in failure["reason"]


def test_the_sweep_goes_on_after_a_diverging_run(tmp_path, tiny_suite, monkeypatch):
    from bench.executors.sweep import run_sweep, select_runs
    from registry.plugins.lpc_family import LPC
    real = LPC.loss_terms
    monkeypatch.setattr(LPC, "loss_terms", lambda self, out, y: {k: v * float("nan") for k, v in real(self, out, y).items()})
    suite = tiny_suite("plugins=[LPC, NoPen]", "seeds=[0]", epochs=2)
    outcomes = run_sweep(suite, select_runs(suite), tmp_path, quiet=True)
    assert [(o.spec.plugin, o.status) for o in outcomes] == [("LPC", "failed"), ("NoPen", "done")]
    assert json.loads((outcomes[1].spec.directory(tmp_path) / "result.json").read_text())["status"] == "done"
    assert leftover_temporaries(tmp_path) == []


# ----- atomic files ----------------------------------------------------------------------
def test_an_interrupted_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "result.json"
    io.atomic_write_json(target, {"a": 1})

    def half_then_die(fh):
        fh.write(b'{"a": 2, "b"')
        raise Interrupt
    with pytest.raises(Interrupt):
        io._atomic_write(target, half_then_die)
    assert json.loads(target.read_text()) == {"a": 1}
    assert leftover_temporaries(tmp_path) == []
    io.atomic_write_json(tmp_path / "new.json", {"x": float("nan")})
    assert json.loads((tmp_path / "new.json").read_text()) == {"x": "nan"}   # strict JSON, no NaN token


# ----- a real kill -9 of the CLI ---------------------------------------------------------
KILL_OVERRIDES = ["dataset.limit_train=256", "evaluation.evaluators=[]", "recipe.epochs=20",
                  "recipe.checkpoint_every=4", "recipe.log_every=2"]
KILL_RUN = ["run", "--suite", "digits", "--plugins", "LPC", "--seeds", "0", "--no-report",
            "--out", "out", *(arg for o in KILL_OVERRIDES for arg in ("--set", o))]


def test_kill_9_and_resume_gives_the_uninterrupted_result(tmp_path):
    """``python -m bench run`` killed with SIGKILL after its first checkpoint, then run again,
    ends with the same result.json (timing aside), log.jsonl (time_s aside) and weights as a
    run that was never interrupted (trained here, in-process, through the library)."""
    from bench.suites import load_suite
    victim = start_cli(KILL_RUN, tmp_path)
    run_dir = tmp_path / "out" / "digits" / "LPC" / "seed0-lr0.001"
    kill_at_first_checkpoint(victim, tmp_path, lambda: run_dir, poll=0.01)
    assert victim.returncode == -signal.SIGKILL
    assert not (run_dir / "result.json").exists(), "killed too late: the run had finished"
    epochs_done = torch.load(run_dir / "checkpoint.pt", weights_only=True)["epoch"]
    assert 4 <= epochs_done < 20

    # the uninterrupted reference, while nothing else runs
    suite = load_suite("digits", KILL_OVERRIDES)
    spec = RunSpec("digits", "LPC", 0, suite.lrs[0])
    expected = reference_run(suite, spec, tmp_path / "ref")

    resumed = run_cli(KILL_RUN, tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert "1 trained" in resumed.stdout
    result, log = read_run(run_dir)
    assert result["status"] == "done"
    assert (result, log) == expected
    assert [r["epoch"] for r in log] == list(range(20))
    assert_same_checkpoint(run_dir, spec.directory(tmp_path / "ref"))
    assert leftover_temporaries(tmp_path / "out") == []
