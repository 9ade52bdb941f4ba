"""The methods of the benchmark table, all driven by one forward-pass budget and one data stream.

Each runner trains ``model`` in place on ``loaders.train`` until the budget would be exceeded,
calling ``selector.observe(model, evaluations, steps)`` as it goes (validation only). Each asks
``budget.allows`` once at the start of every step and charges it once per step taken, so the
wall-second rule of :mod:`polystep.bench.deadline` (a step that would end past the budget is not
started) is the same for every method. Forward passes:
one candidate (or population member, or SPSA probe) scored on one batch counts 1, and so does
PolyStep's forward pass of the incumbent that each step reports as its loss; an Adam step
on one batch counts 1 (its backward pass is not counted; the wall seconds show its cost).

Baseline settings are :data:`polystep.baselines.NN_PRESETS`, chosen on the digits VALIDATION
split with ``benchmarks/tune_baselines.py`` (see ``polystep.baselines.presets``); they are not
tuned per task and never on test data.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from polystep.baselines import NN_PRESETS, ModuleObjective, make_nn_baseline, train_adam
from polystep.bench.deadline import StepBudget
from polystep.bench.selection import Selector
from polystep.bench.tasks import TaskSpec
from polystep.blocks import num_blocks
from polystep.data import Loaders
from polystep.distributed import report
from polystep.geometry import num_vertices
from polystep.optimizer import PolyStepOptimizer

METHODS = ("polystep", "openai_es", "spsa", "cmaes", "adam")


def _forever(batches: Any) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    while True:
        yielded = False
        for batch in batches:
            yielded = True
            yield batch
        if not yielded:
            raise ValueError("the training loader yielded no batch")


def polystep_passes_per_step(optimizer: PolyStepOptimizer) -> int:
    """Forward passes one ``optimizer.step_batch`` costs: every candidate and the incumbent."""
    rule, space = optimizer.rule, optimizer.subspace
    candidates = (
        num_blocks(space.dim, space.block_dim)
        * num_vertices(rule.polytope, space.block_dim)
        * rule.num_probe
    )
    return candidates + 1


def run_polystep(
    task: TaskSpec,
    model: nn.Module,
    loaders: Loaders,
    budget: StepBudget,
    selector: Selector,
    seed: int,
) -> dict[str, Any]:
    """PolyStepOptimizer with the task's preset; a step runs only if all its candidates fit."""
    optimizer = PolyStepOptimizer(model, preset=task.preset, seed=seed)
    per_step = polystep_passes_per_step(optimizer)
    loss_fn = nn.CrossEntropyLoss()
    budget.start()
    selector.observe(model, 0, 0)
    for x, y in _forever(loaders.train):
        if not budget.allows(per_step):
            break
        optimizer.step_batch(x, y, loss_fn)
        budget.charge(per_step)
        selector.observe(model, budget.evaluations, budget.steps)
    return {"steps": optimizer.iteration, "passes_per_step": per_step, **report(optimizer)}


def run_vector_baseline(
    name: str,
    model: nn.Module,
    loaders: Loaders,
    budget: StepBudget,
    selector: Selector,
    seed: int,
) -> dict[str, Any]:
    """OpenAI-ES / SPSA / CMA-ES over the full flat parameter vector, one batch per generation."""
    objective = ModuleObjective(model, nn.CrossEntropyLoss(), _forever(loaders.train))
    es = make_nn_baseline(name, objective.dim, x0=objective.x0, seed=seed)
    budget.start()
    selector.observe(model, 0, 0)
    generations = 0
    while True:
        population = es.ask()
        if not budget.allows(int(population.shape[0])):
            break
        es.tell(objective(population))
        budget.charge(int(population.shape[0]))
        generations += 1
        objective.load(es.mean, model)
        selector.observe(model, budget.evaluations, budget.steps)
    return {"generations": generations}


def run_adam(
    model: nn.Module,
    twin: nn.Module,
    loaders: Loaders,
    budget: StepBudget,
    selector: Selector,
) -> dict[str, Any]:
    """Adam on the smooth twin; the HARD model (twin's weights copied in) is what is scored."""
    twin.load_state_dict(model.state_dict())
    selector.observe(model, 0, 0)

    def sync(record: dict[str, float], trained: nn.Module) -> None:
        model.load_state_dict(trained.state_dict())
        selector.observe(model, int(record["evaluations"]), int(record["step"]))

    result = train_adam(
        twin, loaders.train, nn.CrossEntropyLoss(), budget,
        callback=sync, **NN_PRESETS["adam"],
    )  # fmt: skip
    model.load_state_dict(twin.state_dict())
    return {"steps": result.steps}
