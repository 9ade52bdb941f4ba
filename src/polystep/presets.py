"""Task knowledge of :class:`~polystep.optimizer.PolyStepOptimizer`: the presets, and the search
space and blocks per step they choose for a model."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from polystep.epsilon import CosineEpsilon, as_schedule
from polystep.subspace import (
    FactoredSubspace,
    FullSpace,
    HybridSubspace,
    SparseProjection,
    Subspace,
)
from polystep.transform import ParamLayout

FULL_MAX_PARAMS = 2_000
LARGE_MIN_PARAMS = 10_000_000  # from here a step searches a random subset of the blocks
SUBSPACES = ("auto", "full", "hybrid", "factored", "sparse")

# Task knowledge lives here, not in the constructor. Radii are distances in search coordinates
# (weight units: every projection is an isometry per factor); each preset's epsilon is in the
# units of its own cost scaling ("mean": the step's mean recentred cost; "row": each particle's),
# so the same values transfer across loss scales. An epsilon passed by the caller comes without
# that scaling (raw loss units), as in the paper's package.
#
# A preset is plain data (the bench stores it as JSON): epsilon and the radii are floats
# (constants) or a schedule's state_dict, e.g. a cosine over the run (neither decay nor
# total_steps: from init at the first step to target at the run's last, the horizon coming
# from train(); see polystep.epsilon).
#
# Large models (LARGE_MIN_PARAMS parameters and more) keep the preset's space, whose candidates
# each touch one layer (the layered evaluator's savings apply), but each step searches only
# "large_blocks_per_step" blocks drawn at random (without replacement) from all of them; the
# others stay where they are. 512 blocks of 8 with the orthoplex are 8,192 candidates a step:
# one step of a 784-4096-2048-10 MLP (6,924 blocks) at batch 256 then takes about 10 s on 2
# shared CPU cores, where every block would be 110,784 candidates (benchmarks/large_model.py).
PRESETS: dict[str, dict[str, Any]] = {
    # Generic non-differentiable nets (ReLU, staircase, argmax routing). A factored space
    # redrawn every step gives each hidden unit a fresh random direction per step; "row"
    # scaling makes every particle move about step_radius whatever its layer's sensitivity.
    # Chosen on digits VALIDATION accuracy with the earlier tune_presets.py (in git history;
    # benchmarks/tune.py is the one protocol now; results/preset_tuning.json); the hybrid
    # space it replaced fit only ~6 steps in 40k passes.
    "default": {
        "epsilon": 0.03,
        "step_radius": 0.3,
        "probe_radius": 2.0,
        "scale_cost": "row",
        "polytope": "orthoplex",
        "num_probe": 1,
        "subspace": "factored",
        "rank": 8,
        "direct_max": 0,
        "redraw_every": 1,
        "sparse_dim": 4096,
        "large_blocks_per_step": 512,
    },
    # Hard-threshold spiking nets: a wide probe sees spike-count changes; a factored space makes
    # every hidden-layer candidate touch one neuron (cheap in the layered evaluator); small
    # output layers are searched directly. Measured on the digits SNN demo. Step radius and
    # epsilon cosine-decay over the run (0.2 -> 0.05, 0.03 -> 0.01); the probe radius stays:
    # the "decay_both" arm of benchmarks/snn_schedules.py against the constant values, on
    # MNIST validation (benchmarks/results/tuning/snn_schedules.md).
    "snn": {
        "epsilon": CosineEpsilon(init=0.03, target=0.01).state_dict(),
        "step_radius": CosineEpsilon(init=0.2, target=0.05).state_dict(),
        "probe_radius": 1.0,
        "scale_cost": "mean",
        "polytope": "orthoplex",
        "num_probe": 1,
        "subspace": "factored",
        "rank": 8,
        "direct_max": 1024,
        "redraw_every": 5,
        "sparse_dim": 4096,
        "large_blocks_per_step": 512,
    },
}
# Quantized weights and activations: shorter steps than "default" (0.1 and probe 1.0 from the
# same tuning script), cosine-decayed over the run with epsilon (0.1 -> 0.025, 0.03 -> 0.01): the
# "decay_both" arm of benchmarks/snn_schedules.py --task int8_mnist against the constant values,
# on MNIST validation (benchmarks/results/tuning/int8_schedules.md).
PRESETS["quantized"] = {
    **PRESETS["default"],
    "epsilon": CosineEpsilon(init=0.03, target=0.01).state_dict(),
    "step_radius": CosineEpsilon(init=0.1, target=0.025).state_dict(),
    "probe_radius": 1.0,
}


def build_subspace(
    kind: str | Subspace, layout: ParamLayout, preset: dict[str, Any], seed: int
) -> Subspace:
    """The search space ``kind`` over ``layout`` (``"auto"``: the full space up to
    ``FULL_MAX_PARAMS`` parameters, the preset's space above)."""
    if isinstance(kind, Subspace):
        kind.check_layout(layout)
        if kind.seed is None:
            kind.set_seed(seed)
        return kind
    if kind not in SUBSPACES:
        raise ValueError(f"subspace must be a Subspace or one of {SUBSPACES}, got {kind!r}")
    if kind == "auto":
        kind = "full" if layout.numel <= FULL_MAX_PARAMS else preset["subspace"]
    rank, redraw, direct = preset["rank"], preset["redraw_every"], preset["direct_max"]
    if kind == "full":
        return FullSpace.from_layout(layout, block_dim=2)
    if kind == "hybrid":
        return HybridSubspace.from_layout(
            layout, rank, seed=seed, direct_max=direct, redraw_every=redraw
        )
    if kind == "factored":
        return FactoredSubspace.from_layout(
            layout, rank, seed=seed, direct_max=direct, redraw_every=redraw
        )
    return SparseProjection.from_layout(layout, preset["sparse_dim"], seed=seed)


def resolve_blocks_per_step(
    value: int | str | None, num_params: int, preset: dict[str, Any]
) -> int | None:
    """Blocks searched per step (None: all): ``"auto"`` is None below ``LARGE_MIN_PARAMS``
    parameters and the preset's ``large_blocks_per_step`` from there."""
    if isinstance(value, str) and value == "auto":
        return None if num_params < LARGE_MIN_PARAMS else preset["large_blocks_per_step"]
    if value is None or (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
        return value
    raise ValueError(f"blocks_per_step must be 'auto', None or an int >= 1, got {value!r}")


SCHEDULE_KEYS = ("epsilon", "step_radius", "probe_radius")  # a float or a schedule's state_dict


def preset_settings(preset: str | Mapping[str, Any]) -> dict[str, Any]:
    """The settings of ``preset`` (a copy): a name from :data:`PRESETS`, or a mapping with
    exactly the keys of a named preset (e.g. a tuning trial's settings, or a bench record's);
    its epsilon and radii are checked (a positive float or a schedule's state_dict)."""
    if isinstance(preset, str):
        if preset not in PRESETS:
            raise ValueError(f"preset must be one of {sorted(PRESETS)} or a dict, got {preset!r}")
        return copy.deepcopy(PRESETS[preset])
    if not isinstance(preset, Mapping) or set(preset) != set(PRESETS["default"]):
        keys = sorted(preset) if isinstance(preset, Mapping) else type(preset).__name__
        raise ValueError(
            f"preset as a dict must have exactly the keys {sorted(PRESETS['default'])}, got {keys}"
        )
    for key in SCHEDULE_KEYS:
        as_schedule(preset[key], f"preset {key}")
    return copy.deepcopy(dict(preset))
