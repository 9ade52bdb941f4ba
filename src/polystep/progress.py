"""Progress within one long step: a delayed tqdm bar, a callback, or nothing (used by
:class:`~polystep.optimizer.PolyStepOptimizer`, whose large-model steps can take seconds)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

PROGRESS_DELAY_S = 5.0  # a step's progress bar appears once the step has run this long
ProgressFn = Callable[[int, int], None]


@contextlib.contextmanager
def step_progress(
    progress: bool | ProgressFn, total: int, step: int
) -> Iterator[Callable[[int], None]]:
    """``tick(n)``: ``n`` more of a step's ``total`` candidates are scored.

    ``progress=True`` draws a tqdm bar on stderr that appears only once the step has run
    ``PROGRESS_DELAY_S`` seconds; a callable gets ``(done, total)`` after every tick; False
    reports nothing.
    """
    bar = None
    if progress is True:
        from tqdm.auto import tqdm

        bar = tqdm(
            total=total, desc=f"step {step}", unit="cand", delay=PROGRESS_DELAY_S, leave=False
        )
    done = 0

    def tick(n: int) -> None:
        nonlocal done
        done += n
        if bar is not None:
            bar.update(n)
        elif callable(progress):
            progress(done, total)

    try:
        yield tick
        if done < total:  # an evaluator that reports nothing within its call
            tick(total - done)
    finally:
        if bar is not None:
            bar.close()
