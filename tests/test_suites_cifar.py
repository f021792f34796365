"""The paper's suites resolve exactly, and one cifar100 run trains end to end on CPU."""
from __future__ import annotations

from importlib import resources

import numpy as np
import pytest
import yaml

from bench.config.schema import Suite
from bench.suites import load_suite
from bench.config.params import resolve_params
from bench.runs.folder import plan_runs
from lpc import GeometricSchedule, LinearRamp
from bench.core.typed import from_dict

PAPER_PLUGINS = {"LPC", "LPC-WIDE", "LPC-NARROW", "LPC-SCL", "LPC-NoPen", "LinPen", "NonlinPen",
                 "SCL", "ArcFace", "CosFace", "NoPen"}
CONTROLS = {"PGD-AT", "TRADES"}   # positive controls at the literature's CIFAR setting
NO_EVALUATORS = ["evaluation.evaluators=[]", "evaluation.settings={}"]


def _raw(name: str) -> Suite:
    """The suite as written (no registry checks: evaluators may be added by other modules)."""
    text = (resources.files("bench") / "suites" / f"{name}.yaml").read_text()
    return from_dict(Suite, yaml.safe_load(text))


@pytest.mark.parametrize("name,backbone,widths", [
    ("cifar10", "resnet18", {"narrow": 16, "intermediate": 64, "wide": 128}),
    ("cifar100", "resnet50", {"narrow": 32, "intermediate": 128, "wide": 256}),
])
def test_paper_suite_is_the_papers_recipe(name, backbone, widths):
    suite = load_suite(name, NO_EVALUATORS)
    r = suite.recipe
    assert suite.dataset.name == name and suite.backbone.name == backbone and suite.latent_widths == widths
    assert set(suite.plugins) == PAPER_PLUGINS | CONTROLS and len(suite.plugins) == 13
    for control in CONTROLS:   # L∞ 8/255, α 2/255, 10 steps (TRADES β = 6)
        p = resolve_params(control, suite.plugin_params.get(control))
        assert (p.norm, p.eps, p.step_size, p.steps) == ("Linf", 8 / 255, 2 / 255, 10)
    assert resolve_params("TRADES", suite.plugin_params.get("TRADES")).beta == 6.0
    assert list(suite.seeds) == [0, 1, 2, 3, 4]
    assert np.allclose(suite.lrs, [1e-4 * 2**k for k in range(4)])
    assert (r.epochs, r.lr_decay_start, r.lr_decay_every, r.lr_decay_factor) == (800, 250, 50, 0.5)
    params = {p: resolve_params(p, suite.plugin_params.get(p)) for p in suite.plugins}
    for plugin in ("LPC", "LPC-WIDE", "LPC-NARROW", "LPC-NoPen", "LPC-SCL"):
        assert params[plugin].gamma == GeometricSchedule(1e-2, 1.05, 1e6) and params[plugin].per_dimension is False
    assert params["LPC-SCL"].supcon_temperature == params["SCL"].supcon_temperature == 0.05
    assert r.optimizer == "adamw" and r.weight_decay == 5e-5
    assert params["ArcFace"].margin == LinearRamp(0.1, 0.5, 40) and params["CosFace"].margin == LinearRamp(0.05, 0.25, 40)
    assert params["ArcFace"].scale == params["CosFace"].scale == LinearRamp(16.0, 64.0, 40)
    assert r.augment == "crop_flip" and r.crop_padding == 4 and r.batch_size == 128
    assert r.lr_factor(249) == 1 and r.lr_factor(250) == 0.5 and r.lr_factor(300) == 0.25
    gamma = params["LPC"].gamma
    assert gamma(377) < 1e6 and gamma(378) == pytest.approx(1e6) and gamma(799) == pytest.approx(1e6)
    assert suite.evaluation.subset_size == 1000
    assert _raw(name).evaluation.evaluators == (
        "deepfool", "attacks", "best_known", "attack_unit_test", "reliability", "attack_collapse", "geometry",
        "entropy", "binarity", "lipschitz")


def test_cifar100_resolves_to_260_runs():
    runs = plan_runs(load_suite("cifar100", NO_EVALUATORS))
    assert len(runs) == 260 == 13 * 4 * 5
    assert len({(r.plugin, r.seed, r.lr) for r in runs}) == 260
    assert {r.plugin for r in runs} == PAPER_PLUGINS | CONTROLS


def test_paper_suites_evaluators_are_registered():
    from bench.evaluation.hook import EVALUATORS
    from bench.suites.imports import load_builtin_evaluators
    load_builtin_evaluators()
    missing = [n for n in _raw("cifar10").evaluation.evaluators if n not in EVALUATORS]
    if missing:
        pytest.skip(f"evaluators not registered yet: {', '.join(missing)}")
    for name in ("cifar10", "cifar100", "cifar10-small"):
        load_suite(name)


def test_cifar10_small_suite_is_cpu_scale():
    suite = _raw("cifar10-small")
    assert suite.dataset.name == "imagefolder" and suite.backbone.name == "small_cnn"
    assert set(suite.plugins) == PAPER_PLUGINS | CONTROLS and len(plan_runs(suite)) == 13
    assert suite.recipe.augment == "crop_flip" and suite.evaluation.evaluators


def test_one_cifar100_run_trains_one_tiny_epoch_on_cpu(tmp_path):
    """The real suite's ResNet-50, plugin and recipe; only the data and the epoch count are tiny.

    The fake CIFAR-100 has all 100 class names (so the head has 100 outputs) but images of
    only 5 classes, 4 training images each, to keep a ResNet-50 epoch to seconds on CPU.
    """
    from bench.data.cifar import write_cifar_pickles
    from bench.core.io import read_json, read_jsonl
    from bench.executors.sweep import select_runs
    from bench.training.trainer import train_run

    rng = np.random.default_rng(0)
    train_y, test_y = np.arange(20) % 5, np.arange(10) % 5
    write_cifar_pickles(tmp_path / "data", "cifar100",
                        (rng.integers(0, 256, (20, 3, 32, 32), dtype=np.uint8), train_y),
                        (rng.integers(0, 256, (10, 3, 32, 32), dtype=np.uint8), test_y),
                        [f"c{i}" for i in range(100)])
    suite = load_suite("cifar100", NO_EVALUATORS + [
        f"dataset.root={tmp_path / 'data'}", "dataset.val_fraction=0.25",
        "recipe.epochs=1", "recipe.epoch_steps=1", "recipe.batch_size=16", "recipe.eval_batch_size=64", "runtime.device=cpu"])
    (spec,) = select_runs(suite, ["LPC-SCL"], [0])[:1]
    assert spec.lr == 1e-4 and suite.backbone.name == "resnet50"
    outcome = train_run(suite, spec, tmp_path / "runs")
    assert outcome.status == "done", outcome.result
    run_dir = spec.directory(tmp_path / "runs")
    result = read_json(run_dir / "result.json")
    assert result["latent"] == {"name": "z", "dim": 128}
    (row,) = read_jsonl(run_dir / "log.jsonl")
    assert row["epoch"] == 0 and {"loss_ce", "loss_penalty", "loss_supcon"} <= set(row) and "val_acc" in row
    assert 0 <= result["test_acc"] <= 1


def test_cifar100_without_data_is_one_line(tmp_path):
    from bench.cli.main import main
    import contextlib
    import io
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = main(["run", "--suite", "cifar100", "--data-root", str(tmp_path), "--set", "evaluation.evaluators=[]",
                     "--set", "evaluation.settings={}", "--out", str(tmp_path / "runs"), "--no-report"])
    assert code == 2
    (line,) = err.getvalue().strip().splitlines()
    assert line.startswith("error: CIFAR-100 not found") and "cifar-100-python" in line
