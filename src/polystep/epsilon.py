"""Schedules for the temperature epsilon and the step and probe radii.

Radius convention, used everywhere in polystep: **a radius is a distance in search
coordinates** (the raw vector, or subspace coordinates). It is never multiplied by epsilon.
A float and a schedule mean the same thing; a float is a constant schedule.

Every schedule is a frozen dataclass with keyword-only fields, so ``init`` and ``target`` can
never be swapped by position. ``schedule(t)`` gives the value at iteration ``t >= 0``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Any

from polystep.validation import check_positive_int


def _positive(name: str, value: float, *, allow_zero: bool = False) -> None:
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (value >= 0 if allow_zero else value > 0)
    if not ok:
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be a finite number {bound}, got {value!r}")


def _period(init: float, target: float, decay: float | None, total_steps: int | None) -> int:
    if (decay is None) == (total_steps is None):
        raise ValueError("give exactly one of decay= or total_steps=")
    if total_steps is not None:
        check_positive_int("total_steps", total_steps)
        return total_steps
    _positive("decay", decay)
    return max(1, math.ceil(abs(init - target) / decay))


class Schedule:
    """Base class: ``value = schedule(t)``; ``state_dict()`` rebuilds it via :func:`from_state`."""

    def __call__(self, t: int) -> float:  # pragma: no cover - abstract
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:
        return {"type": type(self).__name__, **asdict(self)}  # type: ignore[call-overload]


@dataclass(frozen=True, kw_only=True)
class Constant(Schedule):
    """``value`` at every iteration."""

    value: float

    def __post_init__(self) -> None:
        _positive("value", self.value)

    def __call__(self, t: int) -> float:
        return float(self.value)


@dataclass(frozen=True, kw_only=True)
class _Anneal(Schedule):
    """From ``init`` to ``target`` over a period, then flat at ``target``; the subclass gives
    the shape as a weight ``w(frac)`` on ``init`` (1 at frac 0, 0 at frac 1).

    The period is ``total_steps``, or ``ceil(|init - target| / decay)`` iterations.
    """

    init: float
    target: float
    decay: float | None = None
    total_steps: int | None = None

    def __post_init__(self) -> None:
        _positive("init", self.init)
        _positive("target", self.target)
        _period(self.init, self.target, self.decay, self.total_steps)

    def _weight(self, frac: float) -> float:  # pragma: no cover - abstract
        raise NotImplementedError

    def __call__(self, t: int) -> float:
        period = _period(self.init, self.target, self.decay, self.total_steps)
        weight = self._weight(min(max(t, 0), period) / period)
        return float(self.target + (self.init - self.target) * weight)


@dataclass(frozen=True, kw_only=True)
class LinearEpsilon(_Anneal):
    """Straight line from ``init`` to ``target`` over the period, then flat at ``target``."""

    def _weight(self, frac: float) -> float:
        return 1.0 - frac


@dataclass(frozen=True, kw_only=True)
class CosineEpsilon(_Anneal):
    """Half cosine from ``init`` to ``target`` over the period ``T``, then flat at ``target``:
    ``value(t) = target + (init - target) * (1 + cos(pi * min(t, T) / T)) / 2``.
    """

    def _weight(self, frac: float) -> float:
        return 0.5 * (1.0 + math.cos(math.pi * frac))


@dataclass(frozen=True, kw_only=True)
class PowerDecay(Schedule):
    """``max(init * (t + 1) ** -(0.5 + gamma), target)``: square-summable, not summable.

    ``gamma`` lies in (0, 0.5]; ``target`` may be 0.
    """

    init: float
    gamma: float = 0.1
    target: float = 0.0

    def __post_init__(self) -> None:
        _positive("init", self.init)
        _positive("target", self.target, allow_zero=True)
        if not (isinstance(self.gamma, int | float) and 0.0 < self.gamma <= 0.5):
            raise ValueError(f"gamma must lie in (0, 0.5], got {self.gamma!r}")

    def __call__(self, t: int) -> float:
        return float(max(self.init * (max(t, 0) + 1) ** -(0.5 + self.gamma), self.target))


SCHEDULES: dict[str, type[Schedule]] = {
    cls.__name__: cls for cls in (Constant, LinearEpsilon, CosineEpsilon, PowerDecay)
}


def as_schedule(value: float | Schedule, name: str) -> Schedule:
    """A schedule from a positive float (constant) or a schedule; errors name ``name``."""
    if isinstance(value, Schedule):
        return value
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{name} must be a positive float or a Schedule, got {value!r}")
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a positive finite float, got {value!r}")
    return Constant(value=float(value))


def scaled(schedule: Schedule, factor: float) -> Schedule:
    """``factor * schedule`` as a schedule of the same kind: equal at every ``t``.

    Used to translate the paper's package's convention (a float radius is a multiple of
    epsilon) into ours (a radius is a distance): ``scaled(epsilon, r)``.
    """
    _positive("factor", factor)
    if isinstance(schedule, Constant):
        return Constant(value=schedule.value * factor)
    if isinstance(schedule, _Anneal):
        decay = None if schedule.decay is None else schedule.decay * factor
        return replace(
            schedule, init=schedule.init * factor, target=schedule.target * factor, decay=decay
        )
    if isinstance(schedule, PowerDecay):
        return replace(schedule, init=schedule.init * factor, target=schedule.target * factor)
    raise ValueError(f"schedule must be one of {sorted(SCHEDULES)}, got {schedule!r}")


def from_state(state: dict[str, Any]) -> Schedule:
    """Rebuild a schedule from :meth:`Schedule.state_dict`."""
    fields = dict(state)
    kind = fields.pop("type", None)
    if kind not in SCHEDULES:
        raise ValueError(f"schedule type must be one of {sorted(SCHEDULES)}, got {kind!r}")
    return SCHEDULES[kind](**fields)
