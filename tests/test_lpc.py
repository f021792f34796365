"""The lpc library against closed forms: penalty γ·mean‖z‖², the γ schedules, the head."""
from __future__ import annotations

import math

import pytest
import torch

from lpc import ConstantSchedule, GeometricSchedule, LinearRamp, LPCHead, latent_penalty


# ----- penalty ---------------------------------------------------------------------------
def reference_penalty(z: torch.Tensor, gamma: float, per_dimension: bool = False) -> float:
    """γ · (1/B) Σ_i Σ_k z_ik² (÷ d per dimension), in float64, one sample at a time."""
    z64 = z.detach().double()
    b, d = z64.shape
    total = 0.0
    for i in range(b):
        total += sum(float(v) ** 2 for v in z64[i])
    value = gamma * total / b
    return value / d if per_dimension else value


@pytest.mark.parametrize("gamma", [0.0, 1e-2, 3.7, 1e6])
@pytest.mark.parametrize("shape", [(1, 1), (7, 3), (32, 16)])
def test_penalty_matches_closed_form(gamma, shape):
    z = torch.randn(*shape, generator=torch.Generator().manual_seed(1))
    got = latent_penalty(z, gamma)
    assert got.dtype == torch.float32 and got.dim() == 0
    assert float(got) == pytest.approx(reference_penalty(z, gamma), rel=1e-6, abs=1e-12)


def test_per_dimension_divides_by_d():
    z = torch.randn(9, 5, generator=torch.Generator().manual_seed(2))
    summed, averaged = latent_penalty(z, 2.0), latent_penalty(z, 2.0, per_dimension=True)
    assert float(averaged) == pytest.approx(reference_penalty(z, 2.0, per_dimension=True), rel=1e-6)
    assert float(summed) == pytest.approx(5 * float(averaged), rel=1e-6)


def test_penalty_is_a_batch_mean_not_a_sum():
    z = torch.ones(4, 3)
    assert float(latent_penalty(z, 1.0)) == pytest.approx(3.0)                    # ‖z_i‖² = 3 each
    assert float(latent_penalty(torch.cat([z, z]), 1.0)) == pytest.approx(3.0)    # batch size does not matter


def test_penalty_gradient_is_2_gamma_z_over_b():
    z = torch.randn(6, 4, generator=torch.Generator().manual_seed(3), requires_grad=True)
    latent_penalty(z, 0.5).backward()
    torch.testing.assert_close(z.grad, 2 * 0.5 * z.detach() / 6)


def test_penalty_accepts_a_tensor_gamma_and_leading_batch_dims():
    z = torch.randn(2, 3, 4, generator=torch.Generator().manual_seed(4))
    got = latent_penalty(z, torch.tensor(2.0, dtype=torch.float64))
    assert got.dtype == torch.float32
    assert float(got) == pytest.approx(reference_penalty(z.reshape(6, 4), 2.0), rel=1e-6)


def test_penalty_rejects_a_vector():
    with pytest.raises(ValueError, match="shape"):
        latent_penalty(torch.randn(5), 1.0)


def test_penalty_is_float32_under_bf16_autocast():
    """z from a bf16 autocast region: the square and the sums are still taken in float32."""
    g = torch.Generator().manual_seed(5)
    layer = torch.nn.Linear(64, 16)
    h = torch.randn(128, 64, generator=g)
    gamma = 1e6
    with torch.autocast("cpu", dtype=torch.bfloat16):
        z = layer(h)
        assert z.dtype == torch.bfloat16          # the network runs in bf16 …
        penalty = latent_penalty(z, gamma)
    assert penalty.dtype == torch.float32         # … the penalty does not
    exact = reference_penalty(z.float(), gamma)   # closed form of the same bf16 values, float64
    assert float(penalty.detach()) == pytest.approx(exact, rel=1e-5)
    # what float32 buys: the same arithmetic in bf16 is off by far more than float32 rounding
    in_bf16 = float((z.detach().pow(2).sum(1).mean() * gamma).float())
    assert abs(in_bf16 - exact) / exact > 1e-4


def test_penalty_gradient_flows_to_a_bf16_latent():
    z = torch.randn(8, 4, generator=torch.Generator().manual_seed(6)).bfloat16().requires_grad_()
    latent_penalty(z, 1.0).backward()
    assert z.grad is not None and z.grad.dtype == torch.bfloat16
    assert torch.isfinite(z.grad.float()).all()


# ----- schedules -------------------------------------------------------------------------
def test_geometric_defaults_are_the_papers():
    g = GeometricSchedule()
    assert (g.start, g.factor, g.cap) == (1e-2, 1.05, 1e6)


@pytest.mark.parametrize("epoch", [0, 1, 2, 10, 100, 250, 377])
def test_geometric_values_below_the_cap(epoch):
    assert GeometricSchedule()(epoch) == pytest.approx(1e-2 * 1.05 ** epoch, rel=1e-12)


def test_geometric_start_is_exact():
    assert GeometricSchedule()(0) == 1e-2
    assert GeometricSchedule(0.3, 2.0, 100.0)(0) == 0.3


@pytest.mark.parametrize("epoch", [378, 379, 800, 10**6, 10**12])
def test_geometric_capped(epoch):
    assert GeometricSchedule()(epoch) == 1e6


def test_epochs_to_cap_is_378_for_the_defaults():
    g = GeometricSchedule()
    n = g.epochs_to_cap()
    assert n == 378 == math.ceil(math.log(1e8) / math.log(1.05))
    assert g(n - 1) < 1e6 and g(n) == 1e6


@pytest.mark.parametrize("start,factor,cap", [(1.0, 2.0, 1024.0), (1e-3, 1.1, 5.0), (2.0, 1.5, 1.0)])
def test_epochs_to_cap_is_the_first_capped_epoch(start, factor, cap):
    g = GeometricSchedule(start, factor, cap)
    n = g.epochs_to_cap()
    assert g(n) == cap
    if n > 0:
        assert g(n - 1) < cap


def test_geometric_never_reaches_the_cap_when_not_growing():
    assert GeometricSchedule(1.0, 1.0, 10.0).epochs_to_cap() == math.inf
    assert GeometricSchedule(1.0, 0.5, 10.0)(3) == 0.125


def test_geometric_is_monotone_and_returns_floats():
    g = GeometricSchedule(1e-2, 1.05, 1e2)
    values = [g(e) for e in range(300)]
    assert all(type(v) is float for v in values)
    assert values == sorted(values) and values[-1] == 1e2


def test_geometric_with_an_infinite_cap_stays_finite():
    assert math.isfinite(GeometricSchedule(1e-2, 1.05, math.inf)(10**7))


@pytest.mark.parametrize("bad", [dict(start=0.0), dict(factor=-1.0), dict(cap=0.0)])
def test_geometric_rejects_non_positive_parameters(bad):
    with pytest.raises(ValueError):
        GeometricSchedule(**bad)


@pytest.mark.parametrize("schedule", [GeometricSchedule(), LinearRamp(0.0, 1.0, 10), ConstantSchedule(2.0)])
def test_schedules_reject_negative_epochs(schedule):
    with pytest.raises(ValueError, match="epoch"):
        schedule(-1)


def test_linear_ramp_closed_form():
    r = LinearRamp(0.1, 0.5, 100)
    assert r(0) == pytest.approx(0.1)
    assert r(50) == pytest.approx(0.3)
    assert r(25) == pytest.approx(0.1 + 0.4 * 25 / 100)
    assert r(100) == 0.5 and r(101) == 0.5 and r(10**6) == 0.5
    values = [r(e) for e in range(120)]
    assert values == sorted(values) and all(type(v) is float for v in values)


def test_linear_ramp_can_decrease_and_can_be_instant():
    assert LinearRamp(64.0, 16.0, 4)(1) == pytest.approx(52.0)
    assert LinearRamp(1.0, 2.0, 0)(0) == 2.0
    with pytest.raises(ValueError):
        LinearRamp(1.0, 2.0, -1)


def test_schedules_are_stateless():
    """Resuming at epoch e must give what an uninterrupted run had: no hidden state."""
    for s in (GeometricSchedule(), LinearRamp(16.0, 64.0, 250), ConstantSchedule(0.3)):
        forward = [s(e) for e in range(0, 400, 7)]
        backward = [s(e) for e in reversed(range(0, 400, 7))][::-1]
        assert forward == backward


# ----- head ------------------------------------------------------------------------------
def test_head_shapes_linearity_and_no_classifier_bias():
    head = LPCHead(in_features=12, latent_dim=5, num_classes=4)
    h = torch.randn(3, 12)
    z, logits = head(h)
    assert z.shape == (3, 5) and logits.shape == (3, 4) and head.latent_dim == 5
    assert head.classifier.bias is None
    torch.testing.assert_close(z, h @ head.latent.weight.T + head.latent.bias)      # affine, no activation
    torch.testing.assert_close(logits, z @ head.classifier.weight.T)
    assert LPCHead(12, 5, 4, classifier_bias=True).classifier.bias is not None


@pytest.mark.parametrize("args", [(0, 5, 4), (12, 0, 4), (12, 5, 1)])
def test_head_rejects_bad_sizes(args):
    with pytest.raises(ValueError):
        LPCHead(*args)


def test_head_and_penalty_in_a_plain_training_loop():
    """The README's promise: LPC in any loop, and the penalty pulls ‖z‖ down."""
    torch.manual_seed(0)
    backbone = torch.nn.Sequential(torch.nn.Linear(10, 32), torch.nn.SiLU())
    head = LPCHead(32, 4, 3)
    params = [*backbone.parameters(), *head.parameters()]
    opt = torch.optim.AdamW(params, lr=1e-2)
    x, y = torch.randn(96, 10), torch.arange(96) % 3
    gamma = GeometricSchedule(start=1.0, factor=1.5, cap=100.0)
    norms = []
    for epoch in range(12):
        z, logits = head(backbone(x))
        loss = torch.nn.functional.cross_entropy(logits, y) + latent_penalty(z, gamma(epoch))
        opt.zero_grad()
        loss.backward()
        opt.step()
        norms.append(float(z.detach().pow(2).sum(1).mean()))
    assert all(math.isfinite(n) for n in norms)
    assert norms[-1] < norms[0]
