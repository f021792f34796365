"""LPC combined with PGD adversarial training: a head-side and an input-side regularizer in one loss."""
from __future__ import annotations

from dataclasses import dataclass

from registry.base import HeadOutput, register_plugin
from registry.plugins.lpc_family import LatentPenaltyParams, _LatentPenaltyPlugin
from registry.plugins.pgd_at import PGDParams, PGDTraining


@dataclass(frozen=True)
class LPCPGDParams(LatentPenaltyParams, PGDParams):
    """LPC's γ schedule and PGD-AT's inner attack."""


@register_plugin("LPC-PGD-AT")
class LPCAdversarial(PGDTraining, _LatentPenaltyPlugin):
    """LPC-PGD-AT (arXiv 2310.08224 with Madry et al., ICLR 2018): LPC's head and penalty, trained on PGD inputs.

    Loss = CE(f(x_adv), y) + γ_e‖z(x)‖², x_adv from PGD as in PGD-AT (same parameters and
    defaults: L∞ ε = 8/255, α = 2/255, 10 steps, random start), z the clean batch's linear
    latent of the intermediate width, γ as LPC (1e-2 · 1.05^e, capped at 1e6). The clean CE
    is replaced by the adversarial one (Madry's objective); the latent penalty stays on the
    clean forward, where LPC puts it. Inner attack in eval mode, seeded by run seed and step.
    """

    latent_width = "intermediate"
    Params = LPCPGDParams

    def loss_terms(self, out: HeadOutput, y):
        terms = super().loss_terms(out, y)
        del terms["ce"]   # replaced by the adversarial CE of input_terms
        return terms
