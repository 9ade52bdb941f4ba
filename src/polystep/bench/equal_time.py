"""The equal-wall-time protocol of the NN table: a short table for every method, then a long
one for PolyStep and the best gradient-free baseline of each short row.

Both tables run through :func:`polystep.bench.runner.run_bench` (one record per run, written as
it finishes; a rerun skips what is done under the same configuration and code), in the folders
``OUT/<short>s`` and ``OUT/<long>s``. The baseline a long row runs is chosen from the short
records by mean VALIDATION accuracy of the selected models (never test). Every run uses the same
number of torch threads, one run at a time, so every method has the cores the same way.

With a tuning log, each table is preceded by the tuning protocol of :mod:`polystep.bench.tuning`
at that table's budget, for the methods the table runs (the long table's tuning therefore waits
for the short table's choice of baseline), and the table runs the selections. Tuning and tables
are both resumable, so one command runs the whole protocol across interruptions.
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

from polystep.bench.methods import METHODS
from polystep.bench.report import load_runs, write_report
from polystep.bench.runner import UNBOUNDED_FWD, run_bench
from polystep.bench.tasks import TaskSpec
from polystep.bench.tuning import K, tune, tuned_overrides
from polystep.distributed import is_writer

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
    tune_log: Path | None = None,
    k: int = K,
    resume: bool = False,
    device: str = "cpu",
    mnist_dir: str | None = None,
    log: Any = print,
) -> dict[str, str]:
    """Run the short table, then the long one; returns ``{task: baseline run long}``.

    With ``tune_log``, ``k`` configurations per (task, method) are tuned at each table's budget
    first and the table runs the selections; without, every method runs its default settings."""

    def bench(task_list: list[TaskSpec], methods: list[str], seconds: float) -> None:
        overrides = None
        if tune_log is not None:
            budget = {"budget_fwd": UNBOUNDED_FWD, "budget_seconds": seconds}
            tune(
                task_list, methods, scale=scale, log_path=tune_log, k=k, device=device,
                mnist_dir=mnist_dir, log=log, **budget,
            )  # fmt: skip
            overrides = tuned_overrides(tune_log, task_list, methods, scale=scale, k=k, **budget)
        run_bench(
            task_list, methods, seeds, scale=scale, out_dir=folder(out, seconds),
            budget_fwd=UNBOUNDED_FWD, budget_seconds=seconds, device=device,
            mnist_dir=mnist_dir, resume=resume, log=log, overrides=overrides,
        )  # fmt: skip
        if is_writer():  # under torchrun: rank 0 writes the report
            write_report(folder(out, seconds))

    bench(tasks, list(METHODS), short)
    short_runs = load_runs(folder(out, short))
    chosen = {task.name: best_gradient_free(short_runs, task.name) for task in tasks}
    for task in tasks:
        log(f"{task.name}: long table runs polystep and {chosen[task.name]}")
        bench([task], ["polystep", chosen[task.name]], long)
    return chosen


def estimate_seconds(
    tasks: int,
    runs_per_cell: int,
    *,
    short: float,
    long: float,
    overhead: float,
    methods: int = len(METHODS),
) -> float:
    """Wall seconds of the whole protocol: ``runs_per_cell`` runs per (task, method) of each
    table (the seeds, plus k times the tuning seeds when tuning), each its budget plus
    ``overhead`` seconds (data, validation, test scoring)."""
    return tasks * runs_per_cell * (methods * (short + overhead) + 2 * (long + overhead))
