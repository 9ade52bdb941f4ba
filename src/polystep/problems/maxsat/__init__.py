"""MAX-SAT for PolyStep: DIMACS CNF/WCNF I/O, a random k-SAT generator, batched and delta
objectives over ``theta -> 1[theta > 0]``, the PolyStep preset and driver, an OpenAI-ES baseline
driver and a probSAT-style domain reference solver."""

from polystep.problems.maxsat.generate import random_ksat
from polystep.problems.maxsat.io import MaxSATInstance, parse_dimacs, read_dimacs, write_dimacs
from polystep.problems.maxsat.local_search import LocalSearchResult, probsat
from polystep.problems.maxsat.objective import (
    ClauseTensors,
    DeltaEvaluator,
    assignment,
    unsat_weight,
    unsat_weight_numpy,
)
from polystep.problems.maxsat.openai_es import solve_maxsat_openai_es
from polystep.problems.maxsat.solve import (
    DEFAULT_PRESET,
    ESConfig,
    MaxSATPreset,
    MaxSATResult,
    preset_for_budget,
    satisfied_fraction,
    solve_maxsat,
)

__all__ = [
    "DEFAULT_PRESET",
    "ClauseTensors",
    "DeltaEvaluator",
    "ESConfig",
    "LocalSearchResult",
    "MaxSATInstance",
    "MaxSATPreset",
    "MaxSATResult",
    "assignment",
    "parse_dimacs",
    "preset_for_budget",
    "probsat",
    "random_ksat",
    "read_dimacs",
    "satisfied_fraction",
    "solve_maxsat",
    "solve_maxsat_openai_es",
    "unsat_weight",
    "unsat_weight_numpy",
    "write_dimacs",
]
