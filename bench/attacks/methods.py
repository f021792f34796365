"""The attack-method registry and the guards every attack runs under.

An attack method is a function ``run(model, x, y, eps, opts, info) -> x_adv`` registered with
its threat model; the ``attacks`` evaluator runs the suite's methods on the attack subset
and verifies every returned adversarial itself (it never trusts a library's success flag):

    @register_attack("pgd-linf", norm="Linf", kind="fixed_eps", library="torchattacks",
                     options=PGDOptions)
    def pgd_linf(model, x, y, eps, opts, info): ...

* ``kind="fixed_eps"``: called once per ε of the norm's grid; must return inputs within ε.
* ``kind="min_norm"``: called once with ``eps=None``; returns its smallest adversarial
  per input (or the clean input where it failed); the evaluator measures the norms.

Third-party packages can add methods through the ``lpc_bench.attacks`` entry-point group.
"""
from __future__ import annotations

import contextlib
import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Literal

import torch

from bench.core.errors import BenchError
from registry import Registry, UnknownNameError

Norm = Literal["L2", "Linf"]
NORMS: tuple[str, ...] = ("L2", "Linf")


@dataclass(frozen=True)
class AttackMethod:
    name: str
    run: Callable[..., torch.Tensor]
    norm: str                      # "L2" or "Linf"
    kind: str                      # "fixed_eps" or "min_norm"
    library: str                   # "bench", "torchattacks", "foolbox", "adv_lib" or "pyautoattack"
    options: type                  # frozen dataclass of the method's settings
    linearisation: bool = False    # True for DeepFool variants (the overstatement check's subject)
    loss: str = ""                 # "ce" (cross-entropy), "margin" (DLR / C&W margin), "" (other or mixed)
    min_classes: int = 2           # fewer classes: refused before any attack runs
    doc: str = ""


ATTACKS: Registry[AttackMethod] = Registry("attack", entry_point_group="lpc_bench.attacks")


LOSSES = ("ce", "margin", "")


def register_attack(name: str, *, norm: str, kind: str, library: str, options: type,
                    linearisation: bool = False, loss: str = "", min_classes: int = 2):
    """Decorator registering ``fn(model, x, y, eps, opts, info) -> x_adv`` under ``name``.

    ``loss`` says which loss a gradient attack follows ("ce" or "margin"): the reliability
    check compares the two at the same ε (a CE attack far weaker than a margin attack
    signals a masked cross-entropy). ``min_classes``: the fewest classes it can attack
    (targeted DLR needs 4), checked before any attack of the evaluator runs.
    """
    if norm not in NORMS:
        raise ValueError(f"attack {name}: norm must be one of {NORMS}, got {norm!r}")
    if kind not in ("fixed_eps", "min_norm"):
        raise ValueError(f"attack {name}: kind must be 'fixed_eps' or 'min_norm', got {kind!r}")
    if not dataclasses.is_dataclass(options):
        raise TypeError(f"attack {name}: options must be a dataclass")
    if loss not in LOSSES:
        raise ValueError(f"attack {name}: loss must be one of {LOSSES}, got {loss!r}")

    def decorator(fn):
        doc = (fn.__doc__ or "").strip().splitlines()[0] if fn.__doc__ else ""
        ATTACKS.add(name, AttackMethod(name, fn, norm, kind, library, options, linearisation, loss,
                                       min_classes, doc))
        return fn
    return decorator


# attack-method names that were renamed, with what to write instead
RENAMED = {"deepfool": "deepfool-l2 (\"deepfool\" is the evaluator of the paper's metric, listed in "
                       "evaluation.evaluators; as an attack method our DeepFool is deepfool-l2)"}


def get_attack(name: str) -> AttackMethod:
    try:
        return ATTACKS.get(name)
    except UnknownNameError as exc:
        if name in RENAMED:
            raise BenchError(f"unknown attack method {name!r}: use {RENAMED[name]}") from None
        raise BenchError(str(exc)) from None


# ----- guards -----------------------------------------------------------------------------

def check_inputs(x: torch.Tensor, where: str = "attack inputs") -> None:
    """Attacks and their budgets live in [0, 1] pixel space: anything else is a caller bug."""
    if not torch.is_floating_point(x):
        raise BenchError(f"{where} must be floating point in [0, 1], got dtype {x.dtype}")
    if x.numel() == 0:
        raise BenchError(f"{where} are empty")
    if not bool(torch.isfinite(x).all()):
        raise BenchError(f"{where} contain NaN or infinite values")
    lo, hi = float(x.min()), float(x.max())
    if lo < 0.0 or hi > 1.0:
        raise BenchError(f"{where} must lie in [0, 1] (pixel space, normalisation inside the model); "
                         f"got values in [{lo:.4g}, {hi:.4g}]")


def check_logits(logits: torch.Tensor, where: str = "the model") -> None:
    if not bool(torch.isfinite(logits).all()):
        raise BenchError(f"{where} returned non-finite logits (NaN or inf); cannot attack it")


def looks_like_probabilities(outputs: torch.Tensor, tol: float = 1e-5) -> bool:
    """True when every row lies in [0, 1] and sums to 1: the model returns probabilities,
    not logits, and every loss built on logits (CE, DLR, C&W) is then the wrong one
    (the test AutoAttack's ``check_range_output`` applies, with the same tolerance)."""
    if outputs.numel() == 0:
        return False
    out = outputs.detach().double()
    return bool(out.max() < 1 + tol and out.min() > -tol and ((out.sum(-1) - 1).abs() < tol).all())


def check_eps(norm: str, eps: float, input_numel: int) -> None:
    """ε must be a positive budget that a [0, 1] input can actually use."""
    top = 1.0 if norm == "Linf" else math.sqrt(input_numel)
    if not (math.isfinite(eps) and 0.0 < eps <= top):
        raise BenchError(f"{norm} ε = {eps:g} is out of range: need 0 < ε <= {top:g} "
                         f"({'pixel range' if norm == 'Linf' else 'diameter of [0,1]^' + str(input_numel)})")


def eps_key(eps: float) -> str:
    """The JSON key of an ε (``%g``, e.g. '0.141176' for 36/255)."""
    return f"{eps:g}"


@contextlib.contextmanager
def attack_guard(model: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """Run an attack on a frozen, eval-mode model and leave no trace.

    Parameters stop requiring gradients during the attack (libraries call ``backward``
    on the loss, which would otherwise fill ``.grad`` and waste the weight-gradient
    work); afterwards their flags and the model's mode are restored and every ``.grad``
    is cleared.
    """
    was_training = model.training
    flags = [(p, p.requires_grad) for p in model.parameters()]
    model.eval()
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield model
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
            p.grad = None
        model.train(was_training)


@contextlib.contextmanager
def seeded(seed: int, device: torch.device | None = None) -> Iterator[None]:
    """Seed torch's global generators for a library attack without disturbing the caller's.

    torchattacks' APGD and Square reseed the global generator themselves, and foolbox
    draws from it; forking keeps the training code's random stream untouched.
    """
    devices = []
    if device is not None and device.type == "cuda":
        devices = [device.index if device.index is not None else torch.cuda.current_device()]
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


def model_dtype(model: torch.nn.Module) -> torch.dtype:
    for p in model.parameters():
        if torch.is_floating_point(p):
            return p.dtype
    return torch.float32


def options_dict(opts: Any) -> dict:
    return dataclasses.asdict(opts) if dataclasses.is_dataclass(opts) else {}
