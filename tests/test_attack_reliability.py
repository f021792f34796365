"""Best-known perturbations, attack-failure checks, collapse under attack and AutoAttack,
against independent oracles.

* Affine classifier: the minimal L2 perturbation is the closed form
  min_k (f_y − f_k)/‖w_y − w_k‖₂; the best-known perturbation must equal it (DeepFool
  without overshoot lands on it) and no attack may beat it.
* Planted gradient masks on a trained MLP: logits × 10⁴ through a float32 log-softmax
  (cross-entropy gradients vanish, the DLR margin loss is scale-invariant) must trip the
  loss-consistency check; probabilities × 10⁴ through a float32 softmax then a log (every
  gradient vanishes; only the decision-based HopSkipJump still works) must trip the
  DeepFool-overstatement check; the plain MLP trips neither.
* AutoAttack: our adapter inside the ``attacks`` evaluator against ``pyautoattack`` called
  directly on the same model, inputs and seed: identical per-input robust flags.
"""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from torch import nn

from bench.attacks import AttacksOptions, DeepFoolOptions, ReliabilityOptions, leap_share
from bench.attacks.attack_evaluators import attacks_evaluator, deepfool_evaluator
from bench.attacks.autoattack import AutoAttackOptions, classify_flags, configure
from bench.attacks.best_known import best_known_evaluator
from bench.attacks.collapse import latent_statistics, noise_like
from bench.attacks.library import AttackInfo
from bench.attacks.reliability import reliability_evaluator
from bench.core.errors import BenchError
from bench.core.typed import from_dict
from bench.evaluation.hook import NoOptions, evaluator_options

from attack_helpers import (affine_problem, attacked_digits_context, closed_form, make_ctx,  # noqa: F401 (autouse)
                            one_thread, trained)


def attack_session(model, codes, labels, attacks: dict, deepfool: dict | None = None):
    """ctx with deepfool, attacks and best_known run, as a suite would."""
    ctx = make_ctx(model, codes, labels)
    ctx.results["deepfool"] = deepfool_evaluator(ctx, from_dict(DeepFoolOptions, deepfool or {}))
    ctx.results["attacks"] = attacks_evaluator(ctx, from_dict(AttacksOptions, attacks))
    ctx.results["best_known"] = best_known_evaluator(ctx, NoOptions())
    return ctx


MIN_NORM = {"ddn-l2": {"steps": 40, "init_epsilon": 0.5}, "fmn-l2": {"steps": 30, "max_stepsize": 0.1},
            "hsj-l2": {"max_inputs": 20, "steps": 8}}


def checked_attacks(eps_l2=(0.5, 1.0)) -> dict:
    """APGD-CE and APGD-DLR (same steps) and three minimum-norm attacks."""
    return {"methods": ["apgd-ce-l2", "apgd-dlr-l2", *MIN_NORM], "eps_l2": list(eps_l2),
            "params": {"apgd-ce-l2": {"steps": 20}, "apgd-dlr-l2": {"steps": 20}, **MIN_NORM}}


def checked_session(model, codes, labels):
    """The checked attacks on ``model``, then the reliability evaluator: (session, its verdict)."""
    ctx = attack_session(model, codes, labels, checked_attacks())
    return ctx, reliability_evaluator(ctx, ReliabilityOptions())


class LogSoftmaxScaled(nn.Module):
    """log_softmax(s · f(x)) in float32: a saturated softmax whose CE gradient is exactly 0."""

    def __init__(self, base: nn.Module, scale: float) -> None:
        super().__init__()
        self.base, self.scale = base, scale

    def forward(self, x):
        return torch.log_softmax(self.scale * self.base(x), dim=1)


class LogOfSaturatedSoftmax(nn.Module):
    """log(softmax(s · f(x)) + 1e-30) in float32: outputs on two plateaus, every gradient 0."""

    def __init__(self, base: nn.Module, scale: float) -> None:
        super().__init__()
        self.base, self.scale = base, scale

    def forward(self, x):
        return torch.log(torch.softmax(self.scale * self.base(x), dim=1) + 1e-30)


@pytest.fixture(scope="module")
def mlp():
    model, x, y = trained("softmax")
    return model, (x * 255).round().to(torch.uint8), y


# ------------------------------------------------------------------------------ best known
def test_best_known_equals_closed_form_on_affine_model():
    model, codes, x, y = affine_problem(n=40, seed=2, scale=0.1, dtype=torch.float32)
    labels = y.clone()
    labels[:3] = (labels[:3] + 1) % 5            # three inputs the model gets wrong
    eps_l2 = [0.14, 0.165, 0.19]
    ctx = attack_session(model, codes, labels, {
        "methods": ["pgd-l2", "apgd-dlr-l2", "ddn-l2", "fmn-l2"], "eps_l2": eps_l2,
        "params": {"ddn-l2": {"steps": 80, "init_epsilon": 0.2}}}, deepfool={"overshoot": 0.0})
    out = ctx.results["best_known"]
    d, _ = closed_form(model, x.float(), labels)
    xn = x.flatten(1).double().norm(dim=1).numpy()
    per = out["per_input"]
    assert per["status"][:3] == ["misclassified"] * 3 and per["norm_best"][:3] == [None] * 3
    assert out["n_correct"] == 37 and out["n_unflipped"] == 0 and out["n_flipped"] == 37
    best = np.array(per["norm_best"][3:], dtype=float)
    # no verified adversarial beats the closed form; DeepFool without overshoot lands on it (+1e-4 step slack)
    assert np.all(best >= d[3:] * (1 - 1e-5))
    assert np.allclose(best, d[3:], rtol=1e-4, atol=2e-4)
    assert np.allclose(per["rho_best"][3:], d[3:] / xn[3:], rtol=1e-4, atol=1e-4)
    assert out["rho_best_mean"] == pytest.approx(float(np.mean(best / xn[3:])))
    assert out["rho_best_median"] == pytest.approx(float(np.median(best / xn[3:])))
    # best-known robust accuracy: the closed form's (inputs within 1e-3 of ε may go either way)
    correct = np.arange(40) >= 3
    for eps in eps_l2:
        ra = out["robust_accuracy"]["L2"][f"{eps:g}"]
        assert np.mean(correct & (d > eps + 1e-3)) <= ra <= np.mean(correct & (d > eps - 1e-3))
        # and never above any single attack's worst case
        assert ra <= ctx.results["attacks"]["robust_accuracy"]["L2"][f"{eps:g}"] + 1e-12
    # the best adversarial of each input is handed over in memory, at the reported norm
    art = ctx.artifacts["best_known"]
    norms = (art["adv"] - x.float()).flatten(1).double().norm(dim=1)
    assert torch.allclose(norms[3:], torch.tensor(best), rtol=1e-5, atol=1e-6)
    json.dumps(out)


def test_best_known_takes_the_per_input_minimum_over_sources():
    """Built from stored results alone: a fixed-ε success smaller than every min-norm attack wins."""
    from bench.attacks.best_known import best_known
    df = {"per_input": {"status": ["flipped", "flipped", "already_misclassified", "not_flipped"],
                        "norm": [1.0, 0.8, None, None]}}
    attacks = {"n_inputs": 4, "misclassified": [2], "eps": {"L2": [0.5, 0.9], "Linf": [0.1]}, "per_attack": {
        "ddn-l2": {"kind": "min_norm", "norm": "L2", "per_input_norm": [0.9, 0.85, None, None],
                   "per_input_linf": [0.3, 0.3, None, None]},
        "pgd-l2": {"kind": "fixed_eps", "norm": "L2", "successes": {
            "0.5": {"index": [], "l2": [], "linf": []},
            "0.9": {"index": [1], "l2": [0.7], "linf": [0.2]}}},
        "pgd-linf": {"kind": "fixed_eps", "norm": "Linf", "successes": {
            "0.1": {"index": [0], "l2": [2.5], "linf": [0.1]}}},
    }}
    out = best_known(df, attacks, np.array([2.0, 2.0, 2.0, 2.0]))
    per = out["per_input"]
    assert per["norm_best"] == [0.9, 0.7, None, None]
    assert per["source"] == ["ddn-l2", "pgd-l2@0.9", None, None]
    assert per["status"] == ["flipped", "flipped", "misclassified", "not_flipped"]
    assert per["norm_best_linf"] == [0.1, 0.2, None, None]      # the L∞ attack's witness counts there
    assert out["n_unflipped"] == 1 and out["n_correct"] == 3
    assert out["rho_best_mean"] == pytest.approx((0.45 + 0.35) / 2)
    assert out["rho_best_median_all"] is None or out["rho_best_median_all"] == pytest.approx(0.45)
    assert out["robust_accuracy"]["L2"] == {"0.5": 0.75, "0.9": 0.25}
    assert out["robust_accuracy"]["Linf"] == {"0.1": 0.5}
    with pytest.raises(BenchError, match="rerun `attacks`"):
        best_known(df, {**attacks, "per_attack": {"pgd-l2": {"kind": "fixed_eps", "norm": "L2"}}},
                   np.ones(4))


# ------------------------------------------------------------------------------ reliability
def test_plain_mlp_raises_no_masking_flag(mlp):
    model, codes, y = mlp
    ctx, out = checked_session(model, codes, y)
    checks = out["checks"]
    assert checks["loss_consistency"]["ran"] and not checks["loss_consistency"]["flag"]
    assert checks["deepfool_overstatement"]["flag"] is False
    assert not checks["unbounded_sanity"]["flag"] and not checks["convergence"]["flag"]
    assert out["unreliable"] is False and out["reasons"] == [] and out["verdict"] == "no attack-failure indicator"
    assert out["unreliable_headline"] is False and set(out["column_verdict"].values()) == {"ok"}
    # the unit test did not run and no AutoAttack was trimmed: "not measured", never a pass
    assert set(out["not_measured"]) == {"attack_unit_test", "trimmed_budget"}
    json.dumps(out)


def test_saturated_softmax_trips_loss_consistency(mlp):
    model, codes, y = mlp
    masked = LogSoftmaxScaled(model, 1e4).eval()
    ctx, out = checked_session(masked, codes, y)
    lc = out["checks"]["loss_consistency"]
    assert lc["flag"] and lc["max_gap"] > 0.3
    worst = lc["worst"]
    assert worst["robust_accuracy_ce"] > 0.8 > worst["robust_accuracy_margin"]
    assert out["unreliable"] and any(r.startswith("loss_consistency") for r in out["reasons"])
    # masked cross-entropy doubts the CE attacks' own RA; the worst case and best-known include DLR
    assert out["unreliable_headline"] is False
    failing = out["checks"]["unbounded_sanity"]["failing_attacks"]       # DDN follows CE: it fails too
    assert [k for k, v in out["column_verdict"].items() if v != "ok"] == [f"minnorm:{a}" for a in failing
                                                                          if a != "deepfool"]
    ce = [f for f in out["findings"] if f["check"] == "loss_consistency" and f["flag"]]
    assert any("attack:apgd-ce-l2:L2:1" in f["undermines"] and "ra_best:L2:1" in f["covered_by"] for f in ce)
    # the same margin attack on the unmasked model: masking did not change the model's decisions
    plain = attack_session(model, codes, y, checked_attacks()).results["attacks"]["per_attack"]["apgd-dlr-l2"]
    assert ctx.results["attacks"]["per_attack"]["apgd-dlr-l2"]["robust_accuracy"]["1"] == \
        pytest.approx(plain["robust_accuracy"]["1"], abs=0.05)


def test_flat_outputs_trip_deepfool_overstatement(mlp):
    model, codes, y = mlp
    masked = LogOfSaturatedSoftmax(model, 1e4).eval()
    ctx, out = checked_session(masked, codes, y)
    ov = out["checks"]["deepfool_overstatement"]
    # DeepFool sees zero gradients and flips nothing; HopSkipJump (labels only) still does
    assert ctx.results["deepfool"]["n_flipped"] == 0
    assert ov["flag"] and ov["share_above_1_1"] == 1.0 and ov["n_deepfool_failed_other_found"] == ov["n_compared"] > 0
    assert "deepfool" in out["checks"]["unbounded_sanity"]["failing_attacks"]
    assert any(r.startswith("deepfool_overstatement") for r in out["reasons"])
    # DeepFool's failure doubts DeepFool's numbers, not the best-known ones HopSkipJump supplies
    doubted = sorted(k for k, v in out["column_verdict"].items() if v != "ok")
    assert "df_overstatement" in doubted
    # DeepFool's own findings never doubt the best-known numbers; here every gradient is zero, so the
    # gradient min-norm attacks fail too and the headline is doubted by evidence about it
    for f in out["findings"]:
        if f["check"] == "deepfool_overstatement" or (f["check"] == "unbounded_sanity" and "rho" in f["undermines"]
                                                      and "rho_best*" not in f["undermines"]):
            assert not any(u.startswith(("rho_best", "ra_best")) for u in f["undermines"])
    assert out["unreliable_headline"] and "deepfool_overstatement" not in out["headline_doubted_by"]


def test_unbounded_sanity_catches_a_starved_attack(mlp):
    model, codes, y = mlp
    attacks = {"methods": ["ddn-l2", "fmn-l2"], "eps_l2": [0.5],
               "params": {"ddn-l2": {"steps": 2, "init_epsilon": 0.05}, "fmn-l2": {"steps": 30, "max_stepsize": 0.1}}}
    ctx = attack_session(model, codes, y, attacks)
    us = reliability_evaluator(ctx, ReliabilityOptions(convergence=False))["checks"]["unbounded_sanity"]
    assert us["flag"] and us["failing_attacks"] == ["ddn-l2"]
    assert us["min_norm_success"]["ddn-l2"]["success_rate"] < 0.5
    assert us["min_norm_success"]["fmn-l2"]["success_rate"] >= 0.98 and not us["min_norm_success"]["fmn-l2"]["flag"]
    # exempting the starved attack clears that part of the check
    exempt = reliability_evaluator(ctx, ReliabilityOptions(convergence=False, exempt=("ddn-l2",)))
    assert exempt["checks"]["unbounded_sanity"]["failing_attacks"] == []


def test_unbounded_sanity_catches_robust_accuracy_rising_with_eps():
    from bench.attacks.reliability import unbounded_sanity
    deepfool = {"n_flipped": 4, "n_not_flipped": 0}
    attacks = {"eps": {"L2": [0.25, 0.5, 1.0]}, "per_attack": {
        "pgd-l2": {"kind": "fixed_eps", "norm": "L2", "robust_accuracy": {"0.25": 0.9, "0.5": 0.5, "1": 0.75}}}}
    best = {"per_input": {"status": ["flipped"] * 4, "norm_best": [0.1] * 4, "x_norm": [1.0] * 4}}
    out = unbounded_sanity(deepfool, attacks, best, ReliabilityOptions())
    assert out["flag"] and out["rises"] == [{"attack": "pgd-l2", "norm": "L2", "from_eps": 0.5, "to_eps": 1.0,
                                             "robust_accuracy": [0.5, 0.75]}]


def test_convergence_reruns_the_most_useful_attack(mlp):
    model, codes, y = mlp
    # DDN starved at 6 steps: doubling them moves the median best-known norm a lot
    attacks = {"methods": ["ddn-l2"], "eps_l2": [0.5], "params": {"ddn-l2": {"steps": 6, "init_epsilon": 2.0}}}
    ctx = attack_session(model, codes, y, attacks, deepfool={"max_iter": 1})
    cv = reliability_evaluator(ctx, ReliabilityOptions())["checks"]["convergence"]
    assert cv["attack"] == "ddn-l2" and cv["steps"] == 6 and cv["steps_rerun"] == 12
    assert cv["relative_change"] > 0.05 and cv["flag"]
    assert cv["median_norm_after"] < cv["median_norm_before"]


def test_probability_outputs_are_flagged(mlp):
    model, codes, y = mlp

    class Probabilities(nn.Module):
        def forward(self, x):
            return torch.softmax(model(x), dim=1)

    ctx = make_ctx(Probabilities().eval(), codes, y)
    out = attacks_evaluator(ctx, from_dict(AttacksOptions, {
        "methods": ["apgd-ce-l2"], "eps_l2": [0.5], "max_inputs": 20, "params": {"apgd-ce-l2": {"steps": 5}}}))
    assert out["outputs_are_probabilities"] is True
    plain = attacks_evaluator(make_ctx(model, codes, y), from_dict(AttacksOptions, {
        "methods": ["apgd-ce-l2"], "eps_l2": [0.5], "max_inputs": 20, "params": {"apgd-ce-l2": {"steps": 5}}}))
    assert plain["outputs_are_probabilities"] is False
    from bench.attacks.reliability import library_flags
    assert library_flags(out)["flag"] and not library_flags(plain)["flag"]


def test_reliability_needs_its_inputs():
    model, codes, x, y = affine_problem(n=5, dtype=torch.float32)
    with pytest.raises(BenchError, match="reliability needs the deepfool, attacks, best_known"):
        reliability_evaluator(make_ctx(model, codes, y), ReliabilityOptions())
    with pytest.raises(BenchError, match="best_known needs the deepfool and attacks"):
        best_known_evaluator(make_ctx(model, codes, y), NoOptions())
    with pytest.raises(BenchError, match="min_success must be in"):
        evaluator_options("reliability", {"reliability": {"min_success": 2}})


# ------------------------------------------------------------------------------ collapse
def test_leap_share_oracles():
    rng = np.random.default_rng(0)
    means = rng.standard_normal((4, 3)) * 5
    y = np.arange(40) % 4
    assert leap_share(means[y], y, means) == 0.0                       # unperturbed: on their own vertex
    assert leap_share(means[(y + 1) % 4], y, means) == 1.0             # moved onto another class's mean
    halfway = np.where((np.arange(40) < 10)[:, None], means[(y + 1) % 4], means[y])
    assert leap_share(halfway, y, means) == 0.25
    stats = latent_statistics(means[(y + 1) % 4], y, (y + 1) % 4, means, means.mean(0), z_clean=means[y])
    assert stats["leap_share"] == 1.0 and stats["leap_to_prediction"] == 1.0 and stats["flip_share"] == 1.0
    assert stats["R_mean"] == 0.0                                      # sitting on another mean: R = 0
    clean = latent_statistics(means[y], y, y, means, means.mean(0))
    assert clean["leap_share"] == 0.0 and clean["nc1"] == 0.0 and clean["R_mean"] is None


def test_noise_keeps_the_requested_size():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(30, 1, 8, 8)
    x[:, :, :4] = 0.0                          # half the pixels on the lower bound
    size = torch.linspace(0.1, 1.0, 30)
    noisy = noise_like(x, size, "L2", g)
    got = (noisy - x).flatten(1).double().norm(dim=1)
    assert torch.allclose(got, size.double(), rtol=1e-3) and noisy.min() >= 0 and noisy.max() <= 1
    noisy = noise_like(x, torch.full((30,), 0.05), "Linf", g)
    assert torch.allclose((noisy - x).flatten(1).abs().amax(1), torch.full((30,), 0.05), atol=1e-6)


# ------------------------------------------------------------------------------ AutoAttack
@pytest.mark.parametrize("norm,eps", [("L2", 0.5), ("Linf", 0.06)])
def test_autoattack_adapter_matches_pyautoattack(mlp, norm, eps):
    from pyautoattack import AutoAttack
    model, codes, y = mlp
    codes, y = codes[:48], y[:48]
    x = codes.float() / 255
    # trimmed through the package's own public attributes, identically on both sides
    trim = {"targets": 3, "fab_targets": 2, "fab_steps": 20, "square_queries": 200}
    name = f"autoattack-{norm.lower()}"
    ctx = make_ctx(model, codes, y)
    key = f"eps_{norm.lower()}"
    ours = attacks_evaluator(ctx, from_dict(AttacksOptions, {"methods": [name], key: [eps], "seed": 3,
                                                             "params": {name: trim}}))
    entry = ours["per_attack"][name]
    broken = set(entry["successes"][f"{eps:g}"]["index"])
    with torch.no_grad():
        correct = model(x).argmax(1) == y
    ours_robust = [bool(correct[i]) and i not in broken for i in range(len(y))]

    direct = AutoAttack(model, norm=norm, eps=eps, seed=3, version="standard")
    direct.apgd_targeted.n_target_classes = 3
    direct.fab.n_target_classes = 2
    direct.fab.n_iter = 20
    direct.square.n_queries = 200
    _, y_adv = direct.run_standard_evaluation(x, y, batch_size=len(y))
    theirs = (y_adv == y).tolist()
    assert ours_robust == theirs
    assert 0 < sum(theirs) < int(correct.sum())          # informative: some broken, some robust
    assert entry["deviations"] and ours["deviations"][0].startswith(f"{name}: APGD-T 3 target classes")
    notes = entry["notes"][f"{eps:g}"]
    assert set(notes["flags"]) >= {"randomized", "probabilities", "zero_gradients", "square_beat_white_box"}
    assert not any(notes["flags"].values())
    after = notes["robust_accuracy_after"]
    assert after["apgd-ce"] >= after["apgd-t"] >= after["fab-t"] >= after["square"] == \
        pytest.approx(ours["per_attack"][name]["robust_accuracy"][f"{eps:g}"])


def test_autoattack_defaults_are_the_standard_version(mlp):
    from pyautoattack.autopgd_base import APGDAttack
    model, _, _ = mlp
    info = AttackInfo(num_classes=10, seed=0, device=torch.device("cpu"))
    aa = configure(model, "Linf", 8 / 255, AutoAttackOptions(), info)
    assert aa.attacks_to_run == ["apgd-ce", "apgd-t", "fab-t", "square"] and aa.version == "standard"
    assert (aa.apgd.n_iter, aa.apgd_targeted.n_iter, aa.apgd_targeted.n_target_classes) == (100, 100, 9)
    assert (aa.fab.n_iter, aa.fab.n_target_classes, aa.square.n_queries) == (100, 9, 5000)
    assert AutoAttackOptions().deviations(10) == []
    # fewer classes: targets bounded by K − 1, and recorded
    assert AutoAttackOptions().target_counts(5) == (4, 4)
    assert "APGD-T 4 target classes (standard: 9; the model has 5 classes)" in AutoAttackOptions().deviations(5)
    # trimmed iterations take the package's own checkpoint schedule
    aa = configure(model, "L2", 0.5, AutoAttackOptions(apgd_steps=20), info)
    ref = APGDAttack(model, n_iter=20, eps=0.5, norm="L2")
    for attack in (aa.apgd, aa.apgd_targeted):
        assert (attack.n_iter, attack.n_iter_2, attack.n_iter_min, attack.size_decr) == \
               (ref.n_iter, ref.n_iter_2, ref.n_iter_min, ref.size_decr)


def test_autoattack_flag_messages_are_classified():
    flags = classify_flags(["it seems that the output is a probability distribution, please be sure that "
                            "the logits are used! See flags_doc.md for details.",
                            "there are 3 points with zero gradient! This might lead to unreliable evaluation"])
    assert flags["probabilities"] and flags["zero_gradients"] and not flags["randomized"]


def test_too_few_classes_is_one_clear_error():
    model, codes, x, y = affine_problem(n=10, k=3, dtype=torch.float32)
    for methods, needed in ((["pgd-l2", "autoattack-l2"], "autoattack-l2 needs at least 4"),
                            (["apgd-t-l2"], "apgd-t-l2 needs at least 4")):
        with pytest.raises(BenchError, match=f"the model has 3 classes: {needed}"):
            attacks_evaluator(make_ctx(model, codes, y), from_dict(AttacksOptions, {"methods": methods}))
    two, codes2, _, y2 = affine_problem(n=10, k=2, dtype=torch.float32)
    with pytest.raises(BenchError, match="apgd-dlr-linf needs at least 3"):
        attacks_evaluator(make_ctx(two, codes2, y2), from_dict(AttacksOptions, {"methods": ["apgd-dlr-linf"]}))


def test_method_budget_subset_must_lie_on_the_grid():
    opts = evaluator_options("attacks", {"attacks": {"methods": ["autoattack-linf"], "eps_linf": ["2/255", "8/255"],
                                                     "params": {"autoattack-linf": {"eps": ["8/255"]}}}})
    assert opts.method_grid("autoattack-linf", opts.method_options("autoattack-linf")) == (8 / 255,)
    with pytest.raises(BenchError, match=r"eps: 0.1 not in eps_linf"):
        evaluator_options("attacks", {"attacks": {"methods": ["autoattack-linf"],
                                                  "params": {"autoattack-linf": {"eps": [0.1]}}}})
    with pytest.raises(BenchError, match="only fixed-ε attacks take budgets"):
        evaluator_options("attacks", {"attacks": {"methods": ["ddn-l2"], "params": {"ddn-l2": {"eps": [0.5]}}}})
    with pytest.raises(BenchError, match="square_queries must be > 0"):
        evaluator_options("attacks", {"attacks": {"methods": ["autoattack-l2"],
                                                  "params": {"autoattack-l2": {"square_queries": 0}}}})


def test_collapse_evaluator_on_a_trained_classifier(trained_classifier):
    from bench.attacks.collapse import CollapseOptions, attack_collapse_evaluator
    ctx = trained_classifier
    out = attack_collapse_evaluator(ctx, CollapseOptions(eps_l2=0.5))
    cond = out["conditions"]
    assert cond["clean"]["flip_share"] == 0.0
    assert cond["best_known"]["flip_share"] == 1.0 and cond["best_known"]["n"] == ctx.results["best_known"]["n_flipped"]
    # at the best-known perturbation the latents sit at a decision boundary: far less separated than clean
    assert cond["best_known"]["R_mean"] < cond["clean"]["R_mean"]
    assert cond["best_known"]["leap_share"] > cond["best_known_noise"]["leap_share"]
    assert cond["best_known_noise"]["norm_ratio"] == pytest.approx(1.0, abs=1e-3)
    assert set(cond) >= {"L2@0.5", "L2@0.5_noise"} and out["eps"] == {"L2": 0.5}
    json.dumps(out)
    with pytest.raises(BenchError, match=r"eps_l2 = 0.3 is not in"):
        attack_collapse_evaluator(ctx, CollapseOptions(eps_l2=0.3))


@pytest.fixture(scope="module")
def trained_classifier():
    """A Classifier (with forward_all) trained briefly on digits, with its evaluators run."""
    return attacked_digits_context("NoPen", [0.25, 0.5])


def test_best_known_ignores_nothing_silently(mlp):
    """Every correct input is counted: flipped + unflipped = correct, misclassified = the rest."""
    model, codes, y = mlp
    # one DeepFool step without overshoot stops short on a curved model; FGSM below one grey level
    ctx = attack_session(model, codes, y, {"methods": ["fgsm"], "eps_linf": [0.002]},
                         deepfool={"max_iter": 1, "overshoot": 0.0})
    out = ctx.results["best_known"]
    states = out["per_input"]["status"]
    assert out["n_flipped"] + out["n_unflipped"] == out["n_correct"] == len(states) - states.count("misclassified")
    assert out["n_unflipped"] > 0 and states.count("not_flipped") == out["n_unflipped"]
    assert all(v is None for v, s in zip(out["per_input"]["norm_best"], states) if s != "flipped")
    assert math.isfinite(out["rho_best_mean"])


def test_convergence_with_no_correct_input_is_not_measured(mlp):
    model, codes, y = mlp
    wrong = (y + 1) % 10                           # every label wrong: nothing to attack
    ctx = attack_session(model, codes[:20], wrong[:20], {"methods": ["ddn-l2"], "eps_l2": [0.5],
                                                          "params": {"ddn-l2": {"steps": 4}}})
    out = reliability_evaluator(ctx, ReliabilityOptions())
    cv = out["checks"]["convergence"]
    assert cv["ran"] is False and "no correct input" in cv["reason"]
    assert "convergence" in out["not_measured"] and "convergence" not in out["flagged"]
    assert out["unreliable_headline"] is False


def test_a_trimmed_autoattack_is_measured_against_the_standard_budget(mlp):
    """Trimmed to 1 APGD iteration and nothing else, AutoAttack misses inputs the standard
    version breaks; the finding names the AutoAttack number, and the best-known RA (DDN at 40
    steps) is not above the standard AutoAttack's on the same inputs."""
    model, codes, y = mlp
    trim = {"apgd_steps": 1, "targets": 1, "fab_targets": 1, "fab_steps": 1, "square_queries": 1}
    ctx = attack_session(model, codes[:60], y[:60], {
        "methods": ["ddn-l2", "autoattack-l2"], "eps_l2": [1.0],
        "params": {"ddn-l2": {"steps": 40, "init_epsilon": 0.5}, "autoattack-l2": trim}})
    out = reliability_evaluator(ctx, ReliabilityOptions(trim_inputs=30, convergence=False))
    tb = out["checks"]["trimmed_budget"]["per_attack"]["autoattack-l2"]
    e = tb["per_eps"]["1"]
    assert tb["ran"] and e["n_inputs"] == 30 and tb["standard_settings"]["apgd_steps"] == 100
    assert e["ra_trimmed"] >= e["ra_standard"] and e["cost"] == pytest.approx(e["ra_trimmed"] - e["ra_standard"])
    trim_finding = next(f for f in out["findings"] if f["check"] == "trimmed_budget")
    assert trim_finding["undermines"] == ["ra_autoattack:L2:1"] and trim_finding["flag"] == e["trim_flag"]
    head = next(f for f in out["findings"] if f["check"] == "best_known_vs_standard_autoattack")
    assert head["undermines"] == ["rho_best", "rho_best_median", "ra_best:L2:1"]
    assert head["flag"] == e["headline_flag"]
    # the sign test by hand: inputs robust to the trimmed attack, broken by the standard one
    from scipy.stats import binomtest
    b, c = e["trimmed_only_robust"], e["standard_only_robust"]
    assert e["p_trimmed_above"] == pytest.approx(binomtest(b, b + c, 0.5, alternative="greater").pvalue if b + c
                                                 else 1.0)
    assert e["trim_flag"] == (e["p_trimmed_above"] < 0.05)
    json.dumps(out)


def test_autoattack_on_fewer_inputs_is_compared_on_its_own_inputs(mlp):
    model, codes, y = mlp
    ctx = attack_session(model, codes[:60], y[:60], {
        "methods": ["ddn-l2", "autoattack-l2"], "eps_l2": [1.0],
        "params": {"ddn-l2": {"steps": 20}, "autoattack-l2": {"max_inputs": 20, "apgd_steps": 5, "targets": 1,
                                                               "fab_targets": 1, "fab_steps": 5,
                                                               "square_queries": 5}}})
    out = reliability_evaluator(ctx, ReliabilityOptions(trim_inputs=0, convergence=False))
    shared = out["same_inputs"]["L2"]["1"]
    assert shared["n_inputs"] == 20 and shared["n_total"] == 60
    per = ctx.results["best_known"]["per_input"]
    by_hand = sum(per["status"][i] != "misclassified" and not (per["norm_best"][i] is not None and
                                                                per["norm_best"][i] <= 1.0 + 1e-5)
                  for i in range(20)) / 20
    assert shared["ra_best"] == pytest.approx(by_hand)
    # best-known includes AutoAttack's successes: on AutoAttack's own inputs it can only be lower
    assert shared["ra_best"] <= shared["ra_autoattack"] + 1e-12


@pytest.mark.parametrize("suite", ["digits", "digits-paper", "cifar10-small"])
def test_the_committed_runs_doubt_the_headline_only_where_evidence_is_about_it(suite):
    """Re-read from the stored structured findings of the committed runs: DeepFool's findings
    (the paper's metric) and cross-entropy vs margin gaps, which the best-known numbers already
    absorb, never doubt the headline; every check that does declares the headline numbers among
    those its failure undermines. (Before findings named their columns, all 33 digits-paper runs
    were "potentially unreliable"; re-read, they doubted the headline in 3.)"""
    from pathlib import Path
    from bench.evaluation.findings import is_headline
    from bench.reporting.summary import summarise_suite
    root = Path(__file__).resolve().parent.parent / "leaderboards" / "runs"
    if not (root / suite).is_dir():
        pytest.skip(f"no committed {suite} runs")
    summary = summarise_suite(root, suite)
    keys = summary.keys()
    assert all(p.reliability for p in summary.plugins), "a committed run carries no findings"
    seen = set()
    for p in summary.plugins:
        for _, found in p.reliability.per_run:
            for f in found:
                hits = [k for k in keys if is_headline(k) and f.doubts(k)]
                if f.check in ("deepfool_overstatement", "loss_consistency"):
                    assert not hits, (p.plugin, f.check, hits)
                if hits:
                    seen.add(f.check)
        assert {c for c, _ in p.reliability.headline_checks} <= seen
    assert seen <= {"convergence", "attack_unit_test", "library_flags", "trimmed_budget", "unbounded_sanity"}
