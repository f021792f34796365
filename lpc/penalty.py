"""The LPC penalty γ‖z‖², averaged over the batch."""
from __future__ import annotations

import torch


def latent_penalty(z: torch.Tensor, gamma: float | torch.Tensor, *,
                   per_dimension: bool = False) -> torch.Tensor:
    """Return γ · (1/B) Σ_i ‖z_i‖² as a float32 scalar.

    * ``z`` has shape (B, d); any leading batch shape is flattened.
    * ``per_dimension=False`` (default) sums over the d coordinates, as in the paper's
      equation L = CE + γ‖z‖². The authors' public code instead takes the mean over the
      coordinates, i.e. γ‖z‖²/d; pass ``per_dimension=True`` to reproduce that. The two
      differ only by a constant factor d, which is absorbed by γ.
    * The square is taken in float32 even when ``z`` comes out of a bf16/fp16 autocast
      region: with γ up to 1e6 the penalty dominates the loss, and bf16's 8-bit
      mantissa would round the collapsing ‖z‖² to zero long before it is small.
    """
    if z.dim() < 2:
        raise ValueError(f"latent_penalty expects z of shape (B, d), got {tuple(z.shape)}")
    z32 = z.float() if z.dim() == 2 else z.float().flatten(0, -2)
    squared = z32.pow(2)
    per_sample = squared.mean(dim=1) if per_dimension else squared.sum(dim=1)
    if isinstance(gamma, torch.Tensor):
        gamma = gamma.to(device=z.device, dtype=torch.float32)
    # a Python float multiplies in float32 without building a tensor on every step
    return per_sample.mean() * gamma
