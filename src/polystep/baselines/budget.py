"""Budgeted ask/tell runs of the vector baselines.

The budget is the one of :func:`polystep.training.train` and the bench,
:class:`~polystep.deadline.StepBudget` (:class:`Budget` is it under the earlier argument names):
forward passes (one candidate evaluated on one batch = 1) and/or seconds. Forward-pass accounting
is exact: ``charge`` refuses to go over the limit, so a method driven through
:class:`CountedObjective` can never exceed it; a generation starts only if its evaluations fit and
its estimated time (the longest of the last few generations) would end within the seconds.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from polystep.deadline import BudgetExceeded as BudgetExceeded  # re-exported
from polystep.deadline import StepBudget
from polystep.validation import check_positive_int

Objective = Callable[[torch.Tensor], torch.Tensor]


class Budget(StepBudget):
    """The one budget, :class:`~polystep.deadline.StepBudget`, under the baselines' earlier
    argument name ``max_evals`` (also readable as ``max_evals`` / ``remaining_evals``). Here at
    least one limit must be given, and a forward-pass limit is at least 1."""

    def __init__(
        self,
        max_evals: int | None = None,
        max_seconds: float | None = None,
        *,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        if max_evals is None and max_seconds is None:
            raise ValueError("Budget needs max_evals and/or max_seconds, got neither")
        check_positive_int("max_evals", max_evals, allow_none=True)
        super().__init__(max_evals, max_seconds, clock=clock)

    max_evals = property(lambda self: self.max_evaluations)
    remaining_evals = property(lambda self: self.remaining_evaluations)


class CountedObjective:
    """Wrap a batched objective ``f(X (N, D)) -> (N,)`` so that every row is charged to a budget.

    Also tracks the best row seen (``best_x``, ``best_fitness``), so a method's result is the best
    point it actually evaluated.
    """

    def __init__(self, fn: Objective, budget: StepBudget) -> None:
        if not callable(fn):
            raise ValueError("fn must be callable: (N, D) -> (N,)")
        self.fn = fn
        self.budget = budget
        self.best_x: torch.Tensor | None = None
        self.best_fitness = math.inf

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 2:
            raise ValueError(f"x must be (N, D), got shape {tuple(x.shape)}")
        self.budget.charge(int(x.shape[0]))
        values = torch.as_tensor(self.fn(x)).reshape(-1)
        if values.shape[0] != x.shape[0]:
            raise ValueError(f"objective returned {values.shape[0]} values for {x.shape[0]} rows")
        clean = torch.nan_to_num(values.detach().double(), nan=math.inf)
        i = int(torch.argmin(clean))
        if float(clean[i]) < self.best_fitness:
            self.best_fitness = float(clean[i])
            self.best_x = x[i].detach().clone()
        return values


@dataclass
class BaselineResult:
    """Outcome of a budgeted run: best evaluated point, its value, and what was spent."""

    x: torch.Tensor
    fitness: float
    evaluations: int
    seconds: float
    history: list[dict[str, float]] = field(default_factory=list)


def run_ask_tell(
    optimizer: Any,
    objective: Objective,
    budget: StepBudget,
    *,
    callback: Callable[[dict[str, float]], None] | None = None,
) -> BaselineResult:
    """Drive an ask/tell optimizer (``ask() -> (N, D)``, ``tell((N,))``) until the budget ends.

    A generation runs only when all its ``N`` evaluations fit and its estimated time would end
    within the budget's seconds (:meth:`~polystep.deadline.StepBudget.allows`), so no limit is
    exceeded. ``callback`` receives one history record per generation.
    """
    counted = CountedObjective(objective, budget)
    budget.start()
    history: list[dict[str, float]] = []
    while True:
        x = optimizer.ask()
        if not budget.allows(int(x.shape[0])):
            break
        optimizer.tell(counted(x))
        record = {
            "evaluations": float(budget.evaluations),
            "seconds": budget.elapsed,
            "best_fitness": counted.best_fitness,
        }
        history.append(record)
        if callback is not None:
            callback(record)
    best_x = counted.best_x
    if best_x is None:
        best_x = optimizer.mean.detach().clone()
    return BaselineResult(
        x=best_x,
        fitness=counted.best_fitness,
        evaluations=budget.evaluations,
        seconds=budget.elapsed,
        history=history,
    )


class AskTellRunner:
    """Mixin: ``run(objective, budget)`` for any ask/tell optimizer (see :func:`run_ask_tell`)."""

    def run(
        self,
        objective: Objective,
        budget: StepBudget,
        *,
        callback: Callable[[dict[str, float]], None] | None = None,
    ) -> BaselineResult:
        """Ask/tell until ``budget`` ends; returns the best evaluated point."""
        return run_ask_tell(self, objective, budget, callback=callback)


def start_vector(
    x0: torch.Tensor | None,
    dim: int,
    dtype: torch.dtype,
    device: torch.device | str | None,
) -> tuple[torch.Tensor, torch.device]:
    """Start ``(dim,)`` (zeros when ``x0`` is None) on ``device`` (default: ``x0``'s, else CPU)."""
    if device is None:
        device = x0.device if isinstance(x0, torch.Tensor) else torch.device("cpu")
    device = torch.device(device)
    if x0 is None:
        return torch.zeros(dim, dtype=dtype, device=device), device
    start = torch.as_tensor(x0).detach().to(device=device, dtype=dtype).clone()
    if start.shape != (dim,):
        raise ValueError(f"x0 must have shape ({dim},), got {tuple(start.shape)}")
    return start, device
