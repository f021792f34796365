"""Supervised contrastive loss (Khosla et al., NeurIPS 2020, "Supervised Contrastive Learning").

For L2-normalised embeddings e_i and temperature τ, with P(i) the other samples of i's
class in the batch and A(i) all samples but i:

    L = (1/|I|) Σ_{i ∈ I} −(1/|P(i)|) Σ_{p ∈ P(i)} log( exp(e_i·e_p/τ) / Σ_{a ∈ A(i)} exp(e_i·e_a/τ) )

where I are the anchors with at least one positive (an anchor alone in its class has no
term). This is the "L_out" form of the paper, with one view per sample: in LPC-SCL and
SCL the positives are the other same-class samples of the mini-batch. Default τ = 0.05
(the LPC paper's value). Computed in float32.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def supervised_contrastive_loss(embeddings: torch.Tensor, labels: torch.Tensor,
                                temperature: float = 0.05) -> torch.Tensor:
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    with torch.autocast(embeddings.device.type, enabled=False):  # float32 even inside autocast
        e = F.normalize(embeddings.float(), dim=1)
        similarity = e @ e.T / temperature
    n = e.shape[0]
    self_mask = torch.eye(n, dtype=torch.bool, device=e.device)
    # log-softmax over A(i): exclude the anchor itself from the denominator
    similarity = similarity.masked_fill(self_mask, float("-inf"))
    log_prob = similarity - torch.logsumexp(similarity, dim=1, keepdim=True)
    positives = (labels[:, None] == labels[None, :]) & ~self_mask
    n_pos = positives.sum(dim=1)
    anchors = n_pos > 0
    if not bool(anchors.any()):
        return e.sum() * 0.0  # no positive pair in the batch: a zero that keeps the graph
    pos_log_prob = log_prob.masked_fill(~positives, 0.0).sum(dim=1)
    return -(pos_log_prob[anchors] / n_pos[anchors]).mean()
