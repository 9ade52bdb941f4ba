"""The bench's wall-second rule: a step that would end past the budget is not started.

:class:`StepBudget` is a :class:`~polystep.baselines.Budget` for the NN bench, the same for every
method. Its clock is the TRAINING clock: wall seconds minus the time spent on validation (the
runner passes ``perf_counter - selector.eval_seconds``), so validation is excluded for every
method alike. Every runner calls :meth:`StepBudget.allows` once, at the start of each step (a
PolyStep step, an ES/SPSA/CMA-ES generation, an Adam step) and :meth:`StepBudget.charge` once per
step taken; the time between two ``allows`` calls is one step. The next step is estimated as the
longest of the last :data:`RECENT` steps and starts only if it would end within ``max_seconds``.
The first step has no estimate: it starts whenever time is left.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

from polystep.baselines import Budget

RECENT = 10  # steps the estimate of the next one looks back on


class StepBudget(Budget):
    """Forward passes and training seconds, with the next step's time estimated from the last."""

    def __init__(
        self, max_evals: int | None, max_seconds: float | None, *, clock: Callable[[], float]
    ) -> None:
        super().__init__(max_evals, max_seconds, clock=clock)
        self.steps = 0
        self.recent: deque[float] = deque(maxlen=RECENT)
        self.longest_step = 0.0
        self._step_began: float | None = None

    def next_step_estimate(self) -> float:
        """Seconds the next step is expected to take: the longest recent one (0 before any)."""
        return max(self.recent, default=0.0)

    def allows(self, n: int) -> bool:
        """Whether a step of ``n`` forward passes fits, in passes and in its estimated time.
        Call once per step, as it is about to start (the call also times the previous step)."""
        now = self.elapsed
        if self._step_began is not None:
            self.recent.append(now - self._step_began)
            self.longest_step = max(self.longest_step, self.recent[-1])
        self._step_began = now
        if not super().allows(n):
            return False
        return self.max_seconds is None or now + self.next_step_estimate() <= self.max_seconds

    def charge(self, n: int) -> None:
        """Record one step of ``n`` forward passes."""
        super().charge(n)
        self.steps += 1
