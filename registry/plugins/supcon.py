"""Supervised contrastive baseline of arXiv 2310.08224, Table III."""
from __future__ import annotations

from dataclasses import dataclass

from registry.base import HeadOutput, Plugin, register_plugin
from registry.losses import supervised_contrastive_loss


@register_plugin("SCL")
class SupConCE(Plugin):
    """SCL: CE plus supervised contrastive loss (Khosla et al., NeurIPS 2020) on h.

    Loss = CE(W h, y) + λ · SupCon(h, y; τ), trained jointly (not two-stage). Defaults:
    τ = 0.05 (the LPC paper's value), λ = 1. No penultimate layer; the latent is h.
    """

    @dataclass(frozen=True)
    class Params:
        supcon_temperature: float = 0.05   # τ
        supcon_weight: float = 1.0         # λ

    def loss_terms(self, out: HeadOutput, y):
        p = self.params
        return {
            "ce": self.cross_entropy(out, y),
            "supcon": p.supcon_weight * supervised_contrastive_loss(out.features, y, p.supcon_temperature),
        }
