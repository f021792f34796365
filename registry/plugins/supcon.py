"""Supervised contrastive baseline of arXiv 2310.08224, Table III."""
from __future__ import annotations

from registry.base import HeadOutput, Plugin, register_plugin
from registry.losses import supervised_contrastive_loss


@register_plugin("SCL")
class SupConCE(Plugin):
    """SCL: CE plus supervised contrastive loss (Khosla et al., NeurIPS 2020) on h.

    Loss = CE(W h, y) + λ · SupCon(h, y; τ), trained jointly (not two-stage). Defaults:
    τ = 0.05 (the LPC paper's value), λ = 1. No penultimate layer; the latent is h.
    """

    def __init__(self, feature_dim: int, num_classes: int, latent_dims=None, *,
                 supcon_temperature: float = 0.05, supcon_weight: float = 1.0) -> None:
        super().__init__(feature_dim, num_classes, latent_dims)
        self.supcon_temperature = supcon_temperature
        self.supcon_weight = supcon_weight

    def loss_terms(self, out: HeadOutput, y):
        return {
            "ce": self.cross_entropy(out, y),
            "supcon": self.supcon_weight * supervised_contrastive_loss(out.features, y, self.supcon_temperature),
        }
