"""PGD adversarial training (Madry et al., ICLR 2018), L2 or L∞ through its parameters."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch.nn.functional as F

from registry.base import Batch, HeadOutput, Plugin, register_plugin
from registry.losses.adversarial import check_budget, inner_attack_mode, pgd, random_start


@dataclass(frozen=True)
class PGDParams:
    """The inner attack of PGD adversarial training (an ε-ball in [0, 1] pixel space)."""

    norm: Literal["L2", "Linf"] = "Linf"
    eps: float = 8 / 255           # ε
    steps: int = 10                # inner PGD steps
    step_size: float = 2 / 255     # α
    random_start: bool = True      # start uniformly in the ball (Madry et al.), else at x

    def __post_init__(self) -> None:
        check_budget(self.norm, self.eps, self.steps, self.step_size)


class PGDTraining:
    """The adversarial cross-entropy term, shared by PGD-AT and LPC-PGD-AT (a mixin of a Plugin
    whose ``params`` has PGDParams' fields)."""

    def adversarial_inputs(self, batch: Batch):
        p = self.params
        start = random_start(batch.x.detach(), p.norm, p.eps, batch.generator()) if p.random_start else None
        with inner_attack_mode(batch.model):
            return pgd(batch.logits, batch.x, batch.y, norm=p.norm, eps=p.eps, steps=p.steps,
                       step_size=p.step_size, start=start)

    def input_terms(self, out: HeadOutput, batch: Batch):
        x_adv = self.adversarial_inputs(batch)
        return {"adv_ce": F.cross_entropy(batch.logits(x_adv).float(), batch.y)}


@register_plugin("PGD-AT")
class PGDAdversarialTraining(PGDTraining, Plugin):
    """PGD-AT (Madry et al., ICLR 2018): train on the worst case in an ε-ball found by PGD.

    Loss = CE(f(x_adv), y), x_adv = PGD_k(x; ε, α) maximising CE(f(·), y) over
    ‖x_adv − x‖_p ≤ ε, x_adv ∈ [0, 1] (``registry.losses.adversarial.pgd``). The clean
    cross-entropy is not in the loss (Madry et al.'s objective); the clean forward only
    gives the logged training accuracy. Defaults (the CIFAR-10 literature): L∞, ε = 8/255,
    α = 2/255, 10 steps, uniform random start; ``norm: L2`` for the L2 ball.

    The inner attack runs in eval mode (``inner_attack_mode``: BatchNorm's running
    statistics and dropout are left out of the inner steps), inside the trainer's autocast,
    from a random start drawn from ``batch.generator()`` (seeded by the run's seed and the
    optimizer step, so a resumed run draws the same starts). The outer CE on x_adv is in
    train mode. Cost: about (steps + 1) plain steps. Head: NoPen's (a linear classifier on h).
    """

    Params = PGDParams

    def loss_terms(self, out: HeadOutput, y):
        return {}
