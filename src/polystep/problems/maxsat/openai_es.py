"""The OpenAI-ES baseline on MAX-SAT (same encoding ``1[theta > 0]`` as PolyStep's
:func:`~polystep.problems.maxsat.solve.solve_maxsat`, same result type and budget)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict

import torch

from polystep.problems.maxsat.io import MaxSATInstance
from polystep.problems.maxsat.objective import ClauseTensors, unsat_weight
from polystep.problems.maxsat.presets import DEFAULT_ES, ESConfig
from polystep.problems.maxsat.solve import MaxSATResult


def solve_maxsat_openai_es(
    instance: MaxSATInstance,
    *,
    budget_evals: int,
    seed: int = 0,
    config: ESConfig = DEFAULT_ES,
    device: torch.device | str = "cpu",
    max_seconds: float | None = None,
    clauses: ClauseTensors | None = None,
    callback: Callable[[dict[str, float]], None] | None = None,
) -> MaxSATResult:
    """OpenAI-ES (``polystep.baselines.openai_es.OpenAIES``) at a candidate-evaluation budget.

    Each generation evaluates ``popsize`` candidates with the batched full objective; the mean is
    also evaluated (counted) every generation so the incumbent is reported like PolyStep's.
    ``callback`` gets the same dict as :func:`solve_maxsat`'s after every generation."""
    from polystep.baselines.openai_es import OpenAIES

    t0 = time.perf_counter()
    device = torch.device(device)
    if clauses is None:
        clauses = ClauseTensors.from_instance(instance, device)
    n = instance.num_vars
    gen = torch.Generator(device=device).manual_seed(int(seed))
    x0 = config.init_scale * torch.randn(n, generator=gen, dtype=torch.float32, device=device)
    es = OpenAIES(
        n,
        popsize=config.popsize,
        sigma=config.sigma,
        learning_rate=config.learning_rate,
        x0=x0,
        seed=seed,
        device=device,
    )
    mean_cost = float(unsat_weight(clauses, es.mean))
    evaluations = 1
    best_cost, best_x = mean_cost, (es.mean > 0).clone()
    history = [(evaluations, best_cost, mean_cost)]
    per_gen = config.popsize + 1
    gens = max(0, (int(budget_evals) - 1) // per_gen)
    done = 0
    for gen_index in range(gens):
        if max_seconds is not None and time.perf_counter() - t0 > max_seconds:
            break
        population = es.ask()
        fitness = unsat_weight(clauses, population)
        es.tell(fitness)
        mean_cost = float(unsat_weight(clauses, es.mean))
        evaluations += per_gen
        done += 1
        if es.best_fitness < best_cost:
            best_cost, best_x = es.best_fitness, (es.best_x > 0).clone()
        if mean_cost < best_cost:
            best_cost, best_x = mean_cost, (es.mean > 0).clone()
        history.append((evaluations, best_cost, mean_cost))
        if callback is not None:
            info = {"step": gen_index, "evaluations": evaluations, "cost": mean_cost}
            callback({**info, "best": best_cost})
    return MaxSATResult(
        method="openai-es",
        best_cost=best_cost,
        best_assignment=best_x.cpu().numpy(),
        incumbent_cost=mean_cost,
        incumbent_assignment=(es.mean > 0).cpu().numpy(),
        evaluations=evaluations,
        steps=done,
        wall_s=time.perf_counter() - t0,
        history=history,
        config={"es": asdict(config), "seed": seed, "budget_evals": int(budget_evals)},
    )
