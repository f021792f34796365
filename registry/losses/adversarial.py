"""The inner maximisation of adversarial training: projected gradient ascent in pixel space.

PGD (Madry et al., ICLR 2018, "Towards Deep Learning Models Resistant to Adversarial
Attacks"): from a start x⁰ in the ε-ball around x,

    x^{t+1} = Π_{B_p(x, ε) ∩ [0, 1]^d} ( x^t + α · s(∇_x L(f(x^t), y)) ),

with s = sign for L∞ and s = g / ‖g‖₂ (per input) for L2; the projection clips the
perturbation to the ball (L∞: coordinate-wise; L2: rescaled to norm ≤ ε) and then the
image to [0, 1]. This is the update of ``torchattacks.PGD`` / ``torchattacks.PGDL2``
(the evaluation attacks' library), written here because ``registry`` must not import
``bench`` and the training loop needs a seeded start and any loss (CE for PGD-AT, the
KL of TRADES), which torchattacks does not take.

Everything is in [0, 1] pixel space: ``forward`` is the whole classifier, normalisation
inside. The caller chooses the module's mode (the built-in plugins attack in eval mode,
see ``inner_attack_mode``).
"""
from __future__ import annotations

import contextlib
from typing import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

NORMS = ("L2", "Linf")
_TINY = 1e-10   # torchattacks' eps_for_division: a zero gradient stays a zero step


def check_budget(norm: str, eps: float, steps: int, step_size: float) -> None:
    """ValueError (one line, naming the parameter) for a budget no attack can have."""
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
    if not eps > 0 or (norm == "Linf" and eps > 1):
        span = "(0, 1] (pixels are in [0, 1])" if norm == "Linf" else "> 0"
        raise ValueError(f"eps must be {span} for {norm}, got {eps}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a whole number >= 1, got {steps!r}")
    if not step_size > 0:
        raise ValueError(f"step_size must be > 0, got {step_size}")


def _per_input(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return v.view(-1, *([1] * (like.dim() - 1)))


def project(x: torch.Tensor, x_adv: torch.Tensor, norm: str, eps: float) -> torch.Tensor:
    """x_adv moved into the ε-ball around x, then clipped to [0, 1]."""
    delta = x_adv - x
    if norm == "Linf":
        delta = delta.clamp(-eps, eps)
    else:
        norms = delta.flatten(1).norm(p=2, dim=1)
        delta = delta * _per_input(torch.clamp(eps / norms, max=1.0), x)
    return (x + delta).clamp(0.0, 1.0)


def random_start(x: torch.Tensor, norm: str, eps: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """A uniform draw in the L∞ ball, or a direction uniform on the sphere times a radius
    uniform in [0, ε] for L2 (torchattacks' starts), clipped to [0, 1]."""
    if norm == "Linf":
        noise = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype) * (2 * eps) - eps
    else:
        direction = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        radius = torch.rand(x.shape[0], generator=generator, device=x.device, dtype=x.dtype)
        noise = direction * _per_input(radius * eps / direction.flatten(1).norm(p=2, dim=1), x)
    return (x + noise).clamp(0.0, 1.0)


def pgd(forward: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, y: torch.Tensor, *,
        norm: str, eps: float, steps: int, step_size: float,
        loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
        start: torch.Tensor | None = None) -> torch.Tensor:
    """``steps`` ascent steps on ``loss(forward(x_adv), y)`` (default: mean cross-entropy)
    from ``start`` (default: x itself). Returns the detached adversarial inputs.

    ``y`` is whatever ``loss`` takes as its target (labels for CE, clean probabilities
    for TRADES' KL). Only the input gradient is taken (``torch.autograd.grad``): the
    model's parameter gradients are left as they were.
    """
    loss = loss or F.cross_entropy
    x = x.detach()
    x_adv = (x if start is None else start).detach().clone()
    for _ in range(steps):
        x_adv.requires_grad_(True)
        value = loss(forward(x_adv), y)
        grad, = torch.autograd.grad(value, x_adv)
        with torch.no_grad():
            if norm == "Linf":
                x_adv = x_adv + step_size * grad.sign()
            else:
                g_norm = grad.flatten(1).norm(p=2, dim=1) + _TINY
                x_adv = x_adv + step_size * grad / _per_input(g_norm, grad)
            x_adv = project(x, x_adv, norm, eps)
    return x_adv.detach()


@contextlib.contextmanager
def inner_attack_mode(model: nn.Module) -> Iterator[None]:
    """Run the inner maximisation with ``model`` in eval mode, then restore its mode.

    Why eval: the inner steps are extra forwards on perturbed copies of the batch, not
    training. In train mode each of them would move BatchNorm's running statistics (k
    updates towards adversarial-batch statistics per optimizer step) and draw fresh
    dropout masks, so the attack would chase a different network at every step. In eval
    mode it attacks the deterministic network the evaluation attacks see, as TRADES'
    authors' code does (``model.eval()`` around the inner loop). The outer loss on
    x_adv is then computed in train mode, like the clean forward. On a backbone without
    BatchNorm or dropout (the digits MLP) both modes give the same numbers.
    """
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)
