"""Epoch-indexed schedules for γ, margins and scales, usable per epoch, per fraction of an
epoch or per optimizer step.

A schedule is a callable ``schedule(epoch) -> float`` with ``epoch`` counted from 0; the
epoch may be fractional (``schedule(12.5)`` is half way through epoch 12). It holds no
state, so a run resumed from a checkpoint gets exactly the value an uninterrupted run had.

What an "epoch" is, is the caller's choice. The paper (arXiv 2310.08224) grows γ ×1.05 per
epoch of CIFAR-10 at batch 128, i.e. per 391 optimizer steps; on another dataset or batch
size one pass over the data is a different number of steps, and it is the pace per
optimizer step that decides whether a penalty this strong lets the network train. Pacing by
steps keeps the paper's pace on any data: :meth:`Schedule.at_step` reads a schedule after
``step`` optimizer steps with one *reference epoch* of ``epoch_steps`` steps, as a
staircase (the value changes once per reference epoch, as the paper's does) or smoothly.
"""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass


def reference_epoch(step: int, epoch_steps: int) -> int:
    """The reference epoch that optimizer step ``step`` (counted from 0) falls in: ``step // epoch_steps``."""
    _check_steps(step, epoch_steps)
    return step // epoch_steps


def _is_integer(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _check_steps(step: int, epoch_steps: int) -> None:
    if not _is_integer(epoch_steps) or epoch_steps < 1:
        raise ValueError(f"epoch_steps must be an integer >= 1, got {epoch_steps!r}")
    if not _is_integer(step) or step < 0:
        raise ValueError(f"step must be an integer >= 0, got {step!r}")


class Schedule:
    """Base class: subclasses implement ``__call__(epoch) -> float`` for any real epoch >= 0."""

    def __call__(self, epoch: float) -> float:  # pragma: no cover - interface
        raise NotImplementedError

    def at_step(self, step: int, epoch_steps: int, *, smooth: bool = False) -> float:
        """The value after ``step`` optimizer steps, one reference epoch being ``epoch_steps`` steps.

        Staircase by default: ``self(step // epoch_steps)``, the value changes at the first
        step of each reference epoch. ``smooth=True`` gives ``self(step / epoch_steps)``,
        which moves a little at every step and agrees with the staircase at the first step
        of each reference epoch.
        """
        _check_steps(step, epoch_steps)
        return self(step / epoch_steps) if smooth else self(step // epoch_steps)

    @staticmethod
    def _check_epoch(epoch: float) -> None:
        if isinstance(epoch, bool) or not isinstance(epoch, numbers.Real):
            raise ValueError(f"epoch must be a number, got {epoch!r}")
        if not epoch >= 0 or (not isinstance(epoch, numbers.Integral) and math.isinf(epoch)):
            raise ValueError(f"epoch must be a finite number >= 0, got {epoch}")  # NaN fails ">= 0"


@dataclass(frozen=True)
class ConstantSchedule(Schedule):
    value: float

    def __call__(self, epoch: float) -> float:
        self._check_epoch(epoch)
        return float(self.value)


@dataclass(frozen=True)
class GeometricSchedule(Schedule):
    """γ_e = min(start · factor^e, cap), for any real e >= 0.

    Paper defaults: start 1e-2, factor 1.05, cap 1e6 (reached after
    ceil(log(1e8)/log(1.05)) = 378 epochs).
    """

    start: float = 1e-2
    factor: float = 1.05
    cap: float = 1e6

    def __post_init__(self) -> None:
        if not (self.start > 0 and self.factor > 0 and self.cap > 0):
            raise ValueError(f"GeometricSchedule needs positive start/factor/cap, got {self}")
        if not (math.isfinite(self.start) and math.isfinite(self.factor)):   # an infinite cap is allowed
            raise ValueError(f"GeometricSchedule needs a finite start and factor, got {self}")

    def __call__(self, epoch: float) -> float:
        self._check_epoch(epoch)
        # decide against the cap in log space, so that very long runs never overflow; below
        # the cap return start · factor**epoch itself (exp(log(·)) would be off by an ulp)
        log_value = math.log(self.start) + epoch * math.log(self.factor)
        if log_value >= math.log(self.cap):
            return float(self.cap)
        if log_value > 700.0:  # an infinite cap: stay finite
            return math.exp(700.0)
        return float(min(self.start * self.factor ** epoch, self.cap))

    def epochs_to_cap(self) -> int:
        """First whole epoch at which the cap is reached (∞ if the schedule never gets there)."""
        if self.start >= self.cap:
            return 0
        if self.factor <= 1:
            return math.inf  # type: ignore[return-value]
        return math.ceil(math.log(self.cap / self.start) / math.log(self.factor))


@dataclass(frozen=True)
class LinearRamp(Schedule):
    """Linear ramp from ``start`` (epoch 0) to ``end`` (epoch ``epochs``), then constant."""

    start: float
    end: float
    epochs: int

    def __post_init__(self) -> None:
        if self.epochs < 0:
            raise ValueError(f"LinearRamp needs epochs >= 0, got {self.epochs}")
        if not (math.isfinite(self.start) and math.isfinite(self.end)):
            raise ValueError(f"LinearRamp needs a finite start and end, got {self}")

    def __call__(self, epoch: float) -> float:
        self._check_epoch(epoch)
        if self.epochs == 0 or epoch >= self.epochs:
            return float(self.end)
        return float(self.start + (self.end - self.start) * epoch / self.epochs)
