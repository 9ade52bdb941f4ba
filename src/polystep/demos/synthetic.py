"""``polystep demo synthetic``: PolyStep on Ackley-10 and Rastrigin-10 with a progress bar."""

from __future__ import annotations

import time

import torch
from tqdm import tqdm

from polystep.cliargs import nonneg_int, parser, positive_int
from polystep.epsilon import CosineEpsilon
from polystep.objectives import Ackley, Objective, Rastrigin
from polystep.solver import PolyStep


def solve(objective: Objective, iterations: int, particles: int, seed: int) -> dict[str, float]:
    """One run from a seeded uniform start in half the function's search box.

    Both radii decay (cosine) from half of the box half-width to 1e-4 of that.
    """
    radius = CosineEpsilon(
        init=objective.bound / 2, target=objective.bound / 2e4, total_steps=iterations
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
    x0 = (torch.rand(particles, objective.dim, generator=g) * 2 - 1) * objective.bound / 2
    start = time.perf_counter()
    state = solver.init_state(x0)
    name = f"{type(objective).__name__}-{objective.dim}"
    with tqdm(total=iterations, desc=name, unit="it", leave=False) as bar:
        while state.iteration < iterations:
            solver.step(state)
            bar.set_postfix(best=f"{state.best_cost:.3g}")
            bar.update()
    return {
        "best": min(state.costs),
        "start": float(objective(x0).min()),
        "evaluations": state.evaluations,
        "seconds": time.perf_counter() - start,
    }


def main(argv: list[str] | None = None) -> int:
    ap = parser("polystep demo synthetic", __doc__)
    ap.add_argument("--iterations", type=positive_int, default=200, help="PolyStep steps")
    ap.add_argument("--particles", type=positive_int, default=100, help="particles per run")
    ap.add_argument("--seed", type=nonneg_int, default=0, help="seed of start and search")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    rows = [
        (type(obj).__name__, obj.dim, solve(obj, args.iterations, args.particles, args.seed))
        for obj in (Ackley(dim=10), Rastrigin(dim=10))
    ]
    print("| function | dim | best start particle | best found | evaluations | seconds |")
    print("|---|---|---|---|---|---|")
    for name, dim, r in rows:
        print(
            f"| {name} | {dim} | {r['start']:.4g} | {r['best']:.3g} | "
            f"{r['evaluations']:,} | {r['seconds']:.2f} |"
        )
    return 0
