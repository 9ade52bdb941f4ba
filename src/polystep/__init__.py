"""polystep: forward-only optimisation with rotated polytopes and entropic weights.

The public names below are imported on first use (PEP 562), so ``import polystep`` (and the
``polystep --help`` command line) does not pay for importing torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from polystep.ask_tell import MinimizeResult, PolyStepES, minimize
    from polystep.objectives import Ackley, Levy, Rastrigin, Rosenbrock, Sphere
    from polystep.optimizer import PolyStepOptimizer
    from polystep.solver import PolyStep, SolverState
    from polystep.training import EarlyStoppingCallback, LoggingCallback, TrainConfig, train

_HOME = {
    "polystep.ask_tell": ("MinimizeResult", "PolyStepES", "minimize"),
    "polystep.objectives": ("Ackley", "Levy", "Rastrigin", "Rosenbrock", "Sphere"),
    "polystep.optimizer": ("PolyStepOptimizer",),
    "polystep.solver": ("PolyStep", "SolverState"),
    "polystep.training": ("EarlyStoppingCallback", "LoggingCallback", "TrainConfig", "train"),
}
_MODULE_OF = {name: module for module, names in _HOME.items() for name in names}

__all__ = [
    "Ackley",
    "EarlyStoppingCallback",
    "Levy",
    "LoggingCallback",
    "MinimizeResult",
    "PolyStep",
    "PolyStepES",
    "PolyStepOptimizer",
    "Rastrigin",
    "Rosenbrock",
    "SolverState",
    "Sphere",
    "TrainConfig",
    "minimize",
    "train",
]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    if name not in _MODULE_OF:
        raise AttributeError(f"module 'polystep' has no attribute {name!r}")
    value = getattr(importlib.import_module(_MODULE_OF[name]), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
