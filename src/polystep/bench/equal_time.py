"""The equal-wall-time protocol of the NN table: a short table for every method, then a long
one for PolyStep and the best gradient-free baseline of each short row.

Both tables run through :func:`polystep.bench.runner.run_bench` (one record per run, written as
it finishes; a rerun skips what is done under the same configuration and code), in the folders
``OUT/<short>s`` and ``OUT/<long>s``. The baseline a long row runs is chosen from the short
records by mean VALIDATION accuracy of the selected models (never test). Every run uses the same
number of torch threads, one run at a time, so every method has the cores the same way.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

from polystep.bench.methods import METHODS
from polystep.bench.report import load_runs, write_report
from polystep.bench.runner import UNBOUNDED_FWD, run_bench
from polystep.bench.tasks import TaskSpec

GRADIENT_FREE = ("openai_es", "spsa", "cmaes")
SHORT_SECONDS = 60.0
LONG_SECONDS = 300.0


def folder(out: Path, seconds: float) -> Path:
    return out / f"{seconds:g}s"


def best_gradient_free(runs: list[dict[str, Any]], task: str) -> str:
    """The gradient-free method with the best mean validation accuracy on ``task``."""
    scores = {
        method: statistics.fmean(
            r["val_acc_selected"] for r in runs if (r["task"], r["method"]) == (task, method)
        )
        for method in GRADIENT_FREE
        if any((r["task"], r["method"]) == (task, method) for r in runs)
    }
    if not scores:
        raise ValueError(f"no gradient-free records of {task} in the short table")
    return max(scores, key=lambda method: (scores[method], method))


def run_protocol(
    tasks: list[TaskSpec],
    seeds: list[int],
    *,
    out: Path,
    scale: str = "cpu",
    short: float = SHORT_SECONDS,
    long: float = LONG_SECONDS,
    tuned: Callable[[list[TaskSpec], list[str], float], dict[tuple[str, str], Any]] | None = None,
    resume: bool = False,
    device: str = "cpu",
    mnist_dir: str | None = None,
    log: Any = print,
) -> dict[str, str]:
    """Run the short table, then the long one; returns ``{task: baseline run long}``.

    ``tuned(tasks, methods, seconds)`` gives the tuned configurations at a budget (None: the
    methods' default settings)."""

    def bench(task_list: list[TaskSpec], methods: list[str], seconds: float) -> None:
        run_bench(
            task_list, methods, seeds, scale=scale, out_dir=folder(out, seconds),
            budget_fwd=UNBOUNDED_FWD, budget_seconds=seconds, device=device,
            mnist_dir=mnist_dir, resume=resume, log=log,
            overrides=None if tuned is None else tuned(task_list, methods, seconds),
        )  # fmt: skip
        write_report(folder(out, seconds))

    bench(tasks, list(METHODS), short)
    short_runs = load_runs(folder(out, short))
    chosen = {task.name: best_gradient_free(short_runs, task.name) for task in tasks}
    for task in tasks:
        log(f"{task.name}: long table runs polystep and {chosen[task.name]}")
        bench([task], ["polystep", chosen[task.name]], long)
    return chosen


def estimate_seconds(
    tasks: int, seeds: int, *, short: float, long: float, overhead: float, methods: int = 5
) -> float:
    """Wall seconds of the whole protocol: every run's budget plus ``overhead`` seconds
    (data, validation, test, the last step's overrun) per run."""
    return tasks * seeds * (methods * (short + overhead) + 2 * (long + overhead))
