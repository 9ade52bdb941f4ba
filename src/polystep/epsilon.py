"""Schedules for the temperature epsilon and the step and probe radii.

Radius convention, used everywhere in polystep: **a radius is a distance in search
coordinates** (the raw vector, or subspace coordinates). It is never multiplied by epsilon.
A float and a schedule mean the same thing; a float is a constant schedule.

An annealing schedule (:class:`CosineEpsilon`, :class:`LinearEpsilon`) given neither ``decay``
nor ``total_steps`` runs **over the run**: from ``init`` at the first step to ``target`` at the
run's last. Its length is the run's horizon, which :func:`polystep.training.train` finds from its
limits (or the caller gives with ``PolyStepOptimizer.set_horizon``); :func:`for_run` makes it
concrete. Called without a horizon it raises: it never falls back to a constant.

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


def _period(init: float, target: float, decay: float | None, total_steps: int | None) -> int | None:
    """Iterations from ``init`` to ``target``; None for a schedule over the run."""
    if decay is not None and total_steps is not None:
        raise ValueError(
            "give at most one of decay= or total_steps= (neither: over the run), got "
            f"decay={decay!r} and total_steps={total_steps!r}"
        )
    if decay is None and total_steps is None:
        return None
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

    The period is ``total_steps``, or ``ceil(|init - target| / decay)`` iterations; with
    neither, the run's own length (see the module docstring and :func:`for_run`).
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

    @property
    def over_run(self) -> bool:
        """True when the period is the run's own length (neither decay nor total_steps)."""
        return self.decay is None and self.total_steps is None

    def at_fraction(self, frac: float) -> float:
        """The value at the fraction ``frac`` of the period (clipped to [0, 1])."""
        weight = self._weight(min(max(frac, 0.0), 1.0))
        return float(self.target + (self.init - self.target) * weight)

    def __call__(self, t: int) -> float:
        period = _period(self.init, self.target, self.decay, self.total_steps)
        if period is None:
            raise ValueError(
                f"{self!r} runs over the whole run (neither decay= nor total_steps=), so it "
                "needs the run's length: train with polystep.train() bounded by epochs, "
                "max_steps, max_evaluations or max_seconds, or call "
                "optimizer.set_horizon(steps=...) before the first step, or give total_steps="
            )
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


def over_run(schedule: Schedule) -> bool:
    """Whether ``schedule`` runs over the run (an annealing schedule without a period)."""
    return isinstance(schedule, _Anneal) and schedule.over_run


def for_run(
    schedule: Schedule, *, steps: int | None = None, fraction: float | None = None
) -> Schedule:
    """``schedule`` made concrete for a run, when it runs over the run (others are returned as
    they are): over ``steps`` iterations (``total_steps=steps``), or, for a run measured in
    seconds, as the constant at ``fraction`` (0..1) of the run. Give exactly one."""
    if (steps is None) == (fraction is None):
        raise ValueError(f"give exactly one of steps= or fraction=, got {steps!r} and {fraction!r}")
    if not over_run(schedule):
        return schedule
    assert isinstance(schedule, _Anneal)
    if steps is not None:
        check_positive_int("steps", steps)
        return replace(schedule, total_steps=steps)
    if not (isinstance(fraction, int | float) and math.isfinite(fraction)):
        raise ValueError(f"fraction must be a finite number, got {fraction!r}")
    return Constant(value=schedule.at_fraction(float(fraction)))


def as_schedule(value: float | Schedule | dict[str, Any], name: str) -> Schedule:
    """A schedule from a positive float (constant), a schedule, or a schedule's
    :meth:`~Schedule.state_dict` (the plain-data form presets and bench records hold); errors
    name ``name``."""
    if isinstance(value, Schedule):
        return value
    if isinstance(value, dict):
        try:
            return from_state(value)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{name} holds an invalid schedule state {value!r}: {exc}") from exc
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(
            f"{name} must be a positive float, a Schedule or a schedule's state_dict, got {value!r}"
        )
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
