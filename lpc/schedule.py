"""Epoch-indexed schedules for γ, margins and scales.

A schedule is a callable ``schedule(epoch) -> float`` with ``epoch`` counted from 0.
It holds no state, so a run resumed from a checkpoint at epoch e gets exactly the value
an uninterrupted run had.
"""
from __future__ import annotations

import math
from dataclasses import dataclass


class Schedule:
    """Base class: subclasses implement ``__call__(epoch) -> float``."""

    def __call__(self, epoch: int) -> float:  # pragma: no cover - interface
        raise NotImplementedError

    @staticmethod
    def _check_epoch(epoch: int) -> None:
        if epoch < 0:
            raise ValueError(f"epoch must be >= 0, got {epoch}")


@dataclass(frozen=True)
class ConstantSchedule(Schedule):
    value: float

    def __call__(self, epoch: int) -> float:
        self._check_epoch(epoch)
        return float(self.value)


@dataclass(frozen=True)
class GeometricSchedule(Schedule):
    """γ_e = min(start · factor^e, cap).

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

    def __call__(self, epoch: int) -> float:
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
        """First epoch at which the cap is reached (∞ if the schedule never gets there)."""
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

    def __call__(self, epoch: int) -> float:
        self._check_epoch(epoch)
        if self.epochs == 0 or epoch >= self.epochs:
            return float(self.end)
        return float(self.start + (self.end - self.start) * epoch / self.epochs)
