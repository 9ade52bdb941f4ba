"""The one evaluation budget (forward passes, and seconds with a step-sized deadline) of
:func:`polystep.training.train`, the bench and the vector baselines.

:class:`TrainingClock` reads wall seconds minus the time spent inside its :meth:`excluded`
blocks: :func:`polystep.training.train` excludes validation, callbacks and checkpoint writes, so
the seconds a budget counts are seconds of training. :class:`StepBudget` holds the two limits.
Call :meth:`StepBudget.allows` once, as each step is about to start (the call also times the
previous step), and :meth:`StepBudget.charge` once per step taken. The next step is estimated as
the longest of the last :data:`RECENT` steps and starts only if it would end within
``max_seconds``; the first step has no estimate and starts whenever time is left. A step starts
only if its forward passes fit in what is left of ``max_evaluations``, so that count is never
exceeded.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

from polystep.validation import check_int

RECENT = 10  # steps the estimate of the next one looks back on


class BudgetExceeded(RuntimeError, ValueError):
    """A charge of more forward passes than the budget has left."""


class TrainingClock:
    """Wall seconds (``time.perf_counter``) minus the seconds spent in :meth:`excluded` blocks."""

    def __init__(self) -> None:
        self.excluded_seconds = 0.0

    def __call__(self) -> float:
        return time.perf_counter() - self.excluded_seconds

    @contextlib.contextmanager
    def excluded(self) -> Iterator[None]:
        """Time spent in this block is not training time."""
        began = time.perf_counter()
        try:
            yield
        finally:
            self.excluded_seconds += time.perf_counter() - began


class StepBudget:
    """Forward passes and training seconds, with the next step's time estimated from the last.

    Args:
        max_evaluations: forward passes allowed (None: no limit; 0: no step at all).
        max_seconds: training seconds allowed from :meth:`start` (None: no limit).
        clock: the time source, e.g. a :class:`TrainingClock` (default ``time.perf_counter``).
    """

    def __init__(
        self,
        max_evaluations: int | None,
        max_seconds: float | None,
        *,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        check_int("max_evaluations", max_evaluations, minimum=0, allow_none=True)
        if max_seconds is not None and (
            isinstance(max_seconds, bool)
            or not isinstance(max_seconds, int | float)
            or not max_seconds > 0
        ):
            raise ValueError(f"max_seconds must be None or a number > 0, got {max_seconds!r}")
        self.max_evaluations = max_evaluations
        self.max_seconds = None if max_seconds is None else float(max_seconds)
        self.clock = clock
        self.evaluations = 0
        self.steps = 0
        self.recent: deque[float] = deque(maxlen=RECENT)
        self.longest_step = 0.0
        self._t0: float | None = None
        self._step_began: float | None = None

    def start(self) -> StepBudget:
        """Start the clock (idempotent); returns self."""
        if self._t0 is None:
            self._t0 = self.clock()
        return self

    @property
    def elapsed(self) -> float:
        """Seconds since :meth:`start` (0 before)."""
        return 0.0 if self._t0 is None else self.clock() - self._t0

    @property
    def remaining_evaluations(self) -> float:
        """Forward passes left (``math.inf`` without a limit)."""
        if self.max_evaluations is None:
            return math.inf
        return self.max_evaluations - self.evaluations

    def time_up(self) -> bool:
        """True once ``max_seconds`` have passed."""
        return self.max_seconds is not None and self.elapsed >= self.max_seconds

    def exhausted(self) -> bool:
        """True when not even one more forward pass is allowed (no step is timed)."""
        return self.remaining_evaluations < 1 or self.time_up()

    def next_step_estimate(self) -> float:
        """Seconds the next step is expected to take: the longest recent one (0 before any)."""
        return max(self.recent, default=0.0)

    def allows(self, n: int) -> bool:
        """Whether a step of ``n`` forward passes fits, in passes and in its estimated time.
        Call once per step, as it is about to start (the call also times the previous step)."""
        self.start()
        now = self.elapsed
        if self._step_began is not None:
            self.recent.append(now - self._step_began)
            self.longest_step = max(self.longest_step, self.recent[-1])
        self._step_began = now
        if n > self.remaining_evaluations:
            return False
        if self.max_seconds is None:
            return True
        return now < self.max_seconds and now + self.next_step_estimate() <= self.max_seconds

    def charge(self, n: int) -> None:
        """Record one step of ``n`` forward passes (:meth:`charge_passes`, then the step)."""
        self.charge_passes(n)
        self.steps += 1

    def charge_passes(self, n: int) -> None:
        """Record ``n`` forward passes spent outside a step (e.g. a callback's), starting the
        clock; raises :class:`BudgetExceeded` when they do not fit."""
        check_int("n", n, minimum=0)
        self.start()
        if n > self.remaining_evaluations:
            raise BudgetExceeded(
                f"{n} forward passes do not fit: {self.remaining_evaluations} left "
                f"of max_evaluations={self.max_evaluations}"
            )
        self.evaluations += n

    def state_dict(self) -> dict[str, Any]:
        """The limits and what has been spent (a record, not a resumable clock)."""
        return {
            "max_evaluations": self.max_evaluations,
            "max_seconds": self.max_seconds,
            "evaluations": self.evaluations,
            "elapsed": self.elapsed,
        }

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(evaluations={self.evaluations}/{self.max_evaluations}, "
            f"elapsed={self.elapsed:.2f}/{self.max_seconds})"
        )
