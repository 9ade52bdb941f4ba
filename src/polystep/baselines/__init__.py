"""Gradient-free baselines under one evaluation budget: OpenAI-ES, SPSA, CMA-ES (and Adam on
smooth twins, which runs through :func:`polystep.training.train`).

All vector baselines share the ask/tell protocol (``ask() -> (N, D)``, ``tell((N,))``, ``mean``,
``best_x``, ``best_fitness``, ``evaluations``) and ``run(objective, budget)``.
:class:`ModuleObjective` turns a model plus a data stream into such an objective. CMA-ES imports
pycma only when constructed.
"""

from polystep.baselines.adam import accuracy
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
from polystep.baselines.presets import (
    NN_PRESETS,
    VECTOR_BASELINES,
    make_baseline,
    make_nn_baseline,
)
from polystep.baselines.spsa import SPSA

__all__ = [
    "CMAES",
    "NN_PRESETS",
    "SPSA",
    "VECTOR_BASELINES",
    "BaselineResult",
    "Budget",
    "BudgetExceeded",
    "CountedObjective",
    "ModuleObjective",
    "OpenAIES",
    "accuracy",
    "centered_ranks",
    "make_baseline",
    "make_nn_baseline",
    "run_ask_tell",
]
