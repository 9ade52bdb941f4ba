"""Baseline registry, and ``nn`` settings for training networks in their full parameter space.

The ``nn`` settings were tuned on scikit-learn digits with validation-only selection (by a
script since replaced by ``benchmarks/tune.py``, the one protocol for every method; grid and
every run in ``benchmarks/results/baseline_tuning.json``): a ReLU MLP 64-32-10 and a hard-LIF
SNN 64-32-10 (T = 8), PyTorch's default initialisation, batch 128, 20,000 forward passes, one
seed, 144 validation images. For each method the setting with the best summed validation
accuracy over the two models was kept (digits validation accuracy, MLP / SNN):

| method | setting | MLP | SNN |
|---|---|---|---|
| OpenAI-ES (Adam update) | popsize 50, sigma 0.03, learning_rate 0.03 | 0.917 | 0.785 |
| SPSA | a 0.3, c 0.05, 8 directions (16 evaluations per iteration) | 0.889 | 0.611 |
| CMA-ES (diagonal above 1k) | popsize 50, sigma0 0.1 | 0.917 | 0.778 |
| Adam on the smooth twin | lr 3e-3 (3,000 steps) | 0.972 | 0.979 |

These are small-model, single-seed defaults; the bench tunes every method per task and budget
with ``benchmarks/tune.py`` and runs the selection with ``polystep bench ... --tuned LOG``
(Adam's ``weight_decay`` 0.0 is listed so that the tuning grid can vary it).
"""

from __future__ import annotations

from typing import Any

import torch

from polystep.baselines.cmaes import CMAES
from polystep.baselines.openai_es import OpenAIES
from polystep.baselines.spsa import SPSA

VECTOR_BASELINES: dict[str, type] = {"openai_es": OpenAIES, "spsa": SPSA, "cmaes": CMAES}


def make_baseline(name: str, dim: int, **kwargs: Any) -> OpenAIES | SPSA | CMAES:
    """Construct the vector baseline ``name`` (one of :data:`VECTOR_BASELINES`) over ``R^dim``."""
    if name not in VECTOR_BASELINES:
        raise ValueError(f"name must be one of {sorted(VECTOR_BASELINES)}, got {name!r}")
    return VECTOR_BASELINES[name](dim, **kwargs)


NN_PRESETS: dict[str, dict[str, Any]] = {
    "openai_es": {"popsize": 50, "sigma": 0.03, "learning_rate": 0.03},
    "spsa": {"a": 0.3, "c": 0.05, "num_directions": 8},
    "cmaes": {"popsize": 50, "sigma0": 0.1},
    "adam": {"lr": 3e-3, "weight_decay": 0.0},
}


def make_nn_baseline(
    name: str, dim: int, *, x0: torch.Tensor | None = None, seed: int = 0, **overrides: Any
) -> OpenAIES | SPSA | CMAES:
    """Vector baseline ``name`` with the :data:`NN_PRESETS` settings, updated by ``overrides``."""
    if name not in VECTOR_BASELINES:
        raise ValueError(f"name must be one of {sorted(VECTOR_BASELINES)}, got {name!r}")
    return make_baseline(name, dim, x0=x0, seed=seed, **{**NN_PRESETS[name], **overrides})
