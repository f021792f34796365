"""The LPC head: a low-dimensional *linear* penultimate layer and a bias-free classifier."""
from __future__ import annotations

import torch
from torch import nn


class LPCHead(nn.Module):
    """Backbone features h → latent z = W_L2 h + b_L2 (dimension d) → logits f = W z.

    The penultimate layer is linear on purpose: the paper shows that the collapse onto
    hypercube vertices relies on z being an affine function of h. The classifier has no
    bias (the paper fixes b = 0), so the decision regions are cones through the origin
    and the penalty γ‖z‖² can pull every class point towards 0 without moving them.

    ``forward`` returns ``(z, logits)``; feed ``z`` to :func:`lpc.latent_penalty`.
    """

    def __init__(self, in_features: int, latent_dim: int, num_classes: int,
                 classifier_bias: bool = False) -> None:
        super().__init__()
        if latent_dim <= 0 or in_features <= 0 or num_classes <= 1:
            raise ValueError(
                f"LPCHead needs in_features > 0, latent_dim > 0, num_classes > 1; got "
                f"{in_features}, {latent_dim}, {num_classes}")
        self.latent = nn.Linear(in_features, latent_dim)
        self.classifier = nn.Linear(latent_dim, num_classes, bias=classifier_bias)

    @property
    def latent_dim(self) -> int:
        return self.latent.out_features

    def forward(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = self.latent(h)
        return z, self.classifier(z)
