"""Schedules for epsilon, the step and probe radii, and sigmas: ``value = schedule(t)``.

The names here are the ones to use (``Cosine``, ``Linear``, ``Constant``, ``PowerDecay``); the
implementation still lives in :mod:`polystep.epsilon`, whose old names (``CosineEpsilon``,
``LinearEpsilon``) keep working for the paper's snippets. A radius is a distance in search
coordinates; a float and a constant schedule mean the same thing.

``Cosine(init=0.2, target=0.05)`` (or ``Linear``) with neither ``decay`` nor ``total_steps``
runs over the run: ``train()`` finds the run's horizon from its limits; outside ``train()``
call ``PolyStepOptimizer.set_horizon`` first (see ``docs/concepts.md``, "Schedules over the
run").
"""

from __future__ import annotations

from polystep.epsilon import (
    SCHEDULES,
    Constant,
    PowerDecay,
    Schedule,
    as_schedule,
    for_run,
    from_state,
    over_run,
)
from polystep.epsilon import CosineEpsilon as Cosine
from polystep.epsilon import LinearEpsilon as Linear

__all__ = [
    "SCHEDULES",
    "Constant",
    "Cosine",
    "Linear",
    "PowerDecay",
    "Schedule",
    "as_schedule",
    "for_run",
    "from_state",
    "over_run",
]
