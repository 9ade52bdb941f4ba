"""The settings a bench method runs with: its table's, with some replaced (a tuning trial, or a
tuned selection).

PolyStep reads its settings from ``polystep.presets.PRESETS[task.preset]`` (with the task's
bench extras, and its settings for the run's scale, on top) and the baselines from
:data:`polystep.baselines.NN_PRESETS`. :func:`resolved_settings` puts ``overrides`` on top
of a copy; the runner passes the result down to the method (the tables never change), and the
run's record stores it.
"""

from __future__ import annotations

import json
from typing import Any

from polystep.baselines import NN_PRESETS
from polystep.bench.methods import METHODS
from polystep.bench.tasks import SCALES, TaskSpec
from polystep.presets import PRESETS


def base_settings(task: TaskSpec, method: str, scale: str) -> dict[str, Any]:
    """The settings ``method`` runs ``task`` with at ``scale`` when nothing is replaced."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if scale not in SCALES:
        raise ValueError(f"scale must be one of {SCALES}, got {scale!r}")
    if method == "polystep":
        return {
            **PRESETS[task.preset],
            **task.polystep_extra,
            **task.polystep_at_scale.get(scale, {}),
        }
    return dict(NN_PRESETS[method])


# Settings the bench reads itself, beside the method's own, and only when given: PolyStep's
# revival of silent output neurons (share of a held batch; polystep.nn.ReviveSilentOutputs).
BENCH_KEYS = {"polystep": ("revive_outputs",)}


def resolved_settings(
    task: TaskSpec, method: str, overrides: dict[str, Any], *, scale: str
) -> dict[str, Any]:
    """``base_settings`` at ``scale`` with ``overrides`` on top; an unknown key is refused by
    name."""
    base = base_settings(task, method, scale)
    known = sorted({*base, *BENCH_KEYS.get(method, ())})
    unknown = sorted(set(overrides) - set(known))
    if unknown:
        raise ValueError(f"overrides for {method} must be among {known}, got unknown {unknown}")
    return json.loads(json.dumps({**base, **overrides}))
