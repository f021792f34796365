"""The attack unit test (planted adversarials), AttackBench optimality, adv-lib's attacks, the outcome words."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from bench.attacks import AttacksOptions, AttackUnitTestOptions
from bench.attacks.attack_evaluators import attacks_evaluator
from bench.attacks.attack_unit_test import ADVERSARIAL, CLEAN, attack_unit_test_evaluator, distance, plant
from bench.attacks.methods import attack_guard, get_attack, seeded
from bench.attacks.optimality import optimality
from bench.attacks.outcomes import canonical
from bench.core.errors import BenchError
from bench.core.typed import from_dict
from bench.suites import load_suite

from attack_helpers import make_ctx, one_thread, trained  # noqa: F401 (autouse)


@pytest.fixture(scope="module")
def mlp():
    torch.set_num_threads(1)
    model, x, y = trained("softmax")
    return model, (x * 16).round().to(torch.uint8), y


def digits_attacks(max_inputs=40) -> dict:
    """The digits suite's attack settings, on the first ``max_inputs`` inputs."""
    settings = dict(load_suite("digits").evaluation.settings["attacks"])
    return {**settings, "max_inputs": max_inputs}


@pytest.fixture(scope="module")
def full_suite_session(mlp):
    model, codes, y = mlp
    ctx = make_ctx(model, codes, y, pixel_scale=16.0)
    ctx.results["attacks"] = attacks_evaluator(ctx, from_dict(AttacksOptions, digits_attacks()))
    return ctx


# ----- the attack unit test -------------------------------------------------------------

def test_the_full_suite_passes_and_crippled_attacks_fail(full_suite_session):
    ctx = full_suite_session
    out = attack_unit_test_evaluator(ctx, AttackUnitTestOptions())
    assert out["threshold"] == 0.95 and out["n_tests"] == 20 and out["n_setup_failures"] == 0
    assert out["suite_pass_rate"] >= 0.95 and out["passed"] is True
    # a 2-class readout runs no margin loss over the third logit: those attacks are named, not run
    assert set(out["not_covered"]) == {"apgd-dlr-l2", "apgd-dlr-linf", "autoattack-l2", "autoattack-linf"}
    assert set(out["per_attack"]) == set(ctx.results["attacks"]["methods"]) - set(out["not_covered"])
    assert out["tests"]["L2"]["eps"] == 1.0 and math.isclose(out["tests"]["Linf"]["eps"], 8 / 255)

    # the same attacks with 2 steps of a tiny step (FGSM, one full step, left out) miss the planted points
    crippled = {"pgd-l2": {"steps": 2, "step_size": 1e-4}, "pgd-linf": {"steps": 2, "step_size": 1e-5},
                "ddn-l2": {"steps": 2, "init_epsilon": 1e-3}, "fmn-l2": {"steps": 2, "max_stepsize": 1e-3},
                "ddn-l2-advlib": {"steps": 2, "init_norm": 1e-3}, "fmn-linf-advlib": {"steps": 2, "alpha_init": 1e-4}}
    out = attack_unit_test_evaluator(ctx, from_dict(AttackUnitTestOptions,
                                                    {"methods": list(crippled), "params": crippled}))
    assert out["n_tests"] == 20 and out["passed"] is False and out["suite_pass_rate"] < 0.5


@pytest.mark.parametrize("norm,eps", [("L2", 1.0), ("Linf", 8 / 255)])
@pytest.mark.parametrize("pixels", [False, True])
def test_the_planted_point_is_adversarial_inside_the_ball(mlp, norm, eps, pixels):
    model, codes, y = mlp
    if pixels:   # a model without backbone features: the readout is fitted on the pixels
        model = nn.Sequential(nn.Flatten(), model)
    x = codes[:40].float() / 16
    with torch.no_grad():
        logits = model(x)
    correct = (logits.argmax(1) == y[:40]).nonzero().squeeze(1)
    x, y, logits = x[correct], y[:40][correct], logits[correct]
    opts = AttackUnitTestOptions(n_inputs=6)
    with attack_guard(model):
        planted, idx, failures, xb = plant(model, x, y, eps, norm, opts, torch.device("cpu"))
    assert idx.numel() == 6 and failures[:-1] == []
    x0 = x[idx]
    with torch.no_grad():
        clean, adv = planted(x0), planted(xb)
    assert (clean.argmax(1) == CLEAN).all() and (adv.argmax(1) == ADVERSARIAL).all()
    d = distance(xb, x0, norm).diagonal()
    assert (d <= eps * (1 + 1e-6)).all() and (d > 0.5 * eps).all()
    assert xb.min() >= 0 and xb.max() <= 1
    # the readout's logit difference at x equals the original model's margin there
    top = logits[idx].clone()
    top.scatter_(1, y[idx][:, None], -math.inf)
    margin = logits[idx].gather(1, y[idx][:, None])[:, 0] - top.max(1).values
    assert torch.allclose(clean[:, CLEAN] - clean[:, ADVERSARIAL], margin, rtol=1e-3, atol=1e-4)
    # inner points of the ball, at 0.95 ε, stay clean: the threshold sits just below x_b
    shrunk = x0 + 0.9 * (xb - x0)
    with torch.no_grad():
        assert (planted(shrunk).argmax(1) == CLEAN).float().mean() >= 0.5


def test_unit_test_refuses_attacks_that_did_not_run(full_suite_session):
    with pytest.raises(BenchError, match="did not run"):
        attack_unit_test_evaluator(full_suite_session, from_dict(AttackUnitTestOptions, {"methods": ["cw-l2"]}))
    with pytest.raises(ValueError, match="inner_radius"):
        AttackUnitTestOptions(inner_radius=1.5)


# ----- AttackBench optimality -----------------------------------------------------------

def test_optimality_hand_computation():
    best = np.array([1.0, 2.0, 4.0, math.inf, math.nan])   # 4th: nobody flipped it; 5th: misclassified
    attack = np.array([1.0, 3.0, math.inf, math.inf, math.nan])
    out = optimality(attack, best)
    # D = 4: Σ(D − min(d, D)) = 3 + 1 + 0 = 4 over Σ(D − d*) = 3 + 2 + 0 = 5
    assert out["optimality"] == pytest.approx(0.8) and out["n_inputs"] == 3 and out["n_excluded"] == 1
    assert out["ratio_mean"] == pytest.approx((1 + 2 / 3 + 0) / 3) and out["n_failed"] == 1
    assert optimality(best, best)["optimality"] == 1.0           # the attack that defines the best known
    assert optimality(np.full(5, math.inf), best)["optimality"] == 0.0


def test_optimality_matches_the_area_between_robust_accuracy_curves():
    """Oracle: AttackBench's areas under RA(ε) on [0, D], integrated numerically on a fine grid."""
    g = np.random.default_rng(0)
    best = g.uniform(0.1, 2.0, 200)
    attack = best * g.uniform(1.0, 1.6, 200)
    attack[g.random(200) < 0.1] = math.inf
    top = best.max()
    grid = np.linspace(0, top, 200_001)
    ra = lambda d: (d[None, :] > grid[:, None]).mean(1)   # noqa: E731
    area_best, area_attack = np.trapezoid(ra(best), grid), np.trapezoid(ra(attack), grid)
    expected = 1 - (area_attack - area_best) / (1.0 * top - area_best)
    assert optimality(attack, best)["optimality"] == pytest.approx(expected, abs=1e-4)


def test_best_known_reports_optimality_and_the_measured_budget(full_suite_session):
    from bench.attacks.attack_evaluators import deepfool_evaluator
    from bench.attacks.best_known import best_known_evaluator
    from bench.attacks.deepfool import DeepFoolOptions
    from bench.evaluation.hook import NoOptions
    ctx = full_suite_session
    ctx.results["deepfool"] = deepfool_evaluator(ctx, DeepFoolOptions(max_inputs=40))
    out = best_known_evaluator(ctx, NoOptions())["optimality"]
    assert set(out) == {"deepfool", "ddn-l2", "fmn-l2", "hsj-l2", "ddn-l2-advlib", "fmn-linf-advlib"}
    assert all(0 <= o["optimality"] <= 1 + 1e-12 for o in out.values() if o["optimality"] is not None)
    per = ctx.results["attacks"]["per_attack"]
    # one forward and one backward per step (foolbox's DDN adds a final forward)
    assert per["ddn-l2-advlib"]["queries"] == {"forward": 40.0, "backward": 40.0, "total": 80.0}
    assert per["ddn-l2"]["queries"]["backward"] == 40.0
    assert out["ddn-l2"]["queries"] == per["ddn-l2"]["queries"]


# ----- adv-lib --------------------------------------------------------------------------

def test_advlib_ddn_agrees_with_its_direct_call(mlp):
    from adv_lib.attacks import ddn
    model, codes, y = mlp
    ctx = make_ctx(model, codes[:30], y[:30], pixel_scale=16.0)
    out = attacks_evaluator(ctx, from_dict(AttacksOptions, {"methods": ["ddn-l2-advlib"], "eps_l2": [1.0],
                                                            "params": {"ddn-l2-advlib": {"steps": 20}}}))
    entry = out["per_attack"]["ddn-l2-advlib"]
    x = codes[:30].float() / 16
    ok = torch.tensor([i not in out["misclassified"] for i in range(30)])
    with attack_guard(model), seeded(0):
        adv = ddn(model, x[ok], y[:30][ok], steps=20, init_norm=1.0, γ=0.05, levels=None)
    direct = (adv - x[ok]).flatten(1).norm(dim=1)
    with torch.no_grad():
        flipped = model(adv).argmax(1) != y[:30][ok]
    ours = torch.tensor([math.inf if v is None else v for v in entry["per_input_norm"]], dtype=torch.float64)[ok]
    assert flipped.sum() > 20
    assert torch.allclose(ours[flipped], direct[flipped].double(), rtol=1e-5)
    assert torch.isinf(ours[~flipped]).all()


# ----- one vocabulary, one name per thing ------------------------------------------------

def test_outcome_words_and_the_deepfool_method_name():
    assert canonical("already_misclassified") == canonical("misclassified") == "misclassified"
    assert canonical("unflipped") == canonical("not_flipped") == "not_flipped"
    with pytest.raises(ValueError, match="unknown attack outcome"):
        canonical("broken")
    assert get_attack("deepfool-l2").linearisation
    with pytest.raises(BenchError, match="use deepfool-l2"):
        get_attack("deepfool")


def test_stored_results_in_the_old_words_still_read():
    """best_known results written before the unified vocabulary ("unflipped") drive the same checks."""
    from bench.attacks.reliability import ReliabilityOptions, deepfool_overstatement, unbounded_sanity
    per = {"status": ["flipped", "flipped", "not_flipped", "misclassified"], "norm_best": [1.0, 2.0, None, None],
           "norm_deepfool": [1.0, 3.0, None, None], "x_norm": [5.0, 5.0, 5.0, 5.0]}
    old = {**per, "status": ["flipped", "flipped", "unflipped", "misclassified"]}
    df, attacks = {"n_flipped": 2, "n_not_flipped": 1}, {"per_attack": {}, "eps": {}}
    for check in (lambda p: deepfool_overstatement({"per_input": p}, ReliabilityOptions()),
                  lambda p: unbounded_sanity(df, attacks, {"per_input": p}, ReliabilityOptions())):
        assert check(old) == check(per)
    assert unbounded_sanity(df, attacks, {"per_input": old}, ReliabilityOptions())["robust_at_x_norm"] == 1 / 3
