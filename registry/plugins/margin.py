"""Margin-based softmax baselines of arXiv 2310.08224, Table III: ArcFace and CosFace."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from lpc import LinearRamp
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


# The margin and the scale ramp linearly over the first ``epochs`` epochs (the paper gives
# the end points, not the ramp length; 250 is where its recipe starts decaying the lr).
RAMP_EPOCHS = 250


class _MarginPlugin(Plugin):
    margin_fn = staticmethod(additive_angular_margin_logits)

    def build_classifier(self, in_features: int) -> nn.Module:
        return NormalisedLinear(in_features, self.num_classes)

    def metric_classifier_weight(self) -> tuple[torch.Tensor | None, bool]:
        return self.classifier.weight.detach(), True   # a cosine classifier: only the rows' directions count

    def schedule_values(self) -> dict[str, float]:
        return {"margin": self.params.margin(self.epoch), "scale": self.params.scale(self.epoch)}

    def forward(self, h: torch.Tensor) -> HeadOutput:
        cosine = self.classifier(h)
        return HeadOutput(logits=self.params.scale(self.epoch) * cosine, latent=h, features=h)

    def loss_terms(self, out: HeadOutput, y):
        scale = self.params.scale(self.epoch)
        cosine = out.logits.float() / scale
        train_logits = self.margin_fn(cosine, y, self.params.margin(self.epoch), scale)
        return {self.term_name: F.cross_entropy(train_logits, y)}


@register_plugin("ArcFace")
class ArcFace(_MarginPlugin):
    """ArcFace (Deng et al., CVPR 2019): additive angular margin on the normalised classifier.

    Loss = CE(s·[cos(θ_y + m), cos θ_j≠y], y). Inference logits are the scaled cosines
    s·cos θ_j (no margin). Defaults (arXiv 2310.08224): m ramps 0.1 → 0.5 and s ramps
    16 → 64 over 250 epochs. No penultimate layer; the latent is h.
    """

    term_name = "arcface"
    margin_fn = staticmethod(additive_angular_margin_logits)

    @dataclass(frozen=True)
    class Params:
        margin: LinearRamp = LinearRamp(0.1, 0.5, RAMP_EPOCHS)    # m: start → end over epochs
        scale: LinearRamp = LinearRamp(16.0, 64.0, RAMP_EPOCHS)   # s


@register_plugin("CosFace")
class CosFace(_MarginPlugin):
    """CosFace (Wang et al., CVPR 2018): additive cosine margin on the normalised classifier.

    Loss = CE(s·[cos θ_y − m, cos θ_j≠y], y). Inference logits are the scaled cosines
    s·cos θ_j (no margin). Defaults (arXiv 2310.08224): m ramps 0.05 → 0.25 and s ramps
    16 → 64 over 250 epochs. No penultimate layer; the latent is h.
    """

    term_name = "cosface"
    margin_fn = staticmethod(large_margin_cosine_logits)

    @dataclass(frozen=True)
    class Params:
        margin: LinearRamp = LinearRamp(0.05, 0.25, RAMP_EPOCHS)  # m: start → end over epochs
        scale: LinearRamp = LinearRamp(16.0, 64.0, RAMP_EPOCHS)   # s
