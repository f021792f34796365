"""The Latent Point Collapse family (Sbailò & Ghiringhelli, arXiv 2310.08224, Table III).

Loss: L = CE(W z, y) + γ_e · (1/B) Σ_i ‖z_i‖², with z = W_L2 h + b_L2 a *linear*
penultimate layer and a bias-free classifier W. Default γ_e = min(1e-2 · 1.05^e, 1e6).
"""
from __future__ import annotations

from lpc import GeometricSchedule, Schedule, latent_penalty
from registry.base import HeadOutput, Plugin, register_plugin
from registry.losses import supervised_contrastive_loss


class _LatentPenaltyPlugin(Plugin):
    """CE + γ‖latent‖²; the latent is z (or h for LPC-NoPen)."""

    def __init__(self, feature_dim: int, num_classes: int, latent_dims=None, *,
                 gamma: Schedule | None = None, penalty_per_dimension: bool = False) -> None:
        super().__init__(feature_dim, num_classes, latent_dims)
        self.gamma = gamma if gamma is not None else GeometricSchedule()
        self.penalty_per_dimension = penalty_per_dimension

    def schedule_values(self) -> dict[str, float]:
        return {"gamma": self.gamma(self.epoch)}

    def loss_terms(self, out: HeadOutput, y):
        return {
            "ce": self.cross_entropy(out, y),
            "penalty": latent_penalty(out.latent, self.gamma(self.epoch),
                                      per_dimension=self.penalty_per_dimension),
        }


@register_plugin("LPC")
class LPC(_LatentPenaltyPlugin):
    """LPC (arXiv 2310.08224): linear penultimate layer of the intermediate width d.

    Loss = CE + γ‖z‖² (sum over the d coordinates, batch mean). Defaults: γ from 1e-2,
    ×1.05 per epoch, capped at 1e6; ``penalty_per_dimension=True`` divides by d as the
    authors' code does.
    """

    latent_width = "intermediate"


@register_plugin("LPC-WIDE")
class LPCWide(_LatentPenaltyPlugin):
    """LPC-WIDE (arXiv 2310.08224): as LPC with the wide latent width. Loss = CE + γ‖z‖²."""

    latent_width = "wide"


@register_plugin("LPC-NARROW")
class LPCNarrow(_LatentPenaltyPlugin):
    """LPC-NARROW (arXiv 2310.08224): as LPC with the narrow latent width. Loss = CE + γ‖z‖²."""

    latent_width = "narrow"


@register_plugin("LPC-NoPen")
class LPCNoPenultimate(_LatentPenaltyPlugin):
    """LPC-NoPen (arXiv 2310.08224): no penultimate layer; the penalty acts on h itself.

    Loss = CE(W h, y) + γ‖h‖². Same γ schedule as LPC. The latent for the metrics is h.
    """

    latent_width = None


@register_plugin("LPC-SCL")
class LPCSupCon(_LatentPenaltyPlugin):
    """LPC-SCL (arXiv 2310.08224): LPC plus supervised contrastive loss on the backbone features.

    Loss = CE(W z, y) + γ‖z‖² + λ · SupCon(h, y; τ). Defaults: τ = 0.05, λ = 1, γ as LPC.
    The three terms are logged separately as ``ce``, ``penalty`` and ``supcon``.
    """

    latent_width = "intermediate"

    def __init__(self, feature_dim: int, num_classes: int, latent_dims=None, *,
                 gamma: Schedule | None = None, penalty_per_dimension: bool = False,
                 supcon_temperature: float = 0.05, supcon_weight: float = 1.0) -> None:
        super().__init__(feature_dim, num_classes, latent_dims, gamma=gamma,
                         penalty_per_dimension=penalty_per_dimension)
        self.supcon_temperature = supcon_temperature
        self.supcon_weight = supcon_weight

    def loss_terms(self, out: HeadOutput, y):
        terms = super().loss_terms(out, y)
        terms["supcon"] = self.supcon_weight * supervised_contrastive_loss(
            out.features, y, self.supcon_temperature)
        return terms
