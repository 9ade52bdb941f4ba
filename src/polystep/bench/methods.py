"""The methods of the benchmark table, all driven by one forward-pass budget and one data stream.

Each runner trains ``model`` in place on ``loaders.train`` under ``max_evaluations`` forward
passes and, when given, ``max_seconds`` training seconds, with the same rule for every method
(:class:`~polystep.deadline.StepBudget`: a step starts only if its passes fit and its estimated
time would end within the budget; validation is not training time). The :class:`Selector`
scores the model on validation as it goes. PolyStep and Adam run through
:func:`polystep.training.train`, the loop users call; the vector baselines (OpenAI-ES, SPSA,
CMA-ES) search the flat parameter vector through :func:`polystep.baselines.run_ask_tell` on the
same budget and clock.
Forward passes: one candidate (or population member, or SPSA probe) scored on one batch counts
1, and so does PolyStep's forward pass of the current weights that each step reports as its loss;
an Adam step on one batch counts 1 (its backward pass is not counted; the wall seconds show its
cost).

Each runner returns ``evaluations``, ``budget_seconds_used`` (training seconds the budget
counted), ``longest_step_seconds`` and its step count (``steps`` or ``generations``).
Every runner takes an optional :class:`~polystep.bench.partial.Partial`: the run then checkpoints
there and resumes from there (all three figures count the whole run); PolyStep and Adam through
``train()``'s checkpoints, the vector baselines through their ``state_dict()``.

Every runner takes its ``settings`` from the caller (:mod:`polystep.bench.overrides`): by
default PolyStep's preset and the baselines' :data:`polystep.baselines.NN_PRESETS`, chosen on the
digits VALIDATION split with the earlier ``tune_baselines.py`` (git history; see
``polystep.baselines.presets``), or a tuning trial's or tuned selection's (``benchmarks/tune.py``,
validation only, never test data).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from polystep.baselines import ModuleObjective, make_baseline, run_ask_tell
from polystep.bench.partial import Partial
from polystep.bench.selection import SelectionCallback, Selector
from polystep.checkpoint import CheckpointError
from polystep.data import Loaders
from polystep.deadline import StepBudget, TrainingClock
from polystep.distributed import report
from polystep.nn.homeostasis import ReviveSilentOutputs
from polystep.optimizer import PolyStepOptimizer
from polystep.training import TrainConfig, forward_passes_per_step, train

METHODS = ("polystep", "openai_es", "spsa", "cmaes", "adam")
VECTOR_PARTIAL_KEYS = frozenset({"baseline", "stream", "spent", "callbacks"})


def _train(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    loaders: Loaders,
    selection: SelectionCallback,
    max_evaluations: int,
    max_seconds: float | None,
    partial: Partial | None,
    first: list[Any] | None = None,
) -> dict[str, Any]:
    """``train()`` under the budget with the selection callback, after the callbacks ``first``
    (and, with ``partial``, its checkpoints and ledger: the ledger last, where
    :mod:`polystep.bench.partial` reads it); returns what the run spent."""
    callbacks = [*(first or []), selection] + ([] if partial is None else [partial.ledger])
    config = TrainConfig(
        epochs=None,
        max_evaluations=max_evaluations,
        max_seconds=max_seconds,
        restore_best=False,
        callbacks=callbacks,
        progress=False,
        **({} if partial is None else partial.train_settings()),
    )
    train(model, loaders.train, nn.CrossEntropyLoss(), optimizer, config)
    assert selection.spent is not None  # set when train() ends
    return selection.spent


def run_polystep(
    settings: dict[str, Any],
    model: nn.Module,
    loaders: Loaders,
    selector: Selector,
    seed: int,
    *,
    max_evaluations: int,
    max_seconds: float | None,
    partial: Partial | None = None,
) -> dict[str, Any]:
    """PolyStepOptimizer with ``settings`` (a preset's, or a tuning trial's) through ``train()``;
    with ``revive_outputs`` among them, :class:`~polystep.nn.ReviveSilentOutputs` at that share
    of the first training batch's worth of training inputs after every step."""
    settings = dict(settings)
    share = settings.pop("revive_outputs", None)
    optimizer = PolyStepOptimizer(model, preset=settings, seed=seed)
    per_step = forward_passes_per_step(optimizer)
    callback = selector.callback(model)
    first = []
    if share is not None:
        held = loaders.train.tensors[0][: loaders.train.batch_size]
        first.append(ReviveSilentOutputs(model, held.reshape(len(held), -1), share))
    spent = _train(
        model, optimizer, loaders, callback, max_evaluations, max_seconds, partial, first
    )
    return {
        **spent,
        "steps": optimizer.iteration,
        "passes_per_step": per_step,
        **report(optimizer),  # under torchrun: world size, per-rank rates, bytes a step
    }


def run_adam(
    model: nn.Module,
    twin: nn.Module,
    loaders: Loaders,
    selector: Selector,
    *,
    settings: dict[str, Any],
    max_evaluations: int,
    max_seconds: float | None,
    partial: Partial | None = None,
) -> dict[str, Any]:
    """torch.optim.Adam with ``settings`` on the smooth twin through ``train()``; the HARD model
    (the twin's weights copied in) is what is selected and scored."""
    twin.load_state_dict(model.state_dict())
    optimizer = torch.optim.Adam(twin.parameters(), **settings)
    callback = selector.callback(model, trained=twin)
    spent = _train(twin, optimizer, loaders, callback, max_evaluations, max_seconds, partial)
    model.load_state_dict(twin.state_dict())
    return {**spent, "steps": callback.steps}


def run_vector_baseline(
    name: str,
    model: nn.Module,
    loaders: Loaders,
    selector: Selector,
    seed: int,
    *,
    settings: dict[str, Any],
    max_evaluations: int,
    max_seconds: float | None,
    partial: Partial | None = None,
) -> dict[str, Any]:
    """OpenAI-ES / SPSA / CMA-ES with ``settings`` over the full flat parameter vector, one batch
    per generation. With ``partial`` the run checkpoints there after a generation (every
    ``EVERY_SECONDS``) and resumes from there: the baseline's state, the stream's position, the
    selection and what was spent, so it goes on as if never stopped; the budget is the run's
    total, as ``train()`` counts it."""
    objective = ModuleObjective(model, nn.CrossEntropyLoss(), loaders.train)
    es = make_baseline(name, objective.dim, x0=objective.x0, seed=seed, **settings)
    saved = None if partial is None else partial.load()
    before = {"evaluations": 0, "steps": 0, "seconds": 0.0, "longest_step": 0.0, "recent": []}
    if saved is not None:  # the runner has checked it is this run's, under this code
        assert partial is not None
        if not isinstance(saved, dict) or set(saved) != VECTOR_PARTIAL_KEYS:
            raise CheckpointError(f"{str(partial.path)!r} is not a partial of a vector baseline")
        es.load_state_dict(saved["baseline"])
        objective.load_state_dict(saved["stream"])
        selector.load_state_dict(saved["callbacks"][0])
        partial.ledger.load_state_dict(saved["callbacks"][1])
        before = saved["spent"]
        objective.load(es.mean, model)
    clock = TrainingClock()
    left = max_evaluations - before["evaluations"]
    seconds_left = None if max_seconds is None else max_seconds - before["seconds"]
    if seconds_left is not None and seconds_left <= 0:  # the earlier sessions spent it all
        left, seconds_left = 0, None
    budget = StepBudget(left, seconds_left, clock=clock)
    budget.recent.extend(before["recent"])

    def spent() -> dict[str, Any]:
        """What the run spent, earlier sessions included."""
        return {
            "evaluations": before["evaluations"] + budget.evaluations,
            "steps": before["steps"] + budget.steps,
            "seconds": before["seconds"] + budget.elapsed,
            "longest_step": max(before["longest_step"], budget.longest_step),
            "recent": list(budget.recent),
        }

    def observe(force: bool = False) -> None:
        now = spent()
        with clock.excluded():
            selector.observe(model, now["evaluations"], now["steps"], now["seconds"], force=force)

    def payload() -> dict[str, Any]:
        assert partial is not None
        return {
            "baseline": es.state_dict(),
            "stream": objective.state_dict(),
            "spent": spent(),
            "callbacks": [selector.state_dict(), partial.ledger.state_dict()],
        }

    def generation(record: dict[str, float]) -> None:
        objective.load(es.mean, model)
        observe()
        if partial is not None:
            with clock.excluded():
                partial.save_if_due(payload)

    if saved is None:
        observe(force=True)  # the untrained model
    run_ask_tell(es, objective, budget, callback=generation)
    observe(force=True)
    total = spent()
    return {
        "evaluations": total["evaluations"],
        "budget_seconds_used": total["seconds"],
        "longest_step_seconds": total["longest_step"],
        "generations": total["steps"],
    }
