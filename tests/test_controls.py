"""Positive controls: the input-side plugin contract (Batch, input_terms, the one training step),
the inner PGD against torchattacks, the input-gradient penalty against a naive per-input loop
and finite differences, exact resume of adversarial training, and their errors at suite load."""
from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bench.core.errors import BenchError
from bench.models.classifier import Classifier
from bench.runs.folder import RunSpec, plan_runs, run_config, same_identity
from bench.training.step import training_loss, training_step
from bench.training.trainer import train_run
from registry import PLUGINS, Batch, Plugin, create_plugin, register_plugin
from registry.losses.adversarial import inner_attack_mode, pgd, project, random_start
from registry.plugins.input_gradient import input_gradient_penalty

from conftest import read_run

pytestmark = pytest.mark.filterwarnings("ignore:Converting a tensor with requires_grad")

CPU = torch.device("cpu")
SHAPE = (1, 6, 6)


def tiny_model(plugin: str = "NoPen", seed: int = 0, **params) -> Classifier:
    """normalisation → MLP backbone → plugin, on (1, 6, 6) images in [0, 1]."""
    torch.manual_seed(seed)
    backbone = nn.Sequential(nn.Flatten(), nn.Linear(36, 24), nn.SiLU(), nn.Linear(24, 16), nn.SiLU())
    backbone.feature_dim = 16
    head = create_plugin(plugin, 16, 5, {"narrow": 3, "intermediate": 6, "wide": 9}, **params)
    return Classifier(backbone, head, [0.4], [0.3])


def inputs(n: int = 12, seed: int = 1, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, *SHAPE, generator=g, dtype=dtype), torch.arange(n) % 5


# ----- the contract ----------------------------------------------------------------------
def test_a_plugin_that_needs_the_input_receives_it():
    seen = {}

    @register_plugin("_RecordsInput")
    class RecordsInput(Plugin):
        input_grad = True

        def input_terms(self, out, batch):
            seen.update(x=batch.x, y=batch.y, model=batch.model, seed=batch.seed)
            grad, = torch.autograd.grad(out.logits.sum(), batch.x, create_graph=True)
            return {"probe": grad.pow(2).mean()}

    try:
        model = tiny_model("_RecordsInput")
        x, y = inputs()
        out, terms = training_loss(model, x, y, device=CPU, amp="off", seed=7)
        assert torch.equal(seen["x"].detach(), x) and seen["x"].requires_grad
        assert seen["y"] is y and seen["model"] is model and seen["seed"] == 7
        assert set(terms) == {"ce", "probe", "total"}
        assert float(terms["total"]) == pytest.approx(float(terms["ce"] + terms["probe"]))
        with pytest.raises(ValueError, match="needs the batch"):
            model.head.loss(out, y)
    finally:
        PLUGINS.remove("_RecordsInput")


def test_input_terms_must_not_reuse_a_loss_term_name():
    @register_plugin("_Clash")
    class Clash(Plugin):
        def input_terms(self, out, batch):
            return {"ce": out.logits.sum()}
    try:
        model = tiny_model("_Clash")
        with pytest.raises(ValueError, match="already a loss term"):
            training_loss(model, *inputs(), device=CPU, amp="off")
    finally:
        PLUGINS.remove("_Clash")


@pytest.mark.parametrize("plugin", ["NoPen", "LPC", "ArcFace"])
def test_a_head_plugin_steps_exactly_as_before(plugin):
    """The shared step on a head-only plugin is the pre-contract step, bit for bit."""
    x, y = inputs()
    new, old = tiny_model(plugin), tiny_model(plugin)
    assert not new.head.uses_input()
    opt_new, opt_old = (torch.optim.AdamW(m.parameters(), lr=1e-2) for m in (new, old))
    params = list(new.parameters())
    for _ in range(3):
        _, terms = training_step(new, opt_new, params, x, y, device=CPU, amp="off", seed=3)
        out = old.forward_all(x)                     # the step as trainer.py had it
        reference = old.head.loss(out, y)
        opt_old.zero_grad(set_to_none=True)
        reference["total"].backward()
        opt_old.step()
        assert {k: float(v) for k, v in terms.items()} == {k: float(v) for k, v in reference.items()}
    for a, b in zip(new.state_dict().values(), old.state_dict().values()):
        assert torch.equal(a, b)


# ----- the inner attack ------------------------------------------------------------------
@pytest.mark.parametrize("norm,eps,alpha", [("Linf", 8 / 255, 2 / 255), ("L2", 0.5, 0.1)])
def test_inner_pgd_equals_torchattacks_pgd(norm, eps, alpha):
    """Same model, inputs and random start (torchattacks draws it from the global RNG; the
    same draw is made here and handed to ``pgd`` as its start)."""
    torchattacks = pytest.importorskip("torchattacks")
    model = tiny_model("NoPen").eval()
    x, y = inputs(16)
    attack = (torchattacks.PGD(model, eps=eps, alpha=alpha, steps=7, random_start=True) if norm == "Linf"
              else torchattacks.PGDL2(model, eps=eps, alpha=alpha, steps=7, random_start=True))
    torch.manual_seed(123)
    expected = attack(x, y)
    torch.manual_seed(123)                      # torchattacks' start, drawn the same way
    if norm == "Linf":
        start = (x + torch.empty_like(x).uniform_(-eps, eps)).clamp(0, 1)
    else:
        delta = torch.empty_like(x).normal_()
        n = delta.flatten(1).norm(p=2, dim=1).view(-1, 1, 1, 1)
        r = torch.zeros_like(n).uniform_(0, 1)
        start = (x + delta * r / n * eps).clamp(0, 1)
    ours = pgd(model, x, y, norm=norm, eps=eps, steps=7, step_size=alpha, start=start)
    torch.testing.assert_close(ours, expected, rtol=0, atol=1e-6)
    assert (ours - x).abs().max() > eps / 4          # it moved: the comparison is not vacuous
    # and the adversarial loss went up from the start
    assert F.cross_entropy(model(ours), y) > F.cross_entropy(model(start), y)


@pytest.mark.parametrize("norm,eps", [("Linf", 0.1), ("L2", 0.5)])
def test_random_start_and_projection_stay_in_the_ball_and_the_box(norm, eps):
    x, _ = inputs(64)
    g = torch.Generator().manual_seed(0)
    start = random_start(x, norm, eps, g)
    far = project(x, x + 3 * torch.randn_like(x), norm, eps)
    for z in (start, far):
        dist = (z - x).flatten(1).abs().amax(1) if norm == "Linf" else (z - x).flatten(1).norm(dim=1)
        assert bool((dist <= eps + 1e-6).all()) and z.min() >= 0 and z.max() <= 1
    again = random_start(x, norm, eps, torch.Generator().manual_seed(0))
    assert torch.equal(start, again) and not torch.equal(start, x)


def test_inner_attack_runs_in_eval_mode_and_restores_train_mode():
    model = tiny_model("PGD-AT", norm="L2", eps=0.5, steps=2, step_size=0.25).train()
    modes = []
    model.backbone.register_forward_pre_hook(lambda m, a: modes.append(m.training))
    x, y = inputs()
    training_loss(model, x, y, device=CPU, amp="off")
    # clean forward (train), 2 inner steps (eval), the outer forward of x_adv (train)
    assert modes == [True, False, False, True] and model.training


def test_pgd_at_loss_is_the_adversarial_ce_and_is_seeded_by_the_step():
    model = tiny_model("PGD-AT", norm="L2", eps=0.5, steps=3, step_size=0.25)
    x, y = inputs()
    _, a = training_loss(model, x, y, device=CPU, amp="off", seed=1)
    _, b = training_loss(model, x, y, device=CPU, amp="off", seed=1)
    _, c = training_loss(model, x, y, device=CPU, amp="off", seed=2)
    assert set(a) == {"adv_ce", "total"} and float(a["total"]) == float(b["total"]) != float(c["total"])
    clean = F.cross_entropy(model(x), y)
    assert float(a["adv_ce"]) > float(clean)


def test_trades_starts_at_x_plus_small_noise_and_adds_beta_kl():
    model = tiny_model("TRADES", beta=6.0, norm="Linf", eps=0.1, steps=2, step_size=0.03)
    x, y = inputs()
    batch = Batch(x=x, y=y, model=model, seed=5)
    starts = []
    import registry.plugins.trades as trades
    real = trades.pgd

    def spy(*args, start, **kwargs):
        starts.append(start)
        return real(*args, start=start, **kwargs)
    trades.pgd = spy
    try:
        out = model.forward_all(x)
        terms = model.head.loss(out, y, batch)
    finally:
        trades.pgd = real
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(starts[0], x + 0.001 * noise)
    assert set(terms) == {"ce", "trades_kl", "total"} and float(terms["trades_kl"]) > 0
    zero = tiny_model("TRADES", beta=0.0, norm="Linf", eps=0.1, steps=2, step_size=0.03)
    assert float(zero.head.loss(zero.forward_all(x), y, Batch(x, y, zero, 5))["trades_kl"]) == 0.0


# ----- the input-gradient penalty --------------------------------------------------------
def naive_penalty(model, x, y) -> torch.Tensor:
    """(1/B) Σ_i ‖∇_{x_i} CE(f(x_i), y_i)‖², one input at a time."""
    total = 0.0
    for i in range(x.shape[0]):
        xi = x[i:i + 1].clone().requires_grad_(True)
        g, = torch.autograd.grad(F.cross_entropy(model(xi), y[i:i + 1]), xi, create_graph=True)
        total = total + g.pow(2).sum()
    return total / x.shape[0]


def test_input_gradient_penalty_equals_a_per_input_loop_and_its_weight_gradient_finite_differences():
    torch.manual_seed(0)   # float64 throughout (the Classifier's head runs in float32)
    model = nn.Sequential(nn.Flatten(), nn.Linear(36, 24), nn.SiLU(), nn.Linear(24, 5)).double()
    x, y = inputs(6, dtype=torch.float64)
    xg = x.clone().requires_grad_(True)
    ours = input_gradient_penalty(model(xg), y, xg)
    expected = naive_penalty(model, x, y)
    assert float(ours) == pytest.approx(float(expected), rel=1e-10)
    # the gradient of x, by central finite differences of the CE (an oracle without autograd)
    i, h = 2, 1e-6
    flat = x[i:i + 1].flatten()
    fd = torch.empty_like(flat)
    for j in range(flat.numel()):
        e = torch.zeros_like(flat)
        e[j] = h
        up = F.cross_entropy(model((flat + e).view(1, *SHAPE)), y[i:i + 1])
        down = F.cross_entropy(model((flat - e).view(1, *SHAPE)), y[i:i + 1])
        fd[j] = (up - down) / (2 * h)
    xi = x[i:i + 1].clone().requires_grad_(True)
    g, = torch.autograd.grad(F.cross_entropy(model(xi), y[i:i + 1]), xi)
    torch.testing.assert_close(g.flatten(), fd, rtol=1e-6, atol=1e-8)
    # double backprop: d(penalty)/d(one weight) against finite differences of the penalty
    weight = model[1].weight
    grad_w, = torch.autograd.grad(ours, weight)
    with torch.no_grad():
        weight[3, 5] += h
    up = float(naive_penalty(model, x, y))
    with torch.no_grad():
        weight[3, 5] -= 2 * h
    down = float(naive_penalty(model, x, y))
    assert float(grad_w[3, 5]) == pytest.approx((up - down) / (2 * h), rel=1e-5)


def test_input_grad_norm_terms():
    model = tiny_model("InputGradNorm", lam=0.5)
    x, y = inputs()
    _, terms = training_loss(model, x, y, device=CPU, amp="off")
    assert set(terms) == {"ce", "grad_norm", "total"}
    assert float(terms["grad_norm"]) == pytest.approx(0.5 * float(naive_penalty(model, x, y)), rel=1e-5)


def test_lpc_pgd_at_combines_the_latent_penalty_and_the_adversarial_ce():
    model = tiny_model("LPC-PGD-AT", norm="L2", eps=0.5, steps=2, step_size=0.25)
    x, y = inputs()
    out, terms = training_loss(model, x, y, device=CPU, amp="off", seed=4)
    assert set(terms) == {"penalty", "adv_ce", "total"}
    gamma = model.head.params.gamma(0)
    assert float(terms["penalty"]) == pytest.approx(gamma * float(out.latent.pow(2).sum(1).mean()), rel=1e-5)
    solo = tiny_model("PGD-AT", norm="L2", eps=0.5, steps=2, step_size=0.25)
    assert "penalty" not in training_loss(solo, x, y, device=CPU, amp="off", seed=4)[1]


# ----- runs: exact resume, identities, seed trimming -------------------------------------
CONTROL = "plugin_params.PGD-AT={norm: L2, eps: 0.5, steps: 2, step_size: 0.25}"


class Interrupt(BaseException):
    pass


def test_pgd_at_run_killed_and_resumed_ends_identical(tmp_path, tiny_suite):
    suite = tiny_suite("plugins=[PGD-AT]", CONTROL, "dataset.limit_train=96", epochs=3)
    spec = RunSpec(suite.name, "PGD-AT", 0, suite.lrs[0])
    assert train_run(suite, spec, tmp_path / "ref").status == "done"

    def stop_after_first(epoch):
        if epoch == 0:
            raise Interrupt
    with pytest.raises(Interrupt):
        train_run(suite, spec, tmp_path / "resumed", on_epoch_end=stop_after_first)
    assert train_run(suite, spec, tmp_path / "resumed").status == "done"
    assert read_run(spec.directory(tmp_path / "resumed")) == read_run(spec.directory(tmp_path / "ref"))
    a = torch.load(spec.directory(tmp_path / "ref") / "checkpoint.pt", weights_only=True)["model"]
    b = torch.load(spec.directory(tmp_path / "resumed") / "checkpoint.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    rows = read_run(spec.directory(tmp_path / "ref"))[1]
    assert {"loss_adv_ce", "loss_total"} <= set(rows[0])


def test_plugin_seeds_trims_a_plugin_to_its_first_seeds_without_changing_identities(tiny_suite):
    plain = tiny_suite("plugins=[NoPen,PGD-AT]")
    trimmed = tiny_suite("plugins=[NoPen,PGD-AT]", "plugin_seeds={PGD-AT: 1}")
    keys = [r.key for r in plan_runs(trimmed)]
    assert keys == ["NoPen/seed0-lr0.001", "NoPen/seed1-lr0.001", "NoPen/seed2-lr0.001", "PGD-AT/seed0-lr0.001"]
    spec = RunSpec(plain.name, "NoPen", 0, plain.lrs[0])
    assert same_identity(run_config(plain, spec), run_config(trimmed, spec))


@pytest.mark.parametrize("override,expected", [
    ("plugin_params.PGD-AT={norm: Linf, eps: 1.5}", "eps must be (0, 1]"),
    ("plugin_params.PGD-AT={norm: L2, eps: -0.5}", "eps must be > 0"),
    ("plugin_params.PGD-AT.steps=0", "steps must be a whole number >= 1"),
    ("plugin_params.TRADES.steps=-2", "steps must be a whole number >= 1"),
    ("plugin_params.TRADES.beta=-1", "beta must be >= 0"),
    ("plugin_params.InputGradNorm.lam=-1", "lam must be >= 0"),
    ("plugin_seeds={PGD-AT: 0}", "plugin_seeds.PGD-AT must be >= 1"),
    ("plugin_seeds={PGD-ATT: 1}", "unknown plugin 'PGD-ATT'"),
])
def test_bad_control_settings_are_one_error_line_at_suite_load(override, expected):
    from bench.suites import load_suite
    with pytest.raises(BenchError) as info:
        load_suite("digits", ["plugins=[PGD-AT,TRADES,InputGradNorm]", override])
    assert expected in str(info.value) and "\n" not in str(info.value)


def test_an_input_side_plugin_on_a_dataset_without_pixel_bounds_is_refused(monkeypatch):
    from bench.data import DATASETS
    from bench.suites import load_suite
    loader = DATASETS.get("digits")
    monkeypatch.setattr(loader, "pixel_bounded", False, raising=False)
    with pytest.raises(BenchError, match="no \\[0, 1\\] pixel bounds"):
        load_suite("digits", ["plugins=[NoPen,PGD-AT]"])
    load_suite("digits", ["plugins=[NoPen,LPC]"])   # head-only plugins do not care
