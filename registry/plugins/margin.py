"""Margin-based softmax baselines of arXiv 2310.08224, Table III: ArcFace and CosFace."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lpc import LinearRamp, Schedule
from registry.base import HeadOutput, Plugin, register_plugin
from registry.losses import additive_angular_margin_logits, large_margin_cosine_logits


class NormalisedLinear(nn.Module):
    """cos θ_j = ŵ_j · ĥ: a bias-free linear map on unit vectors."""

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(out_features, in_features))
        nn.init.xavier_uniform_(self.weight)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        # float32 even inside a bf16 autocast region: with s = 64 a bf16 cosine (8-bit
        # mantissa) would move the logits by ~0.25
        with torch.autocast(h.device.type, enabled=False):
            return F.linear(F.normalize(h.float(), dim=1), F.normalize(self.weight.float(), dim=1))


class _MarginPlugin(Plugin):
    margin_fn = staticmethod(additive_angular_margin_logits)

    def __init__(self, feature_dim: int, num_classes: int, latent_dims=None, *,
                 margin: Schedule, margin_scale: Schedule | None = None) -> None:
        super().__init__(feature_dim, num_classes, latent_dims)
        self.margin = margin
        self.scale = margin_scale if margin_scale is not None else LinearRamp(16.0, 64.0, 100)

    def build_classifier(self, in_features: int) -> nn.Module:
        return NormalisedLinear(in_features, self.num_classes)

    def schedule_values(self) -> dict[str, float]:
        return {"margin": self.margin(self.epoch), "scale": self.scale(self.epoch)}

    def forward(self, h: torch.Tensor) -> HeadOutput:
        cosine = self.classifier(h)
        return HeadOutput(logits=self.scale(self.epoch) * cosine, latent=h, features=h)

    def loss_terms(self, out: HeadOutput, y):
        scale = self.scale(self.epoch)
        cosine = out.logits.float() / scale
        train_logits = self.margin_fn(cosine, y, self.margin(self.epoch), scale)
        return {self.term_name: F.cross_entropy(train_logits, y)}


@register_plugin("ArcFace")
class ArcFace(_MarginPlugin):
    """ArcFace (Deng et al., CVPR 2019): additive angular margin on the normalised classifier.

    Loss = CE(s·[cos(θ_y + m), cos θ_j≠y], y). Inference logits are the scaled cosines
    s·cos θ_j (no margin). Defaults (arXiv 2310.08224): m ramps 0.1 → 0.5 and s ramps
    16 → 64 over the suite's ramp epochs (100 when built outside a suite).
    No penultimate layer; the latent is h.
    """

    term_name = "arcface"
    margin_fn = staticmethod(additive_angular_margin_logits)

    def __init__(self, feature_dim: int, num_classes: int, latent_dims=None, *,
                 arcface_margin: Schedule | None = None, margin_scale: Schedule | None = None) -> None:
        super().__init__(feature_dim, num_classes, latent_dims,
                         margin=arcface_margin if arcface_margin is not None else LinearRamp(0.1, 0.5, 100),
                         margin_scale=margin_scale)


@register_plugin("CosFace")
class CosFace(_MarginPlugin):
    """CosFace (Wang et al., CVPR 2018): additive cosine margin on the normalised classifier.

    Loss = CE(s·[cos θ_y − m, cos θ_j≠y], y). Inference logits are the scaled cosines
    s·cos θ_j (no margin). Defaults (arXiv 2310.08224): m ramps 0.05 → 0.25 and s ramps
    16 → 64 over the suite's ramp epochs (100 when built outside a suite).
    No penultimate layer; the latent is h.
    """

    term_name = "cosface"
    margin_fn = staticmethod(large_margin_cosine_logits)

    def __init__(self, feature_dim: int, num_classes: int, latent_dims=None, *,
                 cosface_margin: Schedule | None = None, margin_scale: Schedule | None = None) -> None:
        super().__init__(feature_dim, num_classes, latent_dims,
                         margin=cosface_margin if cosface_margin is not None else LinearRamp(0.05, 0.25, 100),
                         margin_scale=margin_scale)
