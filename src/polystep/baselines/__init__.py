"""Gradient-free baselines under one evaluation budget: OpenAI-ES, SPSA, CMA-ES, Adam on twins.

All vector baselines share the ask/tell protocol (``ask() -> (N, D)``, ``tell((N,))``, ``mean``,
``best_x``, ``best_fitness``, ``evaluations``) and ``run(objective, budget)``.
:class:`ModuleObjective` turns a model plus a data stream into such an objective. CMA-ES imports
pycma only when constructed.
"""

from polystep.baselines.adam import AdamResult, accuracy, train_adam
from polystep.baselines.budget import (
    BaselineResult,
    Budget,
    BudgetExceeded,
    CountedObjective,
    run_ask_tell,
)
from polystep.baselines.cmaes import CMAES
from polystep.baselines.module_objective import ModuleObjective
from polystep.baselines.openai_es import OpenAIES, centered_ranks
from polystep.baselines.spsa import SPSA

VECTOR_BASELINES: dict[str, type] = {"openai_es": OpenAIES, "spsa": SPSA, "cmaes": CMAES}


def make_baseline(name: str, dim: int, **kwargs: object) -> OpenAIES | SPSA | CMAES:
    """Construct the vector baseline ``name`` (one of :data:`VECTOR_BASELINES`) over ``R^dim``."""
    if name not in VECTOR_BASELINES:
        raise ValueError(f"name must be one of {sorted(VECTOR_BASELINES)}, got {name!r}")
    return VECTOR_BASELINES[name](dim, **kwargs)


__all__ = [
    "CMAES",
    "SPSA",
    "VECTOR_BASELINES",
    "AdamResult",
    "BaselineResult",
    "Budget",
    "BudgetExceeded",
    "CountedObjective",
    "ModuleObjective",
    "OpenAIES",
    "accuracy",
    "centered_ranks",
    "make_baseline",
    "run_ask_tell",
    "train_adam",
]
