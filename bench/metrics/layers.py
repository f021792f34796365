"""The features of every hidden layer of a model, through forward hooks.

Which modules are "hidden layers" (``hidden_layers``), found from the model's own modules
(no suite, no plugin class):

* a ResNet-style backbone with ``stem`` and ``stages``: the stem's output and each stage's;
* otherwise the backbone's modules in order: each activation that follows a Linear (an
  MLP's layers), and each pooling module (a CNN's stage ends, its global average pool
  included);
* then the head's latent z (when the head has a penultimate layer) and the logits, from
  ``forward_all``; without ``forward_all`` only the logits (``model(x)``).

A convolutional feature map (B, C, H, W) is reduced to (B, C) by the mean over its spatial
positions (global average pooling), so every layer gives one vector per input; the
flattened map (C·H·W up to 65,536 numbers at a CIFAR stem) would make the d × d moments
unaffordable.
"""
from __future__ import annotations

from typing import Callable, Iterator

import torch
from torch import nn

ACTIVATIONS = (nn.ReLU, nn.SiLU, nn.GELU, nn.Tanh, nn.LeakyReLU, nn.ELU, nn.Sigmoid, nn.Softplus)
POOLS = (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)


def _is_pool(module: nn.Module) -> bool:
    return isinstance(module, POOLS) or type(module).__name__ == "GlobalAvgPool"


def hidden_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """(name, module) of the backbone's hidden layers, in depth order (see the module docstring)."""
    backbone = getattr(model, "backbone", model)
    if hasattr(backbone, "stem") and hasattr(backbone, "stages"):
        return [("stem", backbone.stem)] + [(f"stage{i + 1}", s) for i, s in enumerate(backbone.stages)]
    found: list[tuple[str, nn.Module]] = []
    previous_linear = False
    for name, module in backbone.named_modules():
        if isinstance(module, nn.Linear):
            previous_linear = True
        elif isinstance(module, ACTIVATIONS) and previous_linear:
            found.append((name, module))
            previous_linear = False
        elif _is_pool(module):
            found.append((name, module))
    return [(f"layer{i + 1}", m) for i, (_, m) in enumerate(found)]


def as_vectors(t: torch.Tensor) -> torch.Tensor:
    """(B, C, …) → (B, C) by the mean over the trailing (spatial) dimensions; (B, d) unchanged."""
    t = t.detach()
    return t.flatten(2).mean(dim=2) if t.dim() > 2 else t.reshape(t.shape[0], -1)


@torch.no_grad()
def layer_batches(model: nn.Module, x: torch.Tensor, *, device: torch.device, batch_size: int,
                  layers: list[tuple[str, nn.Module]] | None = None) -> Iterator[dict[str, torch.Tensor]]:
    """For each batch of ``x`` ([0, 1] inputs), ``{layer name: (B, d) float64 CPU features}``
    in depth order: the hidden layers, then "z" (if any) and "logits"."""
    layers = hidden_layers(model) if layers is None else layers
    captured: dict[str, torch.Tensor] = {}
    handles = [module.register_forward_hook(_capture(captured, name)) for name, module in layers]
    try:
        for start in range(0, x.shape[0], batch_size):
            captured.clear()
            xb = x[start:start + batch_size].to(device)
            out: dict[str, torch.Tensor] = {}
            if hasattr(model, "forward_all"):
                result = model.forward_all(xb)
                logits = result.logits
                penultimate = getattr(getattr(model, "head", None), "penultimate", None)
                latent = result.latent if penultimate is not None else None
            else:
                logits, latent = model(xb), None
            for name, _ in layers:
                out[name] = captured[name]
            if latent is not None:
                out["z"] = as_vectors(latent).double().cpu()
            out["logits"] = as_vectors(logits).double().cpu()
            yield out
    finally:
        for h in handles:
            h.remove()


def _capture(store: dict, name: str) -> Callable:
    def hook(_module, _inputs, output):
        store[name] = as_vectors(output).double().cpu()
    return hook


def layer_features(model: nn.Module, x: torch.Tensor, *, device: torch.device,
                   batch_size: int = 500) -> dict[str, torch.Tensor]:
    """Every layer's (N, d) features of ``x`` at once (for the evaluation inputs, not a training set)."""
    parts: dict[str, list[torch.Tensor]] = {}
    for batch in layer_batches(model, x, device=device, batch_size=batch_size):
        for name, value in batch.items():
            parts.setdefault(name, []).append(value)
    return {name: torch.cat(values) for name, values in parts.items()}
