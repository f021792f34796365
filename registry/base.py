"""The plugin contract: a head on top of backbone features, and a loss made of named terms.

A plugin is an ``nn.Module`` built with the backbone's feature width, the number of
classes, the suite's latent widths and its own parameters. It owns everything between
the backbone and the logits, and the loss:

* ``forward(h) -> HeadOutput`` gives the inference logits, the latent the geometry
  metrics are computed on (z for plugins with a penultimate layer, h otherwise) and h.
* ``loss(out, y, batch) -> dict`` returns every named term (``ce``, ``penalty``, ``supcon`` …)
  and their sum under ``"total"``; the harness logs each term separately.
* ``input_terms(out, batch) -> dict`` (optional) adds terms that need the input and the
  whole model: ``batch`` (a ``Batch``) holds the inputs x in [0, 1], the labels, the
  classifier (normalisation + backbone + this head) and a seed for the step. Adversarial
  training and input-gradient penalties are written here; a head-only plugin does not
  override it and its numbers are those of ``loss_terms`` alone. ``input_grad = True``
  makes the harness mark x ``requires_grad`` before the forward.
* ``set_epoch(epoch)`` is called by the harness at the start of each epoch; schedules
  (γ, margin, scale) are read from it, so they survive a resume. The epoch is a pass
  over the data, or a reference epoch of ``recipe.epoch_steps`` optimizer steps when the
  suite paces its schedules by steps; a plugin whose per-epoch logic needs whole passes
  sets ``step_paced = False`` and such suites refuse it.
* ``classifier`` is the final linear map; the shared recipe keeps its learning rate
  constant while the rest is decayed.
* ``Params`` is a frozen dataclass of the plugin's tunable parameters, each with its
  default: the one place they are declared. A suite sets them per plugin
  (``plugin_params: {MyPen: {lam: 0.01}}``, or ``--set plugin_params.MyPen.lam=0.01``),
  checked against the declaration (a mistyped name is an error); the plugin reads
  ``self.params``.

Writing a new regularizer is one small file:

    from dataclasses import dataclass
    from registry import Plugin, register_plugin

    @register_plugin("MyPen")
    class MyPen(Plugin):
        '''MyPen (Doe et al., 2024): Loss = CE + λ‖h‖₁. Defaults: λ = 1e-3.'''

        @dataclass(frozen=True)
        class Params:
            lam: float = 1e-3          # λ

        def loss_terms(self, out, y):
            return {"ce": self.cross_entropy(out, y),
                    "l1": self.params.lam * out.features.abs().sum(1).mean()}
"""
from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, ContextManager, Mapping

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


@dataclass
class Batch:
    """What an input-side loss term sees: one training step's batch and the whole model.

    ``x`` are the trainer's inputs in [0, 1] pixel space (normalisation is inside
    ``model``), ``requires_grad`` iff the plugin sets ``input_grad``. ``model`` is the
    classifier: ``model(x) -> logits``, ``model.forward_all(x) -> HeadOutput``.
    ``forward_all`` / ``logits`` run it under the step's autocast, as the clean forward
    ran. ``seed`` is derived from the run's seed and the optimizer step, so an inner
    attack's random start is the same whether the run was resumed or not.
    """

    x: torch.Tensor
    y: torch.Tensor
    model: nn.Module
    seed: int = 0
    autocast: Callable[[], ContextManager] = field(default=contextlib.nullcontext, repr=False)

    def forward_all(self, x: torch.Tensor) -> HeadOutput:
        with self.autocast():
            return self.model.forward_all(x)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_all(x).logits

    def generator(self) -> torch.Generator:
        """A fresh generator on x's device seeded with this step's seed."""
        return torch.Generator(device=self.x.device).manual_seed(self.seed)


@dataclass(frozen=True)
class NoParams:
    """The parameters of a plugin that has none."""


class Plugin(nn.Module):
    """Base class of every head/loss plugin.

    The default head is the paper's NoPen: a bias-free linear classifier on h, with the
    cross-entropy loss.

    Class attributes a subclass sets:

    * ``latent_width``: "narrow", "intermediate" or "wide" (resolved by the suite's
      ``latent_widths``) puts a penultimate layer z of that width between h and the
      classifier; None (default): no penultimate layer, the latent is h.
    * ``latent_activation``: an ``nn.Module`` class making that layer nonlinear.
    * ``Params``: a frozen dataclass of the plugin's tunable parameters with defaults.

    Attributes a plugin may read (set by this constructor before ``build_*`` run):

    * ``self.feature_dim``: width of the backbone features h;
    * ``self.num_classes``: number of classes;
    * ``self.latent_dim``: width of z (None without a penultimate layer);
    * ``self.params``: the ``Params`` instance of this run (suite values over defaults);
    * ``self.epoch``: the current epoch, set by ``set_epoch`` (0 before training);
    * ``self.penultimate`` (h → z, or None) and ``self.classifier`` (the final map),
      built by ``build_penultimate()`` and ``build_classifier(in_features)``.

    Methods a subclass may override: ``loss_terms`` (add terms), ``build_penultimate``,
    ``build_classifier``, ``forward``, ``schedule_values`` (values logged per epoch).
    Extra learnable parameters (e.g. class centres) are ordinary ``nn.Parameter``s
    created in ``__init__`` after ``super().__init__``; they train with the rest.
    """

    latent_width: ClassVar[str | None] = None
    latent_activation: ClassVar[type[nn.Module] | None] = None
    Params: ClassVar[type] = NoParams
    # True: every per-epoch value is a function of the epoch number alone, so it can be a
    # reference epoch of N optimizer steps (recipe.epoch_steps) that cuts through passes
    step_paced: ClassVar[bool] = True
    # True: the harness marks the inputs requires_grad before the forward (input-gradient terms)
    input_grad: ClassVar[bool] = False

    def __init__(self, feature_dim: int, num_classes: int,
                 latent_dims: Mapping[str, int] | None = None, params: Any = None) -> None:
        super().__init__()
        if feature_dim <= 0 or num_classes < 2:
            raise ValueError(f"{type(self).__name__}: need feature_dim > 0 and num_classes >= 2, "
                             f"got {feature_dim}, {num_classes}")
        self.feature_dim = feature_dim
        self.num_classes = num_classes
        self.params = self.Params() if params is None else params
        if not isinstance(self.params, self.Params):
            raise TypeError(f"{type(self).__name__}: params must be a {self.Params.__name__}, "
                            f"got {type(self.params).__name__}")
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

    def metric_classifier_weight(self) -> tuple[torch.Tensor | None, bool]:
        """The final layer's (K, d) weight as it acts on the latent (for NC3; None: it has none),
        and whether only each row's direction counts (a cosine classifier)."""
        weight = getattr(getattr(self, "classifier", None), "weight", None)
        return (weight.detach(), False) if isinstance(weight, torch.Tensor) else (None, False)

    def schedule_values(self) -> dict[str, float]:
        """Current values of the plugin's schedules (γ, margin, scale), for the log."""
        return {}

    @staticmethod
    def cross_entropy(out: HeadOutput, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(out.logits.float(), y)

    def loss_terms(self, out: HeadOutput, y: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"ce": self.cross_entropy(out, y)}

    def input_terms(self, out: HeadOutput, batch: Batch) -> dict[str, torch.Tensor]:
        """Terms that need the input and the whole model (see ``Batch``); none by default."""
        return {}

    @classmethod
    def uses_input(cls) -> bool:
        """Whether the plugin's loss needs the batch: it adds input terms or input gradients."""
        return cls.input_grad or cls.input_terms is not Plugin.input_terms

    def loss(self, out: HeadOutput, y: torch.Tensor, batch: Batch | None = None) -> dict[str, torch.Tensor]:
        """Named loss terms (``loss_terms``, then ``input_terms`` when the plugin uses the
        input) plus their sum under ``"total"``. Terms never overwrite."""
        terms = self.loss_terms(out, y)
        if "total" in terms:
            raise ValueError(f"{type(self).__name__}.loss_terms must not return 'total'")
        if self.uses_input():
            if batch is None:
                raise ValueError(f"{type(self).__name__} needs the batch (input and model): call loss(out, y, batch)")
            extra = self.input_terms(out, batch)
            clash = sorted(set(extra) & (set(terms) | {"total"}))
            if clash:
                raise ValueError(f"{type(self).__name__}.input_terms returns {clash}, already a loss term")
            terms.update(extra)
        total = None
        for term in terms.values():  # a chain of adds: fewer kernels per step than stack + sum
            total = term.float() if total is None else total + term.float()
        if total is None:
            raise ValueError(f"{type(self).__name__}.loss_terms returned no terms")
        terms["total"] = total
        return terms


PLUGINS: Registry[type[Plugin]] = Registry("plugin", entry_point_group="lpc_bench.plugins")


def register_plugin(name: str | None = None):
    """Class decorator: ``@register_plugin("LPC")``. Overwriting a name warns.

    The class's ``Params`` must be a dataclass whose every field has a default (a plugin
    is buildable without a suite): a broken declaration fails here, at import.
    """
    def decorator(cls):
        check_params_declaration(cls)
        return PLUGINS.register(name)(cls)
    return decorator


def check_params_declaration(cls: type) -> None:
    params = getattr(cls, "Params", NoParams)
    if not dataclasses.is_dataclass(params):
        raise TypeError(f"{cls.__name__}.Params must be a dataclass")
    try:
        params()
    except TypeError as exc:
        raise TypeError(f"{cls.__name__}.Params: every parameter needs a default ({exc})") from None


def list_plugins() -> list[str]:
    return PLUGINS.names()


def get_plugin_class(name: str) -> type[Plugin]:
    return PLUGINS.get(name)


def plugin_params(name: str, params: Any = None, **overrides) -> Any:
    """The ``Params`` of plugin ``name``: ``params`` (default: the declared defaults) with
    ``overrides`` replaced; an undeclared name is a ValueError listing the declared ones."""
    cls = PLUGINS.get(name)
    declared = getattr(cls, "Params", NoParams)
    base = declared() if params is None else params
    unknown = sorted(set(overrides) - {f.name for f in dataclasses.fields(declared)})
    if unknown:
        known = ", ".join(f.name for f in dataclasses.fields(declared)) or "none"
        raise ValueError(f"plugin {name!r}: unknown parameter(s) {unknown} (declared: {known})")
    return dataclasses.replace(base, **overrides) if overrides else base


def create_plugin(name: str, feature_dim: int, num_classes: int,
                  latent_dims: Mapping[str, int] | None = None, params: Any = None, **overrides) -> Plugin:
    """Build a registered plugin with ``params`` (its ``Params``; default: the declared
    defaults), individual parameters replaced by ``overrides`` (e.g. ``gamma=...``)."""
    cls = PLUGINS.get(name)
    return cls(feature_dim, num_classes, latent_dims, params=plugin_params(name, params, **overrides))
