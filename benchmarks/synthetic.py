"""Synthetic benchmark: PolyStep (particle solver and ask/tell) vs pycma and OpenAI-ES.

Every method gets the same number of objective evaluations (``budget_per_dim * dim``), the same
seeded uniform start in half of the function's box, and one scale knob (PolyStep: initial radius;
CMA-ES: sigma0; OpenAI-ES: sigma) chosen from a small grid on TUNING seeds that are disjoint from
the REPORTED seeds. Prints one JSON line per (function, dim, method) with the median best value
over the reported seeds and the median wall seconds, then a markdown table.

    python benchmarks/synthetic.py                      # full table (dims 10 and 100)
    python benchmarks/synthetic.py --dims 10 --seeds 2  # quick look
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from collections.abc import Callable

import cma
import numpy as np
import torch

from polystep import PolyStep, minimize
from polystep.baselines.openai_es import OpenAIES
from polystep.epsilon import CosineEpsilon
from polystep.objectives import Ackley, Objective, Rastrigin, Rosenbrock, Sphere

FUNCTIONS = {"sphere": Sphere, "ackley": Ackley, "rastrigin": Rastrigin, "rosenbrock": Rosenbrock}
SCALES = (0.1, 0.3, 1.0, 3.0)  # grid of the one knob, as a fraction of the box half-width
TUNING_SEEDS = (1000, 1001, 1002)
Runner = Callable[[Objective, torch.Tensor, int, float, int], float]


def start_point(objective: Objective, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (
        (torch.rand(objective.dim, generator=g, dtype=torch.float64) * 2 - 1) * objective.bound / 2
    )


def run_polystep(
    objective: Objective, x0: torch.Tensor, budget: int, scale: float, seed: int
) -> float:
    """Particle solver: enough particles for >= 500 iterations (spread = radius around x0)."""
    dim = objective.dim
    per_particle = 2 * dim + 1  # orthoplex probes + the moved particle
    particles = max(1, budget // (500 * per_particle))
    iterations = (budget - particles) // (particles * per_particle)
    radius = CosineEpsilon(
        init=scale * objective.bound, target=scale * objective.bound * 1e-4, total_steps=iterations
    )
    solver = PolyStep.create(
        objective,
        epsilon=0.5,
        step_radius=radius,
        probe_radius=radius,
        max_iterations=iterations,
        seed=seed,
    )
    g = torch.Generator().manual_seed(seed)
    spread = torch.randn(particles, dim, generator=g, dtype=torch.float64) * scale * objective.bound
    state = solver.run(x0[None] + spread * (particles > 1))
    assert state.evaluations <= budget
    return state.best_cost


def run_polystep_es(
    objective: Objective, x0: torch.Tensor, budget: int, scale: float, seed: int
) -> float:
    """Ask/tell ``minimize`` with one particle, radii cosine-decayed to 1e-4."""
    steps = budget // (2 * objective.dim)
    r = scale * objective.bound
    result = minimize(
        objective,
        x0,
        budget=budget,
        seed=seed,
        step_radius=CosineEpsilon(init=r, target=r * 1e-4, total_steps=steps),
        probe_radius=CosineEpsilon(init=2 * r, target=2 * r * 1e-4, total_steps=steps),
    )
    return result.fun


def run_cma(objective: Objective, x0: torch.Tensor, budget: int, scale: float, seed: int) -> float:
    """pycma with default population, restarts off, ``maxfevals = budget``."""
    opts = {
        "maxfevals": budget,
        "seed": seed + 1,
        "verbose": -9,
        "tolfun": 0,
        "tolx": 0,
        "tolfunhist": 0,
        "tolstagnation": int(1e9),
    }
    es = cma.CMAEvolutionStrategy(x0.numpy(), scale * objective.bound, opts)
    best = float("inf")
    evaluations = 0
    while not es.stop() and evaluations + es.popsize <= budget:
        population = es.ask()
        values = objective(torch.as_tensor(np.asarray(population))).numpy()
        evaluations += len(population)
        es.tell(population, values.tolist())
        best = min(best, float(values.min()))
    return best


def run_openai_es(
    objective: Objective, x0: torch.Tensor, budget: int, scale: float, seed: int
) -> float:
    """OpenAI-ES, population 50 antithetic, Adam lr = sigma / 2 (a common pairing)."""
    sigma = scale * objective.bound
    es = OpenAIES(
        objective.dim,
        popsize=50,
        sigma=sigma,
        learning_rate=sigma / 2,
        x0=x0,
        seed=seed,
        dtype=torch.float64,
    )
    while es.evaluations + 50 <= budget:
        es.tell(objective(es.ask()))
    return es.best_fitness


METHODS: dict[str, Runner] = {
    "polystep": run_polystep,
    "polystep_es": run_polystep_es,
    "cmaes": run_cma,
    "openai_es": run_openai_es,
}


def evaluate(
    method: Runner, objective: Objective, budget: int, scale: float, seeds
) -> tuple[list[float], list[float]]:
    values, seconds = [], []
    for seed in seeds:
        start = time.perf_counter()
        values.append(method(objective, start_point(objective, seed), budget, scale, seed))
        seconds.append(time.perf_counter() - start)
    return values, seconds


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--functions", default="sphere,ackley,rastrigin,rosenbrock")
    parser.add_argument("--dims", default="10,100")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--seeds", type=int, default=5, help="reported seeds 0..N-1")
    parser.add_argument("--budget-per-dim", type=int, default=1000)
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = []
    for dim in (int(d) for d in args.dims.split(",")):
        for fname in args.functions.split(","):
            objective = FUNCTIONS[fname](dim=dim)
            budget = args.budget_per_dim * dim
            for mname in args.methods.split(","):
                method = METHODS[mname]
                tuned = {
                    s: statistics.median(evaluate(method, objective, budget, s, TUNING_SEEDS)[0])
                    for s in SCALES
                }
                scale = min(tuned, key=tuned.get)
                values, seconds = evaluate(method, objective, budget, scale, range(args.seeds))
                row = {
                    "function": fname,
                    "dim": dim,
                    "method": mname,
                    "budget_evals": budget,
                    "median_best": statistics.median(values),
                    "values": values,
                    "median_seconds": statistics.median(seconds),
                    "scale": scale,
                    "tuning": {"grid": SCALES, "seeds": TUNING_SEEDS, "medians": tuned},
                    "seeds": list(range(args.seeds)),
                    "machine": platform.processor() or platform.machine(),
                    "threads": torch.get_num_threads(),
                    "torch": torch.__version__,
                    "cma": cma.__version__,
                }
                rows.append(row)
                print(json.dumps(row), flush=True)
    print("\n| function | dim | budget | " + " | ".join(args.methods.split(",")) + " |")
    print("|---|---|---|" + "---|" * len(args.methods.split(",")))
    for dim in (int(d) for d in args.dims.split(",")):
        for fname in args.functions.split(","):
            cells = [r for r in rows if r["dim"] == dim and r["function"] == fname]
            text = " | ".join(f"{r['median_best']:.3g} ({r['median_seconds']:.1f}s)" for r in cells)
            print(f"| {fname} | {dim} | {cells[0]['budget_evals']:,} | {text} |")


if __name__ == "__main__":
    main()
