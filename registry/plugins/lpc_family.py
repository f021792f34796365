"""The Latent Point Collapse family (Sbailò & Ghiringhelli, arXiv 2310.08224, Table III).

Loss: L = CE(W z, y) + γ_e · (1/B) Σ_i ‖z_i‖², with z = W_L2 h + b_L2 a *linear*
penultimate layer and a bias-free classifier W. Default γ_e = min(1e-2 · 1.05^e, 1e6).
The head and the penalty are the ``lpc`` library's own (``lpc.LPCHead``,
``lpc.latent_penalty``): what the library advertises is what the benchmark measures.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from lpc import GeometricSchedule, LPCHead, latent_penalty
from registry.base import HeadOutput, Plugin, register_plugin
from registry.losses import supervised_contrastive_loss


@dataclass(frozen=True)
class LatentPenaltyParams:
    """Parameters of every LPC-family plugin."""

    gamma: GeometricSchedule = GeometricSchedule()   # γ_e = min(start · factor^e, cap): 1e-2 · 1.05^e ≤ 1e6
    per_dimension: bool = False     # True: γ‖z‖²/d, as the authors' code (the paper writes γ‖z‖²)


class _LatentPenaltyPlugin(Plugin):
    """CE + γ‖latent‖²; the latent is z (or h for LPC-NoPen)."""

    Params = LatentPenaltyParams

    def build_penultimate(self):
        if self.latent_dim is None:
            return None
        # lpc.LPCHead builds z = W_L2 h + b_L2 and the bias-free classifier; its two layers
        # are this plugin's ``penultimate`` and ``classifier`` (the parameter names every
        # plugin has, so checkpoints and the optimizer's classifier group stay the same),
        # and ``forward`` calls the head itself. It is kept out of the module tree
        # (object.__setattr__) so that its parameters are registered once.
        object.__setattr__(self, "lpc_head", LPCHead(self.feature_dim, self.latent_dim, self.num_classes))
        return self.lpc_head.latent

    def build_classifier(self, in_features: int):
        if self.latent_dim is None:
            return super().build_classifier(in_features)
        return self.lpc_head.classifier

    def forward(self, h: torch.Tensor) -> HeadOutput:
        if self.latent_dim is None:
            return super().forward(h)
        z, logits = self.lpc_head(h)
        return HeadOutput(logits=logits, latent=z, features=h)

    def schedule_values(self) -> dict[str, float]:
        return {"gamma": self.params.gamma(self.epoch)}

    def loss_terms(self, out: HeadOutput, y):
        return {
            "ce": self.cross_entropy(out, y),
            "penalty": latent_penalty(out.latent, self.params.gamma(self.epoch),
                                      per_dimension=self.params.per_dimension),
        }


@register_plugin("LPC")
class LPC(_LatentPenaltyPlugin):
    """LPC (arXiv 2310.08224): linear penultimate layer of the intermediate width d.

    Loss = CE + γ‖z‖² (sum over the d coordinates, batch mean). Defaults: γ from 1e-2,
    ×1.05 per epoch, capped at 1e6; ``per_dimension=True`` divides by d as the
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


@dataclass(frozen=True)
class LPCSupConParams(LatentPenaltyParams):
    supcon_temperature: float = 0.05   # τ
    supcon_weight: float = 1.0         # λ


@register_plugin("LPC-SCL")
class LPCSupCon(_LatentPenaltyPlugin):
    """LPC-SCL (arXiv 2310.08224): LPC plus supervised contrastive loss on the backbone features.

    Loss = CE(W z, y) + γ‖z‖² + λ · SupCon(h, y; τ). Defaults: τ = 0.05, λ = 1, γ as LPC.
    The three terms are logged separately as ``ce``, ``penalty`` and ``supcon``.
    """

    latent_width = "intermediate"
    Params = LPCSupConParams

    def loss_terms(self, out: HeadOutput, y):
        terms = super().loss_terms(out, y)
        terms["supcon"] = self.params.supcon_weight * supervised_contrastive_loss(
            out.features, y, self.params.supcon_temperature)
        return terms
