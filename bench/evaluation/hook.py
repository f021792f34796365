"""The evaluation hook: after training, each evaluator named by the suite gets an EvalContext.

An evaluator is registered with a typed options dataclass (its settings in the suite's
``evaluation.settings.<name>`` are checked against it when the suite loads), a kind
("attack" or "metric", for ``bench list``), the evaluators whose results it reads
(``requires``) and the numbers a leaderboard shows and ``bench check`` compares
(``columns``, see ``bench.evaluation.columns``):

    @register_evaluator("my_metric", options=MyOptions, kind="metric",
                        columns=(Column("my_score", "my score", ("score",)),))
    def my_metric(ctx: EvalContext, opts: MyOptions) -> dict:
        '''One line saying what it measures (shown by ``bench list metrics``).'''

It returns a JSON-able dict stored under ``result.json["evaluations"][name]``. The
harness owns the side effects: the model is in eval mode on ``ctx.device``, parameter
gradients are zeroed after each evaluator, and evaluators run in the suite's order
(so a later one can read ``ctx.results`` of an earlier one, and ``ctx.artifacts`` for
what is not JSON, such as adversarial inputs).
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from bench.core.errors import BenchError
from bench.evaluation.columns import Column
from bench.core.typed import from_dict
from registry import Registry


@dataclass
class EvalContext:
    model: torch.nn.Module          # eval mode, on device; forward(x in [0,1]) -> logits; forward_all
                                    # (x) -> .latent/.logits when latents were measured
    data: Any                       # test_x/test_y/pixel_scale (bench.data.DataSplits or an EvalData)
    device: torch.device
    latents: dict[str, torch.Tensor]       # split -> (N, d) float32 on CPU (z, or h without one)
    labels: dict[str, torch.Tensor]        # split -> (N,) int64 on CPU
    predictions: dict[str, torch.Tensor]   # split -> (N,) int64 on CPU
    subset: torch.Tensor                   # indices into the test split used by attacks
    latent_name: str = "z"                 # "z" (penultimate layer), "h" (backbone features) or a module name
    num_classes: int | None = None         # None: data.num_classes
    num_threads: int | None = None         # the suite's runtime.num_threads (BLAS of the metrics); None: default
    # the final layer's (K, d) weight as it acts on the latent (NC3), None when there is none, and
    # whether only its rows' directions count (a cosine classifier)
    classifier_weight: torch.Tensor | None = None
    classifier_rows_normalised: bool = False
    results: dict[str, dict] = field(default_factory=dict)
    quiet: bool = True
    # non-JSON hand-over between evaluators of one session (e.g. adversarial inputs, keyed by
    # the evaluator that made them); never written to result.json
    artifacts: dict[str, Any] = field(default_factory=dict)

    def test_inputs(self, indices: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Test inputs in [0, 1] (float32, on CPU) and labels; default: the attack subset."""
        idx = self.subset if indices is None else indices
        return self.data.test_x[idx].float() / self.data.pixel_scale, self.data.test_y[idx]


@dataclass(frozen=True)
class NoOptions:
    pass


@dataclass(frozen=True)
class EvaluatorSpec:
    name: str
    fn: Callable[[EvalContext, Any], dict]
    options: type
    kind: str
    doc: str
    requires: tuple[str, ...] = ()    # evaluators that must run earlier (their ctx.results)
    columns: tuple[Column, ...] = ()  # what the leaderboard shows and `bench check` compares

    def __call__(self, ctx: EvalContext, opts: Any) -> dict:
        return self.fn(ctx, opts)


EVALUATORS: Registry[EvaluatorSpec] = Registry("evaluator", entry_point_group="lpc_bench.evaluators")


def register_evaluator(name: str, *, options: type = NoOptions, kind: str = "metric",
                       requires: tuple[str, ...] = (), columns: tuple[Column, ...] = ()):
    if kind not in ("attack", "metric"):
        raise ValueError(f"evaluator kind must be 'attack' or 'metric', got {kind!r}")
    if not dataclasses.is_dataclass(options):
        raise TypeError("evaluator options must be a dataclass")

    def decorator(fn):
        doc = (fn.__doc__ or "").strip().splitlines()[0] if fn.__doc__ else ""
        EVALUATORS.add(name, EvaluatorSpec(name, fn, options, kind, doc, tuple(requires), tuple(columns)))
        return fn
    return decorator


def evaluator_options(name: str, settings: dict[str, dict]) -> Any:
    spec = EVALUATORS.get(name)
    return from_dict(spec.options, settings.get(name, {}), f"evaluation.settings.{name}")


def check_settings(evaluation) -> None:
    """Raise BenchError for an unknown setting, a bad value, or an evaluator listed before
    one it reads the results of — at suite load, not after hours of training."""
    for position, name in enumerate(evaluation.evaluators):
        evaluator_options(name, evaluation.settings)
        missing = [r for r in EVALUATORS.get(name).requires if r not in evaluation.evaluators[:position]]
        if missing:
            raise BenchError(f"evaluation.evaluators: {name!r} needs {', '.join(map(repr, missing))} "
                             f"listed before it")


def attack_subset(num_test: int, size: int, seed: int) -> torch.Tensor:
    """The same seeded test indices for every plugin and seed of a suite (sorted)."""
    if size >= num_test:
        return torch.arange(num_test)
    g = torch.Generator().manual_seed(seed)
    return torch.randperm(num_test, generator=g)[:size].sort().values


def run_evaluators(ctx: EvalContext, names: tuple[str, ...], settings: dict[str, dict], *,
                   wall_s: dict[str, float] | None = None) -> dict[str, dict]:
    """Run ``names`` in order on ``ctx``; ``wall_s``, when given, gets each one's seconds."""
    for name in names:
        spec = EVALUATORS.get(name)
        opts = evaluator_options(name, settings)
        ctx.model.eval()
        t0 = time.perf_counter()
        try:
            ctx.results[name] = spec(ctx, opts)
        finally:
            ctx.model.zero_grad(set_to_none=True)
            if wall_s is not None:
                wall_s[name] = time.perf_counter() - t0
    return ctx.results


def evaluator_names(kind: str | None = None) -> list[str]:
    """Registered evaluators, of one kind ("attack", "metric") or all."""
    return [n for n in EVALUATORS.names() if kind is None or EVALUATORS.get(n).kind == kind]


def run_order(names, preferred: tuple[str, ...] = ()) -> tuple[str, ...]:
    """``names`` plus every evaluator they require, each after what it requires; otherwise
    in the order of ``preferred`` (e.g. the suite's), then as registered."""
    wanted: list[str] = []

    def add(name: str, chain: tuple[str, ...]) -> None:
        if name in chain:
            raise BenchError(f"evaluators require each other in a cycle: {' -> '.join(chain + (name,))}")
        for required in EVALUATORS.get(name).requires:
            add(required, chain + (name,))
        if name not in wanted:
            wanted.append(name)
    rank = {n: i for i, n in enumerate(dict.fromkeys([*preferred, *EVALUATORS.names()]))}
    for name in sorted(dict.fromkeys(names), key=lambda n: rank.get(n, len(rank))):
        add(name, ())
    return tuple(wanted)
