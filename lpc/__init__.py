"""Latent Point Collapse (LPC) as a small, framework-free PyTorch library.

Sbailò & Ghiringhelli, "Latent Point Collapse on a Low Dimensional Embedding in Deep
Neural Network Classifiers", arXiv 2310.08224.

Three pieces, usable in any training loop:

* :class:`LPCHead`      -- linear penultimate layer z = W h + b of low dimension d,
                           followed by a bias-free linear classifier f = W' z.
* :func:`latent_penalty` -- γ · mean over the batch of ‖z‖² (float32, even under autocast).
* :class:`GeometricSchedule` -- γ_e = min(start · factor^e, cap); the paper's default is
                           1e-2 · 1.05^e capped at 1e6. Every schedule takes a whole or
                           fractional epoch, or a step: ``gamma.at_step(step, epoch_steps)``
                           keeps the paper's pace per optimizer step on any data
                           (one "reference epoch" = ``epoch_steps`` steps; the paper's is 391).
"""
from lpc.head import LPCHead
from lpc.penalty import latent_penalty
from lpc.schedule import ConstantSchedule, GeometricSchedule, LinearRamp, Schedule, reference_epoch

__all__ = [
    "LPCHead",
    "latent_penalty",
    "Schedule",
    "ConstantSchedule",
    "GeometricSchedule",
    "LinearRamp",
    "reference_epoch",
]
__version__ = "0.1.0"
