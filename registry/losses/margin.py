"""Margin-based softmax logits on the unit hypersphere.

Both take cosines cos θ_j = ŵ_j · ẑ between the normalised features and the normalised
class weights, and return the *training* logits with a margin on the true class:

* ArcFace (Deng et al., CVPR 2019): s · cos(θ_y + m) for the true class, s · cos θ_j
  otherwise. θ_y + m is capped at π so the target logit stays monotone in θ_y.
* CosFace (Wang et al., CVPR 2018, "large margin cosine loss"): s · (cos θ_y − m) for
  the true class, s · cos θ_j otherwise.

The inference logits of both are the scaled cosines s · cos θ_j (no margin).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def _check(cosine: torch.Tensor, labels: torch.Tensor, scale: float) -> None:
    if cosine.dim() != 2 or labels.shape != cosine.shape[:1]:
        raise ValueError(f"cosine must be (B, C) and labels (B,), got {tuple(cosine.shape)}, {tuple(labels.shape)}")
    if scale <= 0:
        raise ValueError(f"scale must be > 0, got {scale}")


def additive_angular_margin_logits(cosine: torch.Tensor, labels: torch.Tensor,
                                   margin: float, scale: float) -> torch.Tensor:
    _check(cosine, labels, scale)
    cosine = cosine.float()
    target_cos = cosine.gather(1, labels[:, None]).clamp(-1 + 1e-7, 1 - 1e-7)
    theta = torch.acos(target_cos)
    target_logit = torch.cos(torch.clamp(theta + margin, max=math.pi))
    return scale * cosine.scatter(1, labels[:, None], target_logit)


def large_margin_cosine_logits(cosine: torch.Tensor, labels: torch.Tensor,
                               margin: float, scale: float) -> torch.Tensor:
    _check(cosine, labels, scale)
    cosine = cosine.float()
    return scale * (cosine - margin * F.one_hot(labels, cosine.shape[1]).to(cosine.dtype))
