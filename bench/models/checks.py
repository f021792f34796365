"""Checks on a model the harness did not train, before any attack (each an error or a flag).

An attack on a model in training mode, a random one, one that returns probabilities or one
fed inputs it was not trained on gives numbers that mean nothing; AutoAttack checks the
first two the same way (its ``checks.py``: two forward passes agree, outputs are not a
softmax). Hard faults raise BenchError; what can be fixed (training mode) is fixed and flagged.
"""
from __future__ import annotations

import torch
from torch import nn

from bench.core.errors import BenchError

_TRAIN_MODE_LAYERS = (nn.modules.batchnorm._BatchNorm, nn.Dropout, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout)


def _forward(model: nn.Module, x: torch.Tensor):
    try:
        return model(x)
    except Exception as exc:  # any failure here is a mismatch with the suite's inputs (shape, dtype, batch)
        text = str(exc).strip().splitlines()
        hint = ("; a torch.export program needs a dynamic batch dimension "
                "(dynamic_shapes={'x': {0: torch.export.Dim.DYNAMIC}})" if "dynamic" in str(exc).lower() else "")
        raise BenchError(f"the model does not take the suite's inputs (batch of {x.shape[0]}, each of shape "
                         f"{tuple(x.shape[1:])}, in [0, 1]): {type(exc).__name__}: {text[0] if text else ''}"
                         f"{hint}") from None


def check_model(model: nn.Module, x: torch.Tensor, y: torch.Tensor, num_classes: int) -> dict:
    """Flags of ``model`` on a sample ``x`` in [0, 1] with labels ``y``; BenchError on a fault."""
    flags: dict = {}
    in_training = sorted(name or "(model)" for name, m in model.named_modules()
                         if isinstance(m, _TRAIN_MODE_LAYERS) and m.training)
    if in_training:
        flags["switched_to_eval"] = in_training   # BatchNorm/Dropout in training mode: a warning, then fixed
    model.eval()
    with torch.no_grad():
        first = _forward(model, x)
        second = _forward(model, x)
        if x.shape[0] > 1:
            # a second batch size: a program exported with a fixed batch fails here, not mid-attack
            _forward(model, x[:1])
    if not isinstance(first, torch.Tensor) or first.dim() != 2 or first.shape[0] != x.shape[0]:
        raise BenchError(f"the model must return a (batch, classes) tensor of logits, got "
                         f"{tuple(first.shape) if isinstance(first, torch.Tensor) else type(first).__name__}")
    if first.shape[1] != num_classes:
        raise BenchError(f"the model returns {first.shape[1]} outputs; the suite's dataset has {num_classes} classes")
    if not torch.isfinite(first).all():
        raise BenchError("the model returns non-finite outputs on clean inputs")
    if not torch.equal(first, second):
        raise BenchError("the model is not deterministic: two forward passes on the same inputs differ "
                         f"(by up to {float((first - second).abs().max()):.3g}); attacks on a random model "
                         f"overstate its robustness")
    rows = first.double()
    if bool((rows >= 0).all() and (rows <= 1).all() and torch.allclose(rows.sum(1), torch.ones_like(rows[:, 0]),
                                                                        atol=1e-4)):
        raise BenchError("the model returns probabilities (rows in [0, 1] summing to 1), not logits: "
                         "remove the final softmax")
    accuracy = float((first.argmax(1) == y).double().mean())
    chance = 1.0 / num_classes
    if x.shape[0] >= 50 and accuracy <= 1.5 * chance:
        raise BenchError(f"clean accuracy {accuracy:.1%} on [0, 1] inputs is at chance ({chance:.1%}): the model "
                         f"was likely trained on normalised inputs; put the normalisation inside the model")
    flags["deterministic"] = True
    flags["outputs"] = "logits"
    flags["sample_accuracy"] = accuracy
    return flags
