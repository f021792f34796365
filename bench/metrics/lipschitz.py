"""A local Lipschitz estimate of the decision margin at test inputs.

For an input x with label y and logits f(x), the margin m(x) = f_y(x) − max_{j≠y} f_j(x)
is positive iff x is classified correctly, and to first order the smallest L2
perturbation that flips the decision is |m(x)| / ‖∇ₓ m(x)‖₂ (the quantity DeepFool
linearises). We report ‖∇ₓ m(x)‖₂ — gradient with respect to the pixels in [0, 1], the
space the attacks work in — averaged and maximised over the inputs; smaller means a
flatter, locally more robust classifier.

Choices: the reference class is the *true* label y (not the prediction, so a
misclassified input measures the margin it would need to recover); max over j ≠ y is
taken at x (its gradient is that of the runner-up logit, which is well defined away from
ties, a measure-zero set). Inputs are processed in batches with ``torch.autograd.grad``
with respect to the inputs only, so no parameter gradient is accumulated; the model's
own state is left as it was (eval mode, parameter .grad cleared afterwards anyway).
"""
from __future__ import annotations

import math

import torch

from bench.core.errors import BenchError


def margin_gradient_norms(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, *,
                          batch_size: int = 256, device: torch.device | str = "cpu") -> torch.Tensor:
    """‖∇ₓ (f_y − max_{j≠y} f_j)‖₂ for every input (float64 on CPU, shape (N,))."""
    if x.shape[0] != y.shape[0]:
        raise BenchError(f"{x.shape[0]} inputs but {y.shape[0]} labels")
    if x.shape[0] == 0:
        raise BenchError("no inputs to estimate the Lipschitz constant on")
    if batch_size < 1:
        raise BenchError(f"batch_size must be >= 1, got {batch_size}")
    norms = []
    was_training = model.training
    model.eval()
    try:
        with torch.enable_grad():
            for start in range(0, x.shape[0], batch_size):
                xb = x[start:start + batch_size].to(device=device, dtype=torch.float32).requires_grad_(True)
                yb = y[start:start + batch_size].to(device)
                logits = model(xb).float()
                if logits.shape[1] < 2:
                    raise BenchError("the model has fewer than 2 outputs: no margin to differentiate")
                true = logits.gather(1, yb[:, None]).squeeze(1)
                others = logits.scatter(1, yb[:, None], -math.inf)
                margin = true - others.max(dim=1).values
                # samples do not interact in eval mode, so the gradient of the sum is the
                # per-sample gradient of each margin
                (grad,) = torch.autograd.grad(margin.sum(), xb)
                norms.append(grad.flatten(1).double().norm(dim=1).cpu())
    finally:
        model.train(was_training)
        model.zero_grad(set_to_none=True)
    return torch.cat(norms)


def lipschitz_summary(norms: torch.Tensor) -> dict:
    """mean / max / median of the gradient norms; non-finite ones are counted, never averaged."""
    finite = torch.isfinite(norms)
    out = {"n_inputs": int(norms.numel()), "n_non_finite": int((~finite).sum()),
           "reference": "true label", "space": "pixels in [0, 1]", "norm": "L2"}
    if not finite.any():
        reason = "every margin gradient is non-finite"
        return {**out, "mean": None, "mean_reason": reason, "max": None, "max_reason": reason,
                "median": None, "median_reason": reason}
    good = norms[finite]
    return {**out, "mean": float(good.mean()), "max": float(good.max()), "median": float(good.median())}
