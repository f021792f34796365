"""The one training step: the trainer's and the estimate's (so the estimate times what the run does).

A step is the clean forward (under the suite's autocast), the plugin's loss terms, the
backward and the optimizer's update. A plugin whose loss uses the input (``Plugin.uses_input``:
adversarial training, input-gradient penalties) gets a ``registry.Batch`` with the inputs,
the labels, the whole classifier, the step's autocast and a seed derived from the run's
seed and the optimizer step, so that its inner attack draws the same random start whether
the run was resumed or not. A head-only plugin gets ``loss(out, y)`` as before: its numbers
do not change.
"""
from __future__ import annotations

from typing import Sequence

import torch

from bench.core.device import autocast
from registry import Batch, HeadOutput


def step_seed(seed: int, step: int) -> int:
    """The seed of optimizer step ``step`` of a run seeded ``seed`` (inner attacks' random starts)."""
    return (seed * 2_654_435_761 + step * 40_503 + 99_991) % (2**63 - 1)


def training_loss(model, x: torch.Tensor, y: torch.Tensor, *, device: torch.device, amp: str,
                  seed: int = 0) -> tuple[HeadOutput, dict[str, torch.Tensor]]:
    """(clean HeadOutput, named loss terms with "total") of one batch, with the graph kept."""
    head = model.head
    if head.input_grad:
        x = x.detach().requires_grad_(True)
    with autocast(device, amp):
        out = model.forward_all(x)
    if not head.uses_input():
        return out, head.loss(out, y)
    batch = Batch(x=x, y=y, model=model, seed=seed, autocast=lambda: autocast(device, amp))
    return out, head.loss(out, y, batch)


def training_step(model, optimizer: torch.optim.Optimizer, params: Sequence[torch.nn.Parameter],
                  x: torch.Tensor, y: torch.Tensor, *, device: torch.device, amp: str,
                  seed: int = 0) -> tuple[HeadOutput, dict[str, torch.Tensor]]:
    """One optimizer step on (x, y); returns the clean output and the loss terms (not detached)."""
    out, terms = training_loss(model, x, y, device=device, amp=amp, seed=seed)
    for p in params:  # optimizer.zero_grad(set_to_none=True), without its per-call overhead
        p.grad = None
    terms["total"].backward()
    optimizer.step()
    return out, terms
