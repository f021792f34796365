"""TRADES (Zhang et al., ICML 2019): clean cross-entropy plus β times a robustness KL."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from registry.base import Batch, HeadOutput, Plugin, register_plugin
from registry.losses.adversarial import check_budget, inner_attack_mode, pgd


def _inner_kl(adv_logits, target_probs):
    """The inner objective: KL(target ‖ p(x_adv)), summed (the authors' KLDivLoss(size_average=False))."""
    return F.kl_div(F.log_softmax(adv_logits.float(), dim=1), target_probs, reduction="sum")


def _kl(clean_logits, adv_logits, reduction: str):
    """KL(p(x) ‖ p(x_adv)), p = softmax, in float32."""
    return F.kl_div(F.log_softmax(adv_logits.float(), dim=1), F.softmax(clean_logits.float(), dim=1),
                    reduction=reduction)


@register_plugin("TRADES")
class Trades(Plugin):
    """TRADES (Zhang et al., ICML 2019, "Theoretically Principled Trade-off between Robustness and Accuracy").

    Loss = CE(f(x), y) + β · KL(p(x) ‖ p(x_adv)) (batch mean), where x_adv maximises
    KL(p(x) ‖ p(·)) by ``steps`` PGD steps (sign steps for L∞, normalised-gradient steps
    for L2; ``registry.losses.adversarial.pgd``) started at x + 0.001·N(0, I), as in
    the authors' code. p(x) is the target of the inner maximisation (no gradient there) and
    carries gradient in the outer loss, as in the authors' code. Defaults (the paper's
    CIFAR-10 setting): β = 6, L∞ ε = 8/255 (the paper: 0.031), α = 2/255 (0.007), 10 steps.
    The authors' L2 variant steps δ with SGD and renormalises it; here L2 uses the same
    PGD as PGD-AT (normalised-gradient steps, projection to the ball).

    The inner maximisation runs in eval mode, as the authors' code does (``model.eval()``
    around it; see ``inner_attack_mode``), inside the trainer's autocast, with the noise
    drawn from ``batch.generator()`` (seeded by run seed and step: exact on resume). The
    outer forward of x_adv is in train mode. Cost: about (steps + 2) plain steps.
    """

    @dataclass(frozen=True)
    class Params:
        beta: float = 6.0              # β
        norm: Literal["L2", "Linf"] = "Linf"
        eps: float = 8 / 255           # ε
        steps: int = 10                # inner steps
        step_size: float = 2 / 255     # α
        start_noise: float = 0.001     # x_adv⁰ = x + start_noise · N(0, I) (the authors' 0.001)

        def __post_init__(self) -> None:
            check_budget(self.norm, self.eps, self.steps, self.step_size)
            if not self.beta >= 0:
                raise ValueError(f"beta must be >= 0, got {self.beta}")
            if not self.start_noise >= 0:
                raise ValueError(f"start_noise must be >= 0, got {self.start_noise}")

    def input_terms(self, out: HeadOutput, batch: Batch):
        p = self.params
        x = batch.x.detach()
        noise = torch.randn(x.shape, generator=batch.generator(), device=x.device, dtype=x.dtype)
        with inner_attack_mode(batch.model):
            with torch.no_grad():  # the inner target p(x), in the inner loop's (eval) mode as the authors'
                target = F.softmax(batch.logits(x).float(), dim=1)
            x_adv = pgd(batch.logits, x, target, norm=p.norm, eps=p.eps, steps=p.steps, step_size=p.step_size,
                        loss=_inner_kl, start=x + p.start_noise * noise)
        return {"trades_kl": p.beta * _kl(out.logits, batch.logits(x_adv), "batchmean")}
