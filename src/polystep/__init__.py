"""polystep: forward-only optimisation with rotated polytopes and entropic weights."""

from polystep.ask_tell import MinimizeResult, PolyStepES, minimize
from polystep.objectives import Ackley, Levy, Rastrigin, Rosenbrock, Sphere
from polystep.optimizer import PolyStepOptimizer
from polystep.solver import PolyStep, SolverState
from polystep.training import EarlyStoppingCallback, LoggingCallback, TrainConfig, train

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
