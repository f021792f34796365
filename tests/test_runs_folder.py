"""The run folder's one owner (bench.runs.folder): a run's identity (one definition for run,
report, baseline and check), its records, its state; and what evaluation saves for figures."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from bench.config.schema import EvalConfig
from bench.core.errors import BenchError
from bench.core.typed import from_dict
from bench.evaluation.figure_data import latent_histograms
from bench.runs import folder
from bench.runs.folder import RunSpec
from bench.suites import load_suite

FIXTURES = Path(__file__).resolve().parent / "fixtures"
_spec = importlib.util.spec_from_file_location("lpc_runs_factory", FIXTURES / "runs_factory.py")
factory = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(factory)


def config_of(suite, plugin="LPC"):
    return folder.run_config(suite, RunSpec(suite.name, plugin, suite.seeds[0], suite.lrs[0]))


# ----- identity ----------------------------------------------------------------------------
def test_prose_and_the_selection_of_runs_are_not_a_runs_identity():
    base = load_suite("digits")
    same = [load_suite("digits", ["paper_differences=[reworded]"]),
            load_suite("digits", ["description=another text", "dataset.root=/elsewhere", "runtime.device=cpu"]),
            load_suite("digits", ["seeds=[0, 7]", "plugins=[LPC, NoPen]", "lrs=[1e-3, 2e-3]"]),
            load_suite("digits", ["plugin_params.NoPen={}", "plugin_params.ArcFace.margin.end=0.7"])]
    for other in same:
        assert folder.same_identity(config_of(base), config_of(other))
    different = {"recipe.epochs=9": "suite.recipe.epochs", "plugin_params.LPC.gamma.cap=7": "plugin_params.gamma.cap",
                 "latent_widths.intermediate=12": "suite.latent_widths.intermediate",
                 "evaluation.subset_size=100": "suite.evaluation.subset_size"}
    for override, key in different.items():
        other = config_of(load_suite("digits", [override]))
        assert not folder.same_identity(config_of(base), other)
        assert folder.differences(folder.run_identity(config_of(base)), folder.run_identity(other)).startswith(key)


def test_a_reworded_suite_continues_its_runs_and_reports_them_as_one_configuration(tmp_path, tiny_suite):
    """The review's demonstration: rewording paper_differences made `bench run` refuse every
    existing run folder while the report called the runs identical. Both now agree."""
    from bench.training.trainer import train_run
    first = tiny_suite(epochs=1)
    spec = RunSpec(first.name, "NoPen", 0, first.lrs[0])
    run_dir = spec.directory(tmp_path)
    run_dir.mkdir(parents=True)
    (run_dir / folder.CONFIG).write_text(json.dumps(folder.run_config(first, spec)))   # an interrupted run
    reworded = tiny_suite("paper_differences=[one reworded line]", epochs=1)
    assert train_run(reworded, spec, tmp_path).status == "done"
    changed = tiny_suite("recipe.weight_decay=0.1", epochs=1)
    other = RunSpec(first.name, "NoPen", 1, first.lrs[0])
    other.directory(tmp_path).mkdir(parents=True)
    (other.directory(tmp_path) / folder.CONFIG).write_text(json.dumps(folder.run_config(first, other)))
    with pytest.raises(BenchError, match=r"different configuration \(suite.recipe.weight_decay: 5e-05 vs 0.1\)"):
        train_run(changed, other, tmp_path)
    records = folder.load_runs(tmp_path)
    assert folder.mixed_configs(records) == ""


def test_old_config_files_have_the_identity_of_their_current_form():
    """A config.json written when the recipe held the plugins' parameters is the same run as
    today's config with those values under plugin_params (bench.config.migrate)."""
    legacy = factory.suite_config(legacy=True)
    current = factory.suite_config()
    assert "gamma_start" in legacy["recipe"] and "plugin_params" not in legacy
    for plugin in ("LPC", "NoPen"):
        run = {"suite": "fixture-digits", "plugin": plugin, "seed": 0, "lr": 0.001}
        assert folder.same_identity({"suite": legacy, "run": run}, {"suite": current, "run": run})
    assert folder.suite_differences(legacy, current) == ""
    moved = factory.suite_config(legacy=True)
    moved["recipe"]["gamma_factor"] = 1.3
    assert folder.suite_differences(moved, current) == ("plugin_params.LPC-NARROW.gamma.factor: 1.3 vs 1.5, "
                                                        "plugin_params.LPC.gamma.factor: 1.3 vs 1.5")


def test_the_committed_runs_keep_their_identity():
    """The committed leaderboard runs (written with recipe.gamma_* etc.) are still the runs the
    current suites describe: `bench run` would continue them, not refuse them."""
    runs = Path(__file__).resolve().parents[1] / "leaderboards" / "runs"
    for name in ("digits", "digits-paper", "cifar10-small"):
        paths = sorted((runs / name).glob("*/*/config.json"))
        if not paths:
            pytest.skip(f"no committed {name} runs")
        current = load_suite(name)
        for path in paths:
            stored = json.loads(path.read_text())
            # the evaluators a suite runs may have grown since (they do not change what was
            # trained): compare with the current suite evaluated as the stored one was
            evaluation = from_dict(EvalConfig, stored["suite"]["evaluation"], "evaluation")
            suite = current.replace(evaluation=evaluation)
            assert folder.same_identity(stored, folder.run_config(suite, RunSpec(**stored["run"]))), path


# ----- records and state -------------------------------------------------------------------
def test_records_and_states(tmp_path):
    spec = RunSpec("s", "LPC", 0, 0.001)
    run_dir = spec.directory(tmp_path)
    run_dir.mkdir(parents=True)
    assert folder.read_result(run_dir) is None
    assert folder.run_state(run_dir) == {"state": "pending", "detail": "not started", "progress": "not started"}
    (run_dir / folder.LOG).write_text('{"epoch": 0}\n{"epoch": 1}\n')
    (run_dir / folder.CHECKPOINT).write_bytes(b"x")
    assert folder.run_state(run_dir)["detail"] == "epoch 2/None (resumes from its checkpoint)"
    result = folder.write_failure(run_dir, spec, "exception", "ValueError: broken", wall_s=3.0)
    # epochs 0 and 1 are logged: the run failed in epoch 2, while training
    assert result["failure"] == {"kind": "exception", "reason": "ValueError: broken", "epoch": 2, "stage": "training"}
    assert result["train_wall_s"] == 3.0 and result["schema"] == folder.RESULT_SCHEMA
    assert folder.failure_text(result) == "exception: ValueError: broken (epoch 2)"
    assert folder.run_state(run_dir)["state"] == "failed"
    assert folder.reset_failed(run_dir) and (run_dir / folder.FAILED_KEPT).exists()
    assert folder.read_result(run_dir) is None
    (run_dir / folder.RESULT).write_text("{not json")
    unreadable = folder.read_result(run_dir)
    assert unreadable["status"] == "failed" and unreadable["failure"]["kind"] == "unreadable"
    folder.write_result(run_dir, {"status": "done", "test_acc": 0.5})
    assert folder.run_state(run_dir) == {"state": "done", "detail": "test acc 0.5000"}
    assert folder.record_lost_run(spec, run_dir, "killed", "gone").status == "done"   # has a result: kept


# ----- figure data -------------------------------------------------------------------------
def test_latent_histograms_match_numpy():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(200, 20, generator=g)
    z[:, 3] = 0.25                                    # a collapsed dimension
    data = latent_histograms(z, split="train")
    assert (data["split"], data["dims"], data["n"], len(data["hist"])) == ("train", 20, 200, 16)
    for i, hist in enumerate(data["hist"]):
        values = z[:, i].double().numpy()
        if i == 3:
            assert hist["counts"] == [200] and hist["edges"] == [-0.25, 0.75]
            continue
        counts, edges = np.histogram(values, bins=60)
        assert hist["counts"] == counts.tolist()
        np.testing.assert_allclose(hist["edges"], edges, rtol=0, atol=0)
        assert sum(hist["counts"]) == 200
