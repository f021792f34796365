"""SupCon, ArcFace and CosFace against independent references: naive per-sample loops written
from the papers' formulas, and pytorch-metric-learning (pml) where its semantics match.

pml's conventions, and what is compared:

* ``SupConLoss(temperature)``: cosine similarity, the anchor excluded from the denominator,
  mean of log-probabilities over the positives, averaged over the anchors whose loss is
  non-zero (``AvgNonZeroReducer``): anchors without a positive drop out, as in ours.
  Compared directly (value and gradient).
* ``ArcFaceLoss(num_classes, embedding_size, margin, scale)``: ``margin`` is in *degrees*
  (converted with ``np.radians``), the weight is ``W`` of shape (embedding_size, classes)
  (the transpose of our classifier's), both sides are L2-normalised by its cosine
  similarity, and the mean over the batch is taken. Where θ_y + m > π pml switches to
  ``cos θ_y − m·sin m``, while ours caps θ_y + m at π (target logit −s): the two agree only
  when every θ_y ≤ π − m, which the comparison asserts first; the region beyond is checked
  against our own definition only.
* ``CosFaceLoss(num_classes, embedding_size, margin, scale)``: margin on the cosine, same
  weight layout; compared directly.
* pml's ``get_logits`` is s·cos θ_j: compared with our inference logits.

pml is in the ``test`` extra; only the comparisons with it (they take the ``pml_losses``
fixture) skip when it is missing, never the naive-loop oracles. The losses compute in
float32 whatever the input dtype; ``test_*_input_dtypes`` feed float64, float16 and
bfloat16 inputs and compare with the float64 oracle on the same values.
"""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from lpc import ConstantSchedule, latent_penalty
from registry import create_plugin
from registry.losses import (additive_angular_margin_logits, large_margin_cosine_logits,
                             supervised_contrastive_loss)

pytestmark = pytest.mark.filterwarnings("ignore:Converting a tensor with requires_grad")


@pytest.fixture(scope="module")
def pml_losses():
    """``pytorch_metric_learning.losses``; a test that compares with it skips without it."""
    return pytest.importorskip("pytorch_metric_learning.losses")


# ----- supervised contrastive ------------------------------------------------------------
def naive_supcon(embeddings: torch.Tensor, labels: torch.Tensor, tau: float) -> torch.Tensor:
    """Khosla et al. (2020), eq. 2 (L_out), one anchor and one positive at a time, float64."""
    e = embeddings.double()
    e = e / e.norm(dim=1, keepdim=True)
    n = e.shape[0]
    per_anchor = []
    for i in range(n):
        positives = [p for p in range(n) if p != i and labels[p] == labels[i]]
        if not positives:
            continue
        denominator = sum(torch.exp(e[i] @ e[a] / tau) for a in range(n) if a != i)
        terms = [torch.log(torch.exp(e[i] @ e[p] / tau) / denominator) for p in positives]
        per_anchor.append(-sum(terms) / len(positives))
    return torch.stack(per_anchor).mean()


def supcon_batch(seed: int, n: int = 14, dim: int = 6, classes: int = 4):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, dim, generator=g)
    y = torch.randint(0, classes, (n,), generator=g)
    y[-1] = classes + 5  # an anchor alone in its class: it has no term
    return x, y


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("tau", [0.05, 0.1, 0.5])
def test_supcon_matches_naive_loop(seed, tau):
    x, y = supcon_batch(seed)
    got = supervised_contrastive_loss(x, y, tau)
    assert got.dtype == torch.float32
    assert float(got) == pytest.approx(float(naive_supcon(x, y, tau)), rel=1e-5)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("tau", [0.05, 0.1, 0.5])
def test_supcon_matches_pytorch_metric_learning(seed, tau, pml_losses):
    x, y = supcon_batch(seed)
    ours_x = x.clone().requires_grad_()
    pml_x = x.clone().requires_grad_()
    ours = supervised_contrastive_loss(ours_x, y, tau)
    theirs = pml_losses.SupConLoss(temperature=tau)(pml_x, y)
    assert float(ours) == pytest.approx(float(theirs), rel=1e-5)
    ours.backward()
    theirs.backward()
    torch.testing.assert_close(ours_x.grad, pml_x.grad, rtol=1e-4, atol=1e-6)


def test_supcon_without_positive_pairs_is_a_zero_with_a_graph():
    x = torch.randn(4, 3, requires_grad=True)
    loss = supervised_contrastive_loss(x, torch.arange(4))
    assert float(loss) == 0.0
    loss.backward()
    assert x.grad is not None and float(x.grad.abs().sum()) == 0.0


def test_supcon_without_positive_pairs_is_zero_in_pml_too(pml_losses):
    assert float(pml_losses.SupConLoss()(torch.randn(4, 3), torch.arange(4))) == 0.0


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.bfloat16])
def test_supcon_input_dtypes(dtype):
    """float32 out whatever comes in; equal to the float64 loop on the same (rounded) values."""
    x, y = supcon_batch(5, n=20, dim=8)
    x = x.to(dtype).requires_grad_()
    got = supervised_contrastive_loss(x, y, 0.1)
    assert got.dtype == torch.float32
    assert float(got) == pytest.approx(float(naive_supcon(x.detach(), y, 0.1)), rel=1e-5)
    got.backward()
    assert x.grad.dtype == dtype and bool(torch.isfinite(x.grad).all())


def test_supcon_is_scale_invariant_and_rejects_bad_temperature():
    x, y = supcon_batch(9)
    assert float(supervised_contrastive_loss(7.5 * x, y)) == pytest.approx(float(supervised_contrastive_loss(x, y)), rel=1e-5)
    with pytest.raises(ValueError):
        supervised_contrastive_loss(x, y, 0.0)


def test_supcon_is_float32_under_bf16_autocast():
    x, y = supcon_batch(3, n=64, dim=32)
    reference = supervised_contrastive_loss(x, y, 0.05)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        inside = supervised_contrastive_loss(x, y, 0.05)
    assert inside.dtype == torch.float32
    assert float(inside) == pytest.approx(float(reference), rel=1e-6)


# ----- ArcFace / CosFace -----------------------------------------------------------------
def naive_margin_loss(h, weight, y, margin: float, scale: float, kind: str):
    """Per sample, from the papers: cosines to the normalised class weights, margin on the
    true class (ArcFace: cos(θ+m) with θ+m capped at π; CosFace: cos θ − m), softmax CE."""
    losses, all_logits = [], []
    w = weight.double()
    for i in range(h.shape[0]):
        hi = h[i].double()
        cos = torch.stack([(w[j] @ hi) / (w[j].norm() * hi.norm()) for j in range(w.shape[0])])
        logits = scale * cos.clone()
        theta = math.acos(max(-1.0, min(1.0, float(cos[y[i]]))))
        if kind == "arcface":
            logits[y[i]] = scale * math.cos(min(theta + margin, math.pi))
        else:
            logits[y[i]] = scale * (cos[y[i]] - margin)
        all_logits.append(logits)
        losses.append(-(logits[y[i]] - torch.logsumexp(logits, 0)))
    return torch.stack(losses).mean(), torch.stack(all_logits)


def margin_plugin(kind: str, margin: float, scale: float, features: int = 16, classes: int = 5):
    torch.manual_seed(0)
    name = "ArcFace" if kind == "arcface" else "CosFace"
    return create_plugin(name, features, classes, margin=ConstantSchedule(margin), scale=ConstantSchedule(scale))


def margin_batch(seed: int, n: int = 24, features: int = 16, classes: int = 5):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, features, generator=g), torch.randint(0, classes, (n,), generator=g)


@pytest.mark.parametrize("kind", ["arcface", "cosface"])
@pytest.mark.parametrize("margin,scale", [(0.1, 16.0), (0.5, 64.0), (0.3, 30.0)])
@pytest.mark.parametrize("seed", range(3))
def test_margin_loss_matches_naive_loop(kind, margin, scale, seed):
    plugin = margin_plugin(kind, margin, scale)
    h, y = margin_batch(seed)
    out = plugin(h)
    loss = plugin.loss(out, y)[kind]
    expected, expected_logits = naive_margin_loss(h, plugin.classifier.weight.detach(), y, margin, scale, kind)
    assert float(loss) == pytest.approx(float(expected), rel=1e-5)
    fn = additive_angular_margin_logits if kind == "arcface" else large_margin_cosine_logits
    train_logits = fn(out.logits / scale, y, margin, scale)
    torch.testing.assert_close(train_logits.double(), expected_logits, rtol=1e-5, atol=1e-4)
    # inference logits carry no margin: the scaled cosines
    cos = F.normalize(h, dim=1) @ F.normalize(plugin.classifier.weight.detach(), dim=1).T
    torch.testing.assert_close(out.logits, scale * cos, rtol=1e-5, atol=1e-5)


def pml_loss(pml_losses, kind: str, plugin, margin: float, scale: float):
    weight = plugin.classifier.weight.detach()
    classes, features = weight.shape
    if kind == "arcface":
        loss = pml_losses.ArcFaceLoss(classes, features, margin=math.degrees(margin), scale=scale)
        assert loss.margin == pytest.approx(margin)   # pml stores the margin in radians after init
    else:
        loss = pml_losses.CosFaceLoss(classes, features, margin=margin, scale=scale)
    loss.W.data = weight.T.clone()                   # pml: (embedding_size, num_classes)
    return loss


@pytest.mark.parametrize("kind", ["arcface", "cosface"])
@pytest.mark.parametrize("margin,scale", [(0.1, 16.0), (0.5, 64.0), (0.3, 30.0)])
@pytest.mark.parametrize("seed", range(3))
def test_margin_loss_matches_pytorch_metric_learning(kind, margin, scale, seed, pml_losses):
    plugin = margin_plugin(kind, margin, scale)
    h, y = margin_batch(seed)
    reference = pml_loss(pml_losses, kind, plugin, margin, scale)
    if kind == "arcface":  # the region where pml's fallback and our cap coincide
        cos = F.normalize(h, dim=1) @ F.normalize(plugin.classifier.weight.detach(), dim=1).T
        theta_y = torch.acos(cos.gather(1, y[:, None]))
        assert bool((theta_y <= math.pi - margin).all()), "test data left the comparable region"
    ours_h, their_h = h.clone().requires_grad_(), h.clone().requires_grad_()
    ours = plugin.loss(plugin(ours_h), y)[kind]
    theirs = reference(their_h, y)
    assert float(ours) == pytest.approx(float(theirs), rel=1e-5)
    ours.backward()
    theirs.backward()
    torch.testing.assert_close(ours_h.grad, their_h.grad, rtol=1e-4, atol=1e-5)
    # inference logits: pml's get_logits is s·cos θ
    torch.testing.assert_close(plugin(h).logits, reference.get_logits(h), rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("kind", ["arcface", "cosface"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.bfloat16])
def test_margin_logits_input_dtypes(kind, dtype):
    """Cosines in any float dtype: float32 logits equal to the float64 formulas on the same values."""
    h, y = margin_batch(4)
    weight = torch.randn(5, 16, generator=torch.Generator().manual_seed(7))
    cosine = (F.normalize(h.double(), dim=1) @ F.normalize(weight.double(), dim=1).T).to(dtype)
    fn = additive_angular_margin_logits if kind == "arcface" else large_margin_cosine_logits
    got = fn(cosine, y, 0.3, 30.0)
    assert got.dtype == torch.float32
    exact = cosine.double()
    want = 30.0 * exact.clone()
    for i, c in enumerate(y.tolist()):
        if kind == "arcface":
            want[i, c] = 30.0 * math.cos(min(math.acos(float(exact[i, c])) + 0.3, math.pi))
        else:
            want[i, c] = 30.0 * (exact[i, c] - 0.3)
    torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-4)


def test_arcface_beyond_pi_minus_m_caps_at_pi():
    """θ_y + m > π: ours gives s·cos(π) = −s (pml would give s·(cos θ − m sin m))."""
    margin, scale = 0.5, 10.0
    cosine = torch.tensor([[-0.99, 0.2], [math.cos(math.pi - 0.2), 0.0]])
    y = torch.tensor([0, 0])
    logits = additive_angular_margin_logits(cosine, y, margin, scale)
    torch.testing.assert_close(logits[:, 0], torch.tensor([-scale, -scale]))
    torch.testing.assert_close(logits[:, 1], scale * cosine[:, 1])
    # the target logit never increases when θ_y grows
    thetas = torch.linspace(0, math.pi, 200)
    target = additive_angular_margin_logits(torch.cos(thetas)[:, None].repeat(1, 2), torch.zeros(200, dtype=torch.long),
                                            margin, scale)[:, 0]
    assert bool((target[1:] <= target[:-1] + 1e-5).all())


def test_margin_logits_reject_bad_shapes_and_scale():
    with pytest.raises(ValueError):
        large_margin_cosine_logits(torch.zeros(3), torch.zeros(3, dtype=torch.long), 0.1, 1.0)
    with pytest.raises(ValueError):
        additive_angular_margin_logits(torch.zeros(3, 2), torch.zeros(3, dtype=torch.long), 0.1, 0.0)


@pytest.mark.parametrize("kind", ["arcface", "cosface"])
def test_margin_cosines_are_float32_under_bf16_autocast(kind):
    plugin = margin_plugin(kind, 0.3, 64.0, features=64)
    h, y = margin_batch(1, n=32, features=64)
    reference = plugin(h)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        inside = plugin(h)
    assert inside.logits.dtype == torch.float32
    torch.testing.assert_close(inside.logits, reference.logits)
    torch.testing.assert_close(plugin.loss(inside, y)[kind], plugin.loss(reference, y)[kind])


# ----- LPC-SCL: three terms, none overwriting another ------------------------------------
def test_lpc_scl_has_three_independent_terms():
    torch.manual_seed(0)
    widths = {"narrow": 3, "intermediate": 5, "wide": 7}
    plugin = create_plugin("LPC-SCL", 12, 4, widths, gamma=ConstantSchedule(0.7),
                           supcon_temperature=0.2, supcon_weight=0.3)
    g = torch.Generator().manual_seed(1)
    h = torch.randn(16, 12, generator=g, requires_grad=True)
    y = torch.arange(16) % 4
    out = plugin(h)
    terms = plugin.loss(out, y)
    assert set(terms) == {"ce", "penalty", "supcon", "total"}
    ce = F.cross_entropy(out.logits, y)
    penalty = latent_penalty(out.latent, 0.7)
    supcon = 0.3 * naive_supcon(h.detach(), y, 0.2)          # on the backbone features h …
    on_z = 0.3 * naive_supcon(out.latent.detach(), y, 0.2)   # … not on z
    assert float(terms["ce"]) == pytest.approx(float(ce), rel=1e-6)
    assert float(terms["penalty"]) == pytest.approx(float(penalty), rel=1e-6)
    assert float(terms["supcon"]) == pytest.approx(float(supcon), rel=1e-5)
    assert abs(float(on_z) - float(supcon)) > 1e-3
    assert float(terms["total"]) == pytest.approx(float(ce + penalty) + float(supcon), rel=1e-5)
    assert len({round(float(terms[k]), 6) for k in ("ce", "penalty", "supcon")}) == 3

    # the gradient of the total is the sum of the three terms' gradients
    grads = [torch.autograd.grad(terms[k], h, retain_graph=True)[0] for k in ("ce", "penalty", "supcon")]
    total_grad = torch.autograd.grad(terms["total"], h)[0]
    torch.testing.assert_close(total_grad, grads[0] + grads[1] + grads[2], rtol=1e-5, atol=1e-6)


def test_lpc_scl_terms_switch_off_independently():
    widths = {"narrow": 3, "intermediate": 5, "wide": 7}
    h = torch.randn(16, 12, generator=torch.Generator().manual_seed(2))
    y = torch.arange(16) % 4
    torch.manual_seed(0)
    full = create_plugin("LPC-SCL", 12, 4, widths, gamma=ConstantSchedule(0.7))
    torch.manual_seed(0)
    no_supcon = create_plugin("LPC-SCL", 12, 4, widths, gamma=ConstantSchedule(0.7), supcon_weight=0.0)
    torch.manual_seed(0)
    no_penalty = create_plugin("LPC-SCL", 12, 4, widths, gamma=ConstantSchedule(0.0))
    a, b, c = (p.loss(p(h), y) for p in (full, no_supcon, no_penalty))
    assert float(b["supcon"]) == 0.0 and float(c["penalty"]) == 0.0
    assert float(a["ce"]) == float(b["ce"]) == float(c["ce"])
    assert float(a["penalty"]) == float(b["penalty"]) and float(a["supcon"]) == float(c["supcon"])


def test_scl_and_lpc_share_the_supcon_and_penalty_definitions():
    widths = {"narrow": 3, "intermediate": 5, "wide": 7}
    h = torch.randn(16, 12, generator=torch.Generator().manual_seed(3))
    y = torch.arange(16) % 4
    scl = create_plugin("SCL", 12, 4, supcon_temperature=0.1)
    assert float(scl.loss(scl(h), y)["supcon"]) == pytest.approx(float(naive_supcon(h, y, 0.1)), rel=1e-5)
    nopen = create_plugin("LPC-NoPen", 12, 4, widths, gamma=ConstantSchedule(2.0))
    out = nopen(h)
    assert out.latent is h
    assert float(nopen.loss(out, y)["penalty"]) == pytest.approx(2.0 * float(h.pow(2).sum(1).mean()), rel=1e-6)
