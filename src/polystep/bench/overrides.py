"""Run a bench method with some of its settings replaced (a tuning trial, or a tuned selection).

The method runners of :mod:`polystep.bench.methods` read their settings from two tables: PolyStep
from ``polystep.optimizer.PRESETS[task.preset]`` and the baselines from
:data:`polystep.baselines.NN_PRESETS`. :func:`configured` puts ``overrides`` on top of the right
table for the length of one run and gives back the task to run (a PolyStep task points at a
temporary preset) and the settings the run really uses, which the run's record stores.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
from collections.abc import Iterator
from typing import Any

from polystep.baselines import NN_PRESETS
from polystep.bench.methods import METHODS
from polystep.bench.tasks import TaskSpec
from polystep.optimizer import PRESETS

TEMP_PRESET = "_bench_overrides"


def base_settings(task: TaskSpec, method: str) -> dict[str, Any]:
    """The settings ``method`` runs ``task`` with when nothing is replaced."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if method == "polystep":
        return dict(PRESETS[task.preset])
    return dict(NN_PRESETS[method])


def resolved_settings(task: TaskSpec, method: str, overrides: dict[str, Any]) -> dict[str, Any]:
    """``base_settings`` with ``overrides`` on top; an unknown key is refused by name."""
    base = base_settings(task, method)
    unknown = sorted(set(overrides) - set(base))
    if unknown:
        raise ValueError(
            f"overrides for {method} must be among {sorted(base)}, got unknown {unknown}"
        )
    return json.loads(json.dumps({**base, **overrides}))


@contextlib.contextmanager
def configured(
    task: TaskSpec, method: str, overrides: dict[str, Any]
) -> Iterator[tuple[TaskSpec, dict[str, Any]]]:
    """``(task to run, settings used)`` with ``overrides`` in force until the block ends."""
    settings = resolved_settings(task, method, overrides)
    if not overrides:
        yield task, settings
        return
    if method == "polystep":
        if TEMP_PRESET in PRESETS:
            raise RuntimeError("configured() blocks do not nest")
        PRESETS[TEMP_PRESET] = settings
        try:
            yield dataclasses.replace(task, preset=TEMP_PRESET), settings
        finally:
            del PRESETS[TEMP_PRESET]
        return
    saved = NN_PRESETS[method]
    NN_PRESETS[method] = settings
    try:
        yield task, settings
    finally:
        NN_PRESETS[method] = saved
