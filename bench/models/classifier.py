"""The full classifier: normalisation → backbone → plugin head, on [0, 1] pixel inputs."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from registry import HeadOutput, Plugin


def _autocast_enabled(device_type: str) -> bool:
    try:
        return torch.is_autocast_enabled(device_type)
    except TypeError:  # torch < 2.4: no device argument
        return True


class Classifier(nn.Module):
    """``forward(x)`` gives the plugin's inference logits; ``forward_all(x)`` the HeadOutput.

    Normalisation by the training split's per-channel mean/std happens inside, so attacks
    and their budgets live in [0, 1] pixel space.
    """

    def __init__(self, backbone: nn.Module, head: Plugin, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head
        shape = (1, len(mean), 1, 1)
        self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float32).view(shape))
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32).view(shape))

    def forward_all(self, x: torch.Tensor) -> HeadOutput:
        mean, std = self.mean, self.std
        if x.dim() == 2:  # flat inputs (rare): one channel
            mean, std = mean.flatten()[:1], std.flatten()[:1]
        h = self.backbone((x - mean) / std)
        # the head runs in float32 even under bf16 autocast: a collapsing z has ‖z‖ of
        # order 1e-3, below bf16's resolution at the scale of the rest of the network,
        # so the penalty and the geometry metrics would see rounding noise, not collapse
        if not _autocast_enabled(h.device.type):  # skip the context's cost on every step
            return self.head(h.float())
        with torch.autocast(h.device.type, enabled=False):
            return self.head(h.float())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_all(x).logits
