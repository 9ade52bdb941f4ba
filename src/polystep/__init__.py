"""polystep: forward-only optimisation with rotated polytopes and entropic weights."""

from polystep.ask_tell import MinimizeResult, PolyStepES, minimize
from polystep.objectives import Ackley, Levy, Rastrigin, Rosenbrock, Sphere
from polystep.solver import PolyStep, SolverState

__all__ = [
    "Ackley",
    "Levy",
    "MinimizeResult",
    "PolyStep",
    "PolyStepES",
    "Rastrigin",
    "Rosenbrock",
    "SolverState",
    "Sphere",
    "minimize",
]
__version__ = "0.1.0"
