"""Schedules for epsilon, the step and probe radii, and sigmas: ``value = schedule(t)``.

The names here are the ones to use (``Cosine``, ``Linear``, ``Constant``, ``PowerDecay``); the
implementation still lives in :mod:`polystep.epsilon`, whose old names (``CosineEpsilon``,
``LinearEpsilon``) keep working for the paper's snippets. A radius is a distance in search
coordinates; a float and a constant schedule mean the same thing.
"""

from __future__ import annotations

from polystep.epsilon import (
    SCHEDULES,
    Constant,
    PowerDecay,
    Schedule,
    as_schedule,
    from_state,
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
    "from_state",
]
