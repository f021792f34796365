"""Counting what an attack costs: forward and backward passes per input (AttackBench's budget unit).

AttackBench (Cinà et al. 2024) compares minimum-norm attacks at an equal budget of forward +
backward passes per input. :class:`QueryCounter` wraps the model an attack sees and counts,
per input row, every forward pass and every backward pass through the logits (a hook on
the output tensor fires once per ``backward``/``autograd.grad`` that reaches it), so the
recorded budget is measured, not declared.
"""
from __future__ import annotations

import torch


class QueryCounter(torch.nn.Module):
    """``model`` with a running count of the input rows it forwarded and back-propagated."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model
        self.train(model.training)
        self.forward_rows = 0
        self.backward_rows = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.model(x)
        rows = int(x.shape[0])
        self.forward_rows += rows
        if out.requires_grad:
            out.register_hook(self._count_backward(rows))
        return out

    def _count_backward(self, rows: int):
        def hook(grad: torch.Tensor) -> None:
            self.backward_rows += rows
        return hook

    def per_input(self, n: int) -> dict:
        """Passes per input over ``n`` attacked inputs."""
        if n <= 0:
            return {"forward": 0.0, "backward": 0.0, "total": 0.0}
        f, b = self.forward_rows / n, self.backward_rows / n
        return {"forward": f, "backward": b, "total": f + b}
