"""Unregularised baselines of arXiv 2310.08224, Table III: NoPen, LinPen, NonlinPen."""
from __future__ import annotations

from torch import nn

from registry.base import Plugin, register_plugin


@register_plugin("NoPen")
class NoPen(Plugin):
    """NoPen (arXiv 2310.08224): the plain network, a bias-free linear classifier on h.

    Loss = CE(W h, y). No hyper-parameters. The latent for the metrics is h.
    """


@register_plugin("LinPen")
class LinPen(Plugin):
    """LinPen (arXiv 2310.08224): a linear penultimate layer of the intermediate width, no penalty.

    Loss = CE(W z, y), z = W_L2 h + b_L2. The control for LPC: same architecture, γ = 0.
    """

    latent_width = "intermediate"


@register_plugin("NonlinPen")
class NonlinPen(Plugin):
    """NonlinPen (arXiv 2310.08224): a nonlinear penultimate layer z = SiLU(W_L2 h + b_L2).

    Loss = CE(W z, y); intermediate width, SiLU as in the rest of the network.
    """

    latent_width = "intermediate"
    latent_activation = nn.SiLU
