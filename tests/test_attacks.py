"""The attack harness against independent oracles.

* Affine classifiers: the minimal L2 perturbation out of class y is the closed form
  min_k (f_y − f_k)/‖w_y − w_k‖₂ (L∞: with ‖·‖₁), computed here with numpy. DeepFool must
  land on it within its overshoot; no verified attack may ever beat it (soundness), and
  the minimum-norm attacks must come close (strength).
* Trained networks: our per-input ρ must match foolbox's L2DeepFool run with all classes
  (same overshoot-on-the-accumulated-perturbation semantics, same 1e-4 step slack).
* Every "flipped" input is re-classified here, independently of the harness.
"""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from torch import nn

from bench.attacks import ATTACKS, AttacksOptions, DeepFoolOptions, deepfool
from bench.attacks.attack_evaluators import attacks_evaluator, deepfool_evaluator
from bench.attacks.library import MethodOptions
from bench.attacks.methods import attack_guard, register_attack
from bench.core.errors import BenchError
from bench.evaluation.hook import evaluator_options
from bench.core.typed import from_dict

from attack_helpers import affine_problem, closed_form, make_ctx, one_thread, reclassify, trained  # noqa: F401 (autouse)


# ---------------------------------------------------------------------- DeepFool oracles
def test_affine_deepfool_reaches_closed_form():
    model, _, x, y = affine_problem()
    y = y.clone()
    y[:4] = (y[:4] + 1) % 5                                 # four inputs the model gets wrong
    res = deepfool(model, x, y)
    d, nearest = closed_form(model, x, y)
    for i, status in enumerate(res.status):
        if i < 4:
            assert status == "misclassified" and math.isnan(res.norm[i]) and res.iterations[i] == 0
            continue
        assert status == "flipped"
        # one step to the nearest hyperplane (+1e-4), then the accumulated step × 1.02
        assert res.iterations[i] == 1
        assert d[i] <= res.norm[i] <= 1.02 * (d[i] + 1e-4) * (1 + 1e-9)
        # (up to the 1e-8 floor guarding the gradient-norm divisions)
        assert res.norm[i] == pytest.approx(1.02 * (d[i] + 1e-4), rel=1e-7)
        # along w_k − w_y of the closed-form nearest class
        r = (res.x_adv[i] - x[i].float()).flatten().double()
        w = model[1].weight.detach()
        direction = (w[nearest[i]] - w[y[i]]).double()
        assert torch.nn.functional.cosine_similarity(r, direction, dim=0) > 1 - 1e-6
    assert res.final_pred[4:].ne(y[4:]).all()
    assert torch.equal(reclassify(model, res.x_adv)[4:], res.final_pred[4:])


def test_affine_top_k_never_beats_all_classes():
    model, _, x, y = affine_problem(k=8, seed=1)
    full = deepfool(model, x, y)
    top2 = deepfool(model, x, y, candidates=2)
    both = full.flipped & top2.flipped
    assert both.sum() > 0.8 * len(y)
    assert (top2.norm[both] >= full.norm[both] * (1 - 1e-9)).all()
    assert full.candidates == 8 and top2.candidates == 2


@pytest.mark.parametrize("head", ["softmax", "cosine"])
def test_matches_foolbox_all_candidates(head):
    import foolbox as fb
    model, x, y = trained(head)
    ours = deepfool(model, x, y, overshoot=0.02, max_iter=50)
    fmodel = fb.PyTorchModel(model, bounds=(0, 1), device="cpu")
    attack = fb.attacks.L2DeepFoolAttack(steps=50, candidates=10, overshoot=0.02)
    _, adv, _ = attack(fmodel, x, fb.criteria.Misclassification(y), epsilons=None)
    correct = reclassify(model, x) == y
    fb_flipped = correct & (reclassify(model, adv) != y)
    fb_rho = ((adv - x).flatten(1).norm(dim=1) / x.flatten(1).norm(dim=1)).double()
    both = ours.flipped & fb_flipped
    assert both.sum() >= 0.9 * correct.sum()
    rel = (ours.rho[both] - fb_rho[both]).abs() / fb_rho[both]
    assert rel.max() <= 1e-3, f"max relative difference {rel.max():.2e}"
    # statuses against an independent re-classification of the final, clamped inputs
    final = reclassify(model, ours.x_adv)
    assert ours.x_adv.min() >= 0 and ours.x_adv.max() <= 1
    for i, status in enumerate(ours.status):
        expected = "misclassified" if not correct[i] else ("flipped" if final[i] != y[i] else "not_flipped")
        assert status == expected
    # many digit pixels sit at 0: the clamp must not stop the accumulated perturbation
    assert (x == 0).float().mean() > 0.3 and ours.status.count("not_flipped") == 0


def test_every_plugin_flips_and_verifies():
    from bench.suites import load_suite
    from bench.training.trainer import build_model, get_data
    suite = load_suite("digits")
    data = get_data(suite)
    x = data.test_x[:40].float() / data.pixel_scale
    y = data.test_y[:40]
    for plugin in suite.plugins:
        model = build_model(suite, plugin, data, seed=0).eval()
        res = deepfool(model, x, y, max_iter=20)
        final = reclassify(model, res.x_adv)
        flipped = res.flipped
        assert (final[flipped] != y[flipped]).all(), plugin
        assert res.status.count("flipped") > 0, plugin
        assert all(p.grad is None for p in model.parameters()), plugin
        assert all(p.requires_grad for p in model.parameters()), plugin


def test_batches_and_jacobian_paths_do_not_change_results():
    model, x, y = trained("softmax")
    whole = deepfool(model, x, y)
    parts = deepfool(model, x, y, batch_size=7)
    vmapped = deepfool(model, x[:60], y[:60], batched_jacobian=True)   # the CUDA default path
    assert whole.status == parts.status and whole.status[:60] == vmapped.status
    ok = whole.flipped
    assert torch.allclose(whole.rho[ok], parts.rho[ok], rtol=1e-4)
    assert torch.allclose(whole.rho[:60][ok[:60]], vmapped.rho[ok[:60]], rtol=1e-4)


# ------------------------------------------------------------------------------ evaluators
def test_deepfool_evaluator_keys_and_aggregates():
    model, codes, x, y = affine_problem(n=30, dtype=torch.float32)
    labels = y.clone()
    labels[0] = (labels[0] + 1) % 5
    out = deepfool_evaluator(make_ctx(model, codes, labels), DeepFoolOptions())
    for key in ("rho_mean", "rho_median", "rho_std", "norm_mean", "norm_median", "iterations_mean", "n_inputs",
                "n_flipped", "n_not_flipped", "n_already_misclassified", "candidates", "overshoot", "max_iter",
                "reference", "per_input"):
        assert key in out
    assert out["reference"] == "true label" and out["n_inputs"] == 30
    assert out["n_already_misclassified"] == 1 and out["n_flipped"] == 29 and out["n_not_flipped"] == 0
    rho = [r for r, s in zip(out["per_input"]["rho"], out["per_input"]["status"]) if s == "flipped"]
    assert out["rho_mean"] == pytest.approx(float(np.mean(rho)))
    assert out["per_input"]["norm"][0] is None and out["per_input"]["status"][0] == "misclassified"
    json.dumps(out)


def test_attacks_are_sound_and_strong_on_affine_model():
    """No verified attack can beat the closed form; the min-norm ones get close to it."""
    model, codes, x, y = affine_problem(n=40, seed=2, scale=0.1, dtype=torch.float32)
    # DDN moves its norm by ×(1 ± γ) per step: start it near the scale of the distances
    opts = from_dict(AttacksOptions, {
        "methods": ["fgsm", "pgd-linf", "pgd-l2", "apgd-ce-l2", "ddn-l2", "deepfool-foolbox", "hsj-l2"],
        "eps_l2": [0.14, 0.165, 0.19], "eps_linf": [0.024, 0.028],
        "params": {"hsj-l2": {"max_inputs": 8, "steps": 6}, "ddn-l2": {"steps": 80, "init_epsilon": 0.2}}})
    out = attacks_evaluator(make_ctx(model, codes, y), opts)
    d2, _ = closed_form(model, x.float(), y)
    dinf, _ = closed_form(model, x.float(), y, norm="Linf")
    assert out["clean_accuracy"] == 1.0
    for eps in (0.14, 0.165, 0.19):
        acc = out["robust_accuracy"]["L2"][f"{eps:g}"]
        assert acc >= np.mean(d2 > eps) - 1e-9                    # soundness
        assert acc <= np.mean(d2 > 0.8 * eps) + 1e-9              # strength
        assert 0 < np.mean(d2 > eps) < 1                          # the grid is informative
    for eps in (0.024, 0.028):
        acc = out["robust_accuracy"]["Linf"][f"{eps:g}"]
        assert acc >= np.mean(dinf > eps) - 1e-9
        assert acc <= np.mean(dinf > 0.8 * eps) + 1e-9
    for name in ("ddn-l2", "deepfool-foolbox", "hsj-l2"):
        norms = out["per_attack"][name]["per_input_norm"]
        found = [(v, d) for v, d in zip(norms, d2) if v is not None]
        assert found and all(v >= d * (1 - 1e-5) for v, d in found), name
    ratio = [v / d for v, d in zip(out["per_attack"]["ddn-l2"]["per_input_norm"], d2)]
    assert np.median(ratio) < 1.2        # DDN moves in ×(1 ± 0.05) steps of its norm
    curve = out["min_norm"]["ddn-l2"]["curve"]
    assert curve[0] == [0.0, 1.0] and all(a[1] >= b[1] for a, b in zip(curve, curve[1:]))
    assert all(p.grad is None and p.requires_grad for p in model.parameters()) and not model.training
    json.dumps(out)


def test_unverified_adversarials_never_count():
    """A method returning over-budget or NaN inputs breaks nothing (the library is not trusted)."""
    @register_attack("test-over-budget", norm="L2", kind="fixed_eps", library="test", options=MethodOptions)
    def over_budget(model, x, y, eps, opts, info):
        w = model[1].weight.detach()
        with torch.no_grad():
            runner_up = model(x).topk(2, 1).indices[:, 1]
        direction = (w[runner_up] - w[y]).view_as(x)
        direction = direction / direction.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
        return (x + 50 * eps * direction).clamp(0, 1)

    @register_attack("test-nan", norm="L2", kind="min_norm", library="test", options=MethodOptions)
    def nan_attack(model, x, y, eps, opts, info):
        return torch.full_like(x, math.nan)

    try:
        model, codes, x, y = affine_problem(n=20, seed=3, dtype=torch.float32)
        opts = from_dict(AttacksOptions, {"methods": ["test-over-budget", "test-nan"], "eps_l2": [0.05]})
        out = attacks_evaluator(make_ctx(model, codes, y), opts)
        assert out["robust_accuracy"]["L2"]["0.05"] == 1.0
        assert out["per_attack"]["test-over-budget"]["n_over_budget"] > 0
        assert out["per_attack"]["test-nan"]["n_nonfinite"] == 20
        assert out["per_attack"]["test-nan"]["median_norm"] is None
    finally:
        ATTACKS.remove("test-over-budget")
        ATTACKS.remove("test-nan")


# ------------------------------------------------------------------------------ bad input
def test_bad_options_are_one_line_errors():
    with pytest.raises(BenchError, match="unknown attack 'pgd-l3'; did you mean"):
        evaluator_options("attacks", {"attacks": {"methods": ["pgd-l3"]}})
    with pytest.raises(BenchError, match="Linf ε = 2 is out of range"):
        evaluator_options("attacks", {"attacks": {"eps_linf": [2.0]}})
    with pytest.raises(BenchError, match="out of range"):
        evaluator_options("attacks", {"attacks": {"eps_l2": [-0.5]}})
    with pytest.raises(BenchError, match="steps"):
        evaluator_options("attacks", {"attacks": {"methods": ["pgd-l2"], "params": {"pgd-l2": {"steps": 0}}}})
    with pytest.raises(BenchError, match="unknown key"):
        evaluator_options("attacks", {"attacks": {"methods": ["pgd-l2"], "params": {"pgd-l2": {"stepz": 3}}}})
    with pytest.raises(BenchError, match="overshoot"):
        evaluator_options("deepfool", {"deepfool": {"overshoot": -1}})
    with pytest.raises(BenchError, match="cannot read the budget '8/0'"):
        evaluator_options("attacks", {"attacks": {"eps_linf": ["8/0"]}})
    # budgets may be written as fractions of the pixel range
    opts = evaluator_options("attacks", {"attacks": {"eps_l2": ["36/255", 0.5], "eps_linf": ["8/255"]}})
    assert opts.eps_l2 == (36 / 255, 0.5) and opts.eps_linf == (8 / 255,)


def test_suite_with_bad_attack_settings_fails_on_load():
    from bench.suites import load_suite
    with pytest.raises(BenchError, match="evaluation.settings.attacks.*Linf ε = 2 is out of range"):
        load_suite("digits", ["evaluation={evaluators: [deepfool, attacks], settings: {attacks: {eps_linf: [2]}}}"])
    with pytest.raises(BenchError, match="unknown attack 'square'; did you mean"):
        load_suite("digits", ["evaluation={evaluators: [attacks], settings: {attacks: {methods: [square]}}}"])


def test_list_shows_evaluators_and_methods(capsys):
    from bench.cli.main import main
    assert main(["list", "attacks"]) == 0
    out = capsys.readouterr().out
    rows = [line.split(None, 1) for line in out.splitlines()[1:]]   # "  name  its docstring's first line"
    assert out.startswith("attacks:\n") and [r[0] for r in rows[:6]] == [
        "deepfool", "attacks", "best_known", "attack_unit_test", "reliability", "attack_collapse"]
    for name in ("fgsm", "pgd-linf", "pgd-l2", "cw-l2", "apgd-ce-linf", "apgd-t-l2", "square-linf",
                 "deepfool-foolbox", "deepfool-l2", "fmn-l2", "ddn-l2", "hsj-l2", "apgd-dlr-l2", "apgd-dlr-linf",
                 "autoattack-l2", "autoattack-linf", "ddn-l2-advlib", "fmn-l2-advlib", "fmn-linf-advlib"):
        assert len(dict(rows).get(name, "")) > 10, name


def test_l2_budget_beyond_the_input_cube_is_refused_before_attacking():
    calls = []

    @register_attack("test-spy", norm="L2", kind="fixed_eps", library="test", options=MethodOptions)
    def spy(model, x, y, eps, opts, info):
        calls.append(eps)
        return x

    try:
        model, codes, x, y = affine_problem(n=10, dtype=torch.float32)
        opts = from_dict(AttacksOptions, {"methods": ["test-spy"], "eps_l2": [0.5, 9.0]})  # √64 = 8
        with pytest.raises(BenchError, match="L2 ε = 9 is out of range"):
            attacks_evaluator(make_ctx(model, codes, y), opts)
        assert calls == []
    finally:
        ATTACKS.remove("test-spy")


def test_inputs_outside_unit_range_are_refused():
    model, codes, x, y = affine_problem(n=10, dtype=torch.float32)
    with pytest.raises(BenchError, match=r"must lie in \[0, 1\]"):
        deepfool(model, x * 3, y)
    with pytest.raises(BenchError, match=r"must lie in \[0, 1\]"):
        attacks_evaluator(make_ctx(model, codes, y, pixel_scale=100.0), AttacksOptions(methods=("fgsm",)))


def test_non_finite_logits_are_refused():
    class Broken(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(64, 3)

        def forward(self, x):
            out = self.lin(x.flatten(1))
            return out.masked_fill(x.flatten(1)[:, :1] > 0.5, math.nan)

    model = Broken().eval()
    codes = torch.full((6, 1, 8, 8), 200, dtype=torch.uint8)
    y = torch.zeros(6, dtype=torch.long)
    with pytest.raises(BenchError, match="non-finite logits"):
        deepfool(model, codes.float() / 255, y)
    with pytest.raises(BenchError, match="non-finite logits"):
        attacks_evaluator(make_ctx(model, codes, y), AttacksOptions(methods=("fgsm",)))
    with pytest.raises(BenchError, match="non-finite logits"):
        deepfool_evaluator(make_ctx(model, codes, y), DeepFoolOptions())


def test_attack_guard_restores_state():
    model, x, y = trained("softmax")
    model.train()
    with attack_guard(model):
        assert not model.training
        assert not any(p.requires_grad for p in model.parameters())
        model(x).sum()  # nothing can accumulate
    assert model.training and all(p.requires_grad and p.grad is None for p in model.parameters())
    model.eval()


# ------------------------------------------------------------------------------ CLI
@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    from bench.suites import load_suite
    from bench.runs.folder import RunSpec
    from bench.training.trainer import train_run
    out = tmp_path_factory.mktemp("runs")
    suite = load_suite("digits", ["recipe.epochs=3", "plugins=[NoPen]",
                                  "evaluation={evaluators: [], subset_size: 80, subset_seed: 0}"])
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        outcome = train_run(suite, RunSpec("digits", "NoPen", 0, suite.lrs[0]), out, quiet=True)
    finally:
        torch.set_num_threads(before)
    assert outcome.status == "done"
    return out, out / "digits" / "NoPen" / f"seed0-lr{suite.lrs[0]:g}"


def test_cli_attack_adds_evaluations(trained_run):
    from bench.cli.main import main
    out, run_dir = trained_run
    before = json.loads((run_dir / "result.json").read_text())
    # attack_collapse and reliability bring best_known (and it deepfool and attacks) along
    rc = main(["attack", "--runs", str(out), "--attacks", "attack_collapse", "pgd-l2", "ddn-l2", "reliability",
               "--quiet", "--threads", "1"])
    assert rc == 0
    result = json.loads((run_dir / "result.json").read_text())
    ev = result["evaluations"]
    assert set(ev) >= {"deepfool", "attacks", "best_known", "reliability", "attack_collapse"}
    assert ev["deepfool"]["n_inputs"] == 80 and ev["deepfool"]["reference"] == "true label"
    assert set(ev["attacks"]["per_attack"]) == {"pgd-l2", "ddn-l2"}
    assert set(ev["attacks"]["robust_accuracy"]) == {"L2"}
    assert set(ev["attacks"]["robust_accuracy"]["L2"]) == {"0.141176", "0.5", "1"}
    assert ev["best_known"]["n_inputs"] == 80 and len(ev["best_known"]["per_input"]["norm_best"]) == 80
    assert ev["reliability"]["verdict"] in ("potentially unreliable", "no attack-failure indicator")
    assert ev["reliability"]["unreliable"] == bool(ev["reliability"]["reasons"])
    assert ev["reliability"]["unreliable_headline"] == (ev["reliability"]["verdict"] == "potentially unreliable")
    assert {f["check"] for f in ev["reliability"]["findings"]} >= {"convergence", "attack_unit_test"}
    assert ev["attack_collapse"]["conditions"]["clean"]["n"] == ev["best_known"]["n_correct"]
    assert {k: v for k, v in result.items() if k != "evaluations"} == \
           {k: v for k, v in before.items() if k != "evaluations"}


def test_cli_attack_orders_evaluators_by_requires():
    from bench.cli.cmd_attack import plan_evaluators
    from bench.suites.imports import load_builtin_evaluators
    load_builtin_evaluators()
    order, settings = plan_evaluators(["attack_collapse", "pgd-l2"], (), {})
    assert order == ("attacks", "deepfool", "best_known", "attack_collapse")   # requested first, then registry order
    assert settings["attacks"]["methods"] == ["pgd-l2"]
    order, _ = plan_evaluators(["reliability"], (), {})
    assert order == ("deepfool", "attacks", "best_known", "reliability")
    order, _ = plan_evaluators(None, ("deepfool", "attacks", "geometry"), {})
    assert order == ("deepfool", "attacks")
    order, _ = plan_evaluators(None, ("geometry",), {})
    assert order == ("deepfool", "attacks", "best_known", "attack_unit_test", "reliability", "attack_collapse")


def test_cli_unknown_attack_fails_cleanly(trained_run, capsys):
    from bench.cli.main import main
    out, run_dir = trained_run
    before = (run_dir / "result.json").read_text()
    rc = main(["attack", "--runs", str(out), "--attacks", "deepfool", "pgd-l3", "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and err[0].startswith("error: unknown attack 'pgd-l3'")
    assert (run_dir / "result.json").read_text() == before
