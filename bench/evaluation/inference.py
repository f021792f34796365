"""Run a model over a tensor in batches: the one helper for predictions, logits and latents.

Inputs are uint8 (divided by ``pixel_scale``) or float in [0, 1]; outputs come back on the
CPU in float32. With ``latents=True`` the model must have ``forward_all(x)`` returning
``.latent`` and ``.logits`` (a ``Classifier``, or a ``LatentProbe`` around any model).
"""
from __future__ import annotations

from typing import Callable

import torch

from bench.core.device import autocast


@torch.no_grad()
def outputs(model, x: torch.Tensor, *, device: torch.device, batch_size: int, pixel_scale: float = 1.0,
            latents: bool = False, amp: str = "off",
            check: Callable[[torch.Tensor], None] | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(logits, latents or None) of ``model`` on ``x``; ``check`` sees each batch's logits."""
    logits, zs = [], []
    for start in range(0, x.shape[0], batch_size):
        xb = x[start:start + batch_size].to(device)
        xb = xb.float().div_(pixel_scale) if pixel_scale != 1.0 or not xb.is_floating_point() else xb
        with autocast(device, amp):
            if latents:
                out = model.forward_all(xb)
                lb, zb = out.logits, out.latent
            else:
                lb, zb = model(xb), None
        if check is not None:
            check(lb)
        logits.append(lb.float().cpu())
        if zb is not None:
            zs.append(zb.float().cpu())
    if not logits:
        return torch.zeros(0, 0), (torch.zeros(0, 0) if latents else None)
    return torch.cat(logits), (torch.cat(zs) if latents else None)
