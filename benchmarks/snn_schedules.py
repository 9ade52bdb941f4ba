"""Does decaying the step radius (and epsilon) over a run help the hard-LIF SNN? (issue 10)

Runs ``snn_mnist`` at ``--scale full`` (all of MNIST, batch 512) with PolyStep under the bench's
own protocol (:func:`polystep.bench.runner.train_one`), in one of three arms:

- ``preset``: the ``snn`` preset as it is (constant epsilon and radii);
- ``decay_both``: step radius cosine-decayed from the preset's value to ``--step-target`` and
  epsilon from the preset's value to ``--eps-target``, each over the run's own steps;
- ``decay_step``: only the step radius decayed.

The probe radius stays constant in every arm. The run's step count is its budget divided by the
forward passes one step costs (as ``train()`` counts them), rounded down. The bench takes its
settings as JSON floats, so the schedules are put onto the optimizer the bench builds (the one
module attribute :func:`scheduled` swaps, for this process only). Scored on validation only: the
test split is never read. One JSON line per run is appended to ``--log`` (arm, schedules,
settings, seed, budget, code, load); a rerun skips what the log already holds for the current
code.
``--summary`` writes the markdown table of the log instead of running.

    .venv/bin/python benchmarks/snn_schedules.py --arm decay_both --seed 1 \
        --budget-fwd 3000000 --mnist-dir ../shared/data/mnist \
        --log benchmarks/results/tuning/snn_schedules.jsonl
"""

from __future__ import annotations

import json
import os
import statistics
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from polystep.bench import methods
from polystep.bench.codeversion import code_version
from polystep.bench.runner import machine_info, train_one
from polystep.bench.tasks import TASKS, load_task_data
from polystep.cliargs import existing_dir, parser, positive_float, positive_int
from polystep.optimizer import PolyStepOptimizer
from polystep.schedules import Constant, Cosine, Schedule
from polystep.training import forward_passes_per_step

ARMS = ("preset", "decay_both", "decay_step")
TASK = "snn_mnist"
SCALE = "full"


def arm_schedules(
    arm: str, settings: dict[str, Any], total_steps: int, step_target: float, eps_target: float
) -> dict[str, Schedule]:
    """The step-radius and epsilon schedules of ``arm`` over ``total_steps`` steps, starting at
    the preset's constant values."""
    if arm not in ARMS:
        raise ValueError(f"arm must be one of {ARMS}, got {arm!r}")
    step = Constant(value=settings["step_radius"])
    eps = Constant(value=settings["epsilon"])
    if arm != "preset":
        step = Cosine(init=settings["step_radius"], target=step_target, total_steps=total_steps)
    if arm == "decay_both":
        eps = Cosine(init=settings["epsilon"], target=eps_target, total_steps=total_steps)
    return {"step_radius": step, "epsilon": eps}


def run_steps(budget_fwd: int, passes_per_step: int) -> int:
    """Steps a run of ``budget_fwd`` forward passes takes (``train()`` starts no step that would
    cross the budget)."""
    return max(1, budget_fwd // passes_per_step)


@contextmanager
def scheduled(
    make: Callable[[PolyStepOptimizer], dict[str, Schedule]],
) -> Iterator[dict[str, Any]]:
    """While open, every optimizer the bench builds gets the schedules ``make(optimizer)``
    returns; yields a dict that holds them (as state dicts) once built."""
    built: dict[str, Any] = {}
    original = methods.PolyStepOptimizer

    def build(*args: Any, **kwargs: Any) -> PolyStepOptimizer:
        optimizer = original(*args, **kwargs)
        schedules = make(optimizer)
        optimizer.rule = replace(optimizer.rule, **schedules)
        built.update({key: value.state_dict() for key, value in schedules.items()})
        return optimizer

    methods.PolyStepOptimizer = build  # type: ignore[assignment,misc]
    try:
        yield built
    finally:
        methods.PolyStepOptimizer = original  # type: ignore[misc]


def run(args: Any) -> dict[str, Any]:
    """Train one arm on one seed; return its log line (validation figures only)."""
    task = TASKS[TASK]
    splits = load_task_data(task, SCALE, args.seed, mnist_dir=args.mnist_dir)

    def make(optimizer: PolyStepOptimizer) -> dict[str, Schedule]:
        steps = run_steps(args.budget_fwd, forward_passes_per_step(optimizer))
        return arm_schedules(args.arm, optimizer.settings, steps, args.step_target, args.eps_target)

    load_before = os.getloadavg()[0]
    with scheduled(make) as schedules:
        trained = train_one(
            task, "polystep", args.seed, splits, scale=SCALE, budget_fwd=args.budget_fwd,
            budget_seconds=None, device="cpu",
        )  # fmt: skip
    curve = trained.selector.curve
    return {
        "arm": args.arm,
        "task": TASK,
        "scale": SCALE,
        "seed": args.seed,
        "budget_fwd": args.budget_fwd,
        "schedules": schedules,
        "settings": trained.config["settings"],
        "batch_size": trained.config["batch_size"],
        "threads": trained.config["threads"],
        "splits": splits.sizes(),
        "steps": trained.extra["steps"],
        "evaluations": trained.extra["evaluations"],
        "val_acc_best": trained.selector.best_val,
        "val_acc_last": curve[-1]["val_acc"],
        "selected_step": trained.selector.best_step,
        "curve": [{"step": p["step"], "val_acc": p["val_acc"]} for p in curve],
        "wall_seconds": trained.seconds,
        "load_before": load_before,
        "load_after": os.getloadavg()[0],
        "code": code_version(),
        "machine": machine_info(),
    }


def load_log(path: Path) -> list[dict[str, Any]]:
    """The complete lines of the log (none when it does not exist)."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _mean_sd(values: list[float]) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else float("nan")
    return f"{100 * statistics.mean(values):.2f} ± {100 * sd:.2f}"


def summary(lines: list[dict[str, Any]]) -> str:
    """Markdown: one row per run, then per (budget, arm) mean ± sd and the paired differences
    to the preset arm on the seeds both ran (validation accuracy, %)."""
    out = [
        "Validation accuracy of `snn_mnist` at scale full (generated by "
        "`benchmarks/snn_schedules.py --summary` from its log; load: 1-min load average before "
        "→ after the run, on the shared 2-core VM; s: wall seconds).",
        "",
        "| budget | arm | seed | val best % | val last % | selected step | steps | load | s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    key = lambda r: (r["budget_fwd"], ARMS.index(r["arm"]), r["seed"])  # noqa: E731
    for r in sorted(lines, key=key):
        load = f"{r['load_before']:.1f}→{r['load_after']:.1f}"
        out.append(
            f"| {r['budget_fwd']:,} | {r['arm']} | {r['seed']} | {100 * r['val_acc_best']:.2f} "
            f"| {100 * r['val_acc_last']:.2f} | {r['selected_step']} | {r['steps']} | {load} "
            f"| {r['wall_seconds']:.0f} |"
        )
    out += [
        "",
        "| budget | arm | seeds | val best % | val last % | paired Δ best vs preset | "
        "paired Δ last vs preset |",
        "|---|---|---|---|---|---|---|",
    ]
    by = {(r["budget_fwd"], r["arm"], r["seed"]): r for r in lines}
    for budget, arm in sorted({(b, a) for b, a, _ in by}, key=lambda k: (k[0], ARMS.index(k[1]))):
        runs = [r for (b, a, _), r in sorted(by.items()) if (b, a) == (budget, arm)]
        cells = [_mean_sd([r[m] for r in runs]) for m in ("val_acc_best", "val_acc_last")]
        deltas = []
        for metric in ("val_acc_best", "val_acc_last"):
            diffs = [
                r[metric] - by[(budget, "preset", r["seed"])][metric]
                for r in runs
                if arm != "preset" and (budget, "preset", r["seed"]) in by
            ]
            shown = ", ".join(f"{100 * d:+.2f}" for d in diffs)
            deltas.append(f"{shown} (mean {100 * statistics.mean(diffs):+.2f})" if diffs else "")
        seeds = ",".join(str(r["seed"]) for r in runs)
        out.append(
            f"| {budget:,} | {arm} | {seeds} | {cells[0]} | {cells[1]} | "
            + " | ".join(deltas)
            + " |"
        )
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = parser("benchmarks/snn_schedules.py", __doc__)
    ap.add_argument("--arm", choices=ARMS, default="preset", help="which schedule arm")
    ap.add_argument("--seed", type=int, default=1, help="split and init seed")
    ap.add_argument("--budget-fwd", type=positive_int, default=3_000_000, help="forward passes")
    ap.add_argument("--step-target", type=positive_float, default=0.05, help="final step radius")
    ap.add_argument("--eps-target", type=positive_float, default=0.01, help="final epsilon")
    ap.add_argument("--threads", type=positive_int, default=1, help="torch CPU threads")
    ap.add_argument("--mnist-dir", type=existing_dir, default=None, help="MNIST IDX folder")
    ap.add_argument("--log", type=Path, required=True, help="JSON lines, appended")
    ap.add_argument("--summary", type=Path, default=None, help="write the markdown summary here")
    args = ap.parse_args(argv)
    if args.summary is not None:
        args.summary.write_text(summary(load_log(args.log)))
        return 0
    torch.set_num_threads(args.threads)
    done = [
        r
        for r in load_log(args.log)
        if (r["arm"], r["seed"], r["budget_fwd"]) == (args.arm, args.seed, args.budget_fwd)
        and r["code"] == code_version()
    ]
    if done:
        print(f"already in {args.log}: {args.arm} seed {args.seed}", file=sys.stderr)
        return 0
    line = run(args)
    args.log.parent.mkdir(parents=True, exist_ok=True)
    with args.log.open("a") as f:
        f.write(json.dumps(line) + "\n")
    print(json.dumps({k: v for k, v in line.items() if k not in ("curve", "machine")}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
