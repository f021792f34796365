"""The plugin contract: a head on top of backbone features, and a loss made of named terms.

A plugin is an ``nn.Module`` built with the backbone's feature width, the number of
classes and the suite's latent widths. It owns everything between the backbone and the
logits, and the loss:

* ``forward(h) -> HeadOutput`` gives the inference logits, the latent the geometry
  metrics are computed on (z for plugins with a penultimate layer, h otherwise) and h.
* ``loss(out, y) -> dict`` returns every named term (``ce``, ``penalty``, ``supcon`` …)
  and their sum under ``"total"``; the harness logs each term separately.
* ``set_epoch(epoch)`` is called by the harness at the start of each epoch; schedules
  (γ, margin, scale) are read from it, so they survive a resume. The epoch is a pass
  over the data, or a reference epoch of ``recipe.epoch_steps`` optimizer steps when the
  suite paces its schedules by steps; a plugin whose per-epoch logic needs whole passes
  sets ``step_paced = False`` and such suites refuse it.
* ``classifier`` is the final linear map; the shared recipe keeps its learning rate
  constant while the rest is decayed.

Writing a new regularizer is one small file:

    from registry import Plugin, register_plugin

    @register_plugin("MyPen")
    class MyPen(Plugin):
        '''Paper. Loss = CE + λ‖h‖₁. Defaults: λ = 1e-3.'''
        def __init__(self, *args, lam: float = 1e-3, **kw):
            super().__init__(*args, **kw)
            self.lam = lam
        def loss_terms(self, out, y):
            return {"ce": self.cross_entropy(out, y), "l1": self.lam * out.features.abs().sum(1).mean()}
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from registry._registry import Registry

LATENT_WIDTHS = ("narrow", "intermediate", "wide")


@dataclass
class HeadOutput:
    """What a plugin's head returns for a batch of backbone features."""

    logits: torch.Tensor    # inference logits (ArcFace/CosFace: scaled cosines)
    latent: torch.Tensor    # representation for the geometry metrics: z, or h without one
    features: torch.Tensor  # backbone features h


class Plugin(nn.Module):
    """Base class of every head/loss plugin.

    The default head is the paper's NoPen: a bias-free linear classifier on h, with the
    cross-entropy loss. Subclasses set ``latent_width`` to put a penultimate layer of
    that width ("narrow", "intermediate" or "wide", resolved by the suite) between h
    and the classifier, ``latent_activation`` to make that layer nonlinear, and override
    ``loss_terms`` to add terms.
    """

    latent_width: ClassVar[str | None] = None
    latent_activation: ClassVar[type[nn.Module] | None] = None
    # True: every per-epoch value is a function of the epoch number alone, so it can be a
    # reference epoch of N optimizer steps (recipe.epoch_steps) that cuts through passes
    step_paced: ClassVar[bool] = True

    def __init__(self, feature_dim: int, num_classes: int,
                 latent_dims: Mapping[str, int] | None = None) -> None:
        super().__init__()
        if feature_dim <= 0 or num_classes < 2:
            raise ValueError(f"{type(self).__name__}: need feature_dim > 0 and num_classes >= 2, "
                             f"got {feature_dim}, {num_classes}")
        self.feature_dim = feature_dim
        self.num_classes = num_classes
        self.latent_dim = self._resolve_latent_dim(latent_dims)
        self.epoch = 0
        self.penultimate = self.build_penultimate()
        self.classifier = self.build_classifier(self.latent_dim or feature_dim)

    # ----- construction -------------------------------------------------------------
    def _resolve_latent_dim(self, latent_dims: Mapping[str, int] | None) -> int | None:
        if self.latent_width is None:
            return None
        if self.latent_width not in LATENT_WIDTHS:
            raise ValueError(f"{type(self).__name__}.latent_width must be one of {LATENT_WIDTHS}")
        if not latent_dims or self.latent_width not in latent_dims:
            raise ValueError(f"{type(self).__name__} needs the suite's {self.latent_width!r} latent width")
        return int(latent_dims[self.latent_width])

    def build_penultimate(self) -> nn.Module | None:
        if self.latent_dim is None:
            return None
        linear = nn.Linear(self.feature_dim, self.latent_dim)
        if self.latent_activation is None:
            return linear
        return nn.Sequential(linear, self.latent_activation())

    def build_classifier(self, in_features: int) -> nn.Module:
        return nn.Linear(in_features, self.num_classes, bias=False)

    # ----- forward and loss ---------------------------------------------------------
    def forward(self, h: torch.Tensor) -> HeadOutput:
        latent = self.penultimate(h) if self.penultimate is not None else h
        return HeadOutput(logits=self.classifier(latent), latent=latent, features=h)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def schedule_values(self) -> dict[str, float]:
        """Current values of the plugin's schedules (γ, margin, scale), for the log."""
        return {}

    @staticmethod
    def cross_entropy(out: HeadOutput, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(out.logits.float(), y)

    def loss_terms(self, out: HeadOutput, y: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"ce": self.cross_entropy(out, y)}

    def loss(self, out: HeadOutput, y: torch.Tensor) -> dict[str, torch.Tensor]:
        """Named loss terms plus their sum under ``"total"``. Terms never overwrite."""
        terms = self.loss_terms(out, y)
        if "total" in terms:
            raise ValueError(f"{type(self).__name__}.loss_terms must not return 'total'")
        total = None
        for term in terms.values():  # a chain of adds: fewer kernels per step than stack + sum
            total = term.float() if total is None else total + term.float()
        if total is None:
            raise ValueError(f"{type(self).__name__}.loss_terms returned no terms")
        terms["total"] = total
        return terms


PLUGINS: Registry[type[Plugin]] = Registry("plugin", entry_point_group="lpc_bench.plugins")


def register_plugin(name: str | None = None):
    """Class decorator: ``@register_plugin("LPC")``. Overwriting a name warns."""
    return PLUGINS.register(name)


def list_plugins() -> list[str]:
    return PLUGINS.names()


def get_plugin_class(name: str) -> type[Plugin]:
    return PLUGINS.get(name)


def create_plugin(name: str, feature_dim: int, num_classes: int,
                  latent_dims: Mapping[str, int] | None = None, **overrides) -> Plugin:
    """Build a registered plugin; ``overrides`` go to its constructor (e.g. ``gamma=...``)."""
    cls = PLUGINS.get(name)
    try:
        return cls(feature_dim, num_classes, latent_dims, **overrides)
    except TypeError as exc:
        raise ValueError(f"plugin {name!r}: bad override(s) {sorted(overrides)}: {exc}") from None
