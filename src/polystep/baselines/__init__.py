"""Gradient-free baselines under one evaluation budget: OpenAI-ES, SPSA, CMA-ES, Adam on twins."""

from polystep.baselines.budget import (
    BaselineResult,
    Budget,
    BudgetExceeded,
    CountedObjective,
    run_ask_tell,
)
from polystep.baselines.openai_es import OpenAIES, centered_ranks

__all__ = [
    "BaselineResult",
    "Budget",
    "BudgetExceeded",
    "CountedObjective",
    "OpenAIES",
    "centered_ranks",
    "run_ask_tell",
]
