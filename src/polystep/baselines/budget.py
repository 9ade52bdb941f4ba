"""Evaluation budgets shared by every baseline (and PolyStep runs compared against them).

A :class:`Budget` counts forward passes (one candidate evaluated on one batch = 1) and/or wall
seconds. Forward-pass accounting is exact: :meth:`Budget.charge` refuses to go over the limit, so a
method driven through :class:`CountedObjective` can never exceed it. The wall-clock limit is checked
between evaluations (a batch that starts before the deadline is allowed to finish).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

Objective = Callable[[torch.Tensor], torch.Tensor]


class BudgetExceeded(RuntimeError):
    """Raised when an evaluation would spend more than the remaining forward-pass budget."""


class Budget:
    """Forward-pass and/or wall-second limit with exact accounting.

    Args:
        max_evals: forward passes allowed (None: unlimited).
        max_seconds: wall seconds allowed, measured from the first :meth:`start` / :meth:`charge`
            (None: unlimited).
        clock: time source (``time.perf_counter``; injectable for tests).

    At least one limit must be given.
    """

    def __init__(
        self,
        max_evals: int | None = None,
        max_seconds: float | None = None,
        *,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        if max_evals is None and max_seconds is None:
            raise ValueError("Budget needs max_evals and/or max_seconds, got neither")
        if max_evals is not None and (
            isinstance(max_evals, bool) or not isinstance(max_evals, int) or max_evals < 1
        ):
            raise ValueError(f"max_evals must be None or a positive int, got {max_evals!r}")
        if max_seconds is not None and (
            isinstance(max_seconds, bool)
            or not isinstance(max_seconds, int | float)
            or not max_seconds > 0
        ):
            raise ValueError(f"max_seconds must be None or a positive number, got {max_seconds!r}")
        self.max_evals = max_evals
        self.max_seconds = None if max_seconds is None else float(max_seconds)
        self.clock = clock
        self.evaluations = 0
        self._t0: float | None = None

    def start(self) -> Budget:
        """Start the wall clock (idempotent); returns self."""
        if self._t0 is None:
            self._t0 = self.clock()
        return self

    @property
    def elapsed(self) -> float:
        """Wall seconds since :meth:`start` (0 before)."""
        return 0.0 if self._t0 is None else self.clock() - self._t0

    @property
    def remaining_evals(self) -> float:
        """Forward passes left (``math.inf`` without a forward-pass limit)."""
        return math.inf if self.max_evals is None else self.max_evals - self.evaluations

    def time_up(self) -> bool:
        """True once the wall-clock limit is reached."""
        return self.max_seconds is not None and self.elapsed >= self.max_seconds

    def allows(self, n: int) -> bool:
        """Whether ``n`` more forward passes fit (and time is not up)."""
        return n <= self.remaining_evals and not self.time_up()

    def exhausted(self) -> bool:
        """True when not even one more forward pass is allowed."""
        return not self.allows(1)

    def charge(self, n: int) -> None:
        """Record ``n`` forward passes; raises :class:`BudgetExceeded` when they do not fit."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ValueError(f"n must be a non-negative int, got {n!r}")
        self.start()
        if n > self.remaining_evals:
            raise BudgetExceeded(
                f"{n} evaluations requested, {self.remaining_evals} left of {self.max_evals}"
            )
        self.evaluations += n

    def state_dict(self) -> dict[str, Any]:
        return {
            "max_evals": self.max_evals,
            "max_seconds": self.max_seconds,
            "evaluations": self.evaluations,
            "elapsed": self.elapsed,
        }

    def __repr__(self) -> str:
        return (
            f"Budget(evaluations={self.evaluations}/{self.max_evals}, "
            f"elapsed={self.elapsed:.2f}/{self.max_seconds})"
        )


class CountedObjective:
    """Wrap a batched objective ``f(X (N, D)) -> (N,)`` so that every row is charged to a budget.

    Also tracks the best row seen (``best_x``, ``best_fitness``), so a method's result is the best
    point it actually evaluated.
    """

    def __init__(self, fn: Objective, budget: Budget) -> None:
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
    budget: Budget,
    *,
    callback: Callable[[dict[str, float]], None] | None = None,
) -> BaselineResult:
    """Drive an ask/tell optimizer (``ask() -> (N, D)``, ``tell((N,))``) until the budget ends.

    A generation runs only when all its ``N`` evaluations fit, so the forward-pass limit is never
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
        budget: Budget,
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
