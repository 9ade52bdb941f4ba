"""Tune PolyStepOptimizer's presets on digits, selecting on validation only.

Every configuration is a preset (``polystep.optimizer.PRESETS`` entries) with some keys replaced;
it trains the smoke-scale model of each task (digits, hidden 32, split seed 0, init seed 0) for
``--budget`` forward passes and is scored by its best validation accuracy (checked 20 times). The
test split is never read. The reported bench seeds (42, 123, 456) are never used here.

    .venv/bin/python benchmarks/tune_presets.py --tasks mlp_mnist,staircase_mnist \
        --grid radii --out benchmarks/results/preset_tuning.json
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch

from polystep.bench.methods import run_polystep
from polystep.bench.runner import machine_info
from polystep.bench.selection import Selector
from polystep.bench.tasks import TASKS, load_task_data
from polystep.data import make_loaders
from polystep.optimizer import PRESETS

TUNE_SEED = 0


def _grid(**axes: list[Any]) -> list[dict[str, Any]]:
    keys = list(axes)
    return [dict(zip(keys, values, strict=True)) for values in itertools.product(*axes.values())]


GRIDS: dict[str, list[dict[str, Any]]] = {
    # Which space and how many coordinates per step (radii of the snn preset, scaled).
    "space": _grid(
        subspace=["factored", "hybrid"],
        rank=[1, 2, 4, 8],
        direct_max=[0, 1024],
    ),
    "radii": _grid(
        step_radius=[0.03, 0.1, 0.3],
        probe_radius=[0.1, 0.3, 1.0],
        epsilon=[0.03, 0.1],
    ),
    "wide": _grid(probe_radius=[1.0, 2.0, 4.0], step_radius=[0.1, 0.2], rank=[2, 4, 8]),
    "big": _grid(step_radius=[0.3, 0.5, 1.0], probe_radius=[1.0, 2.0]),
    "confirm": _grid(step_radius=[0.3], probe_radius=[2.0]),
    "rank": _grid(rank=[1, 2, 4]),
    "scaling": _grid(scale_cost=["row", "mean"], epsilon=[0.03, 0.3]),
    "redraw": _grid(redraw_every=[1, 5, 20], scale_cost=["mean", "row"]),
}


def run_config(
    task_name: str, base: str, overrides: dict[str, Any], budget_fwd: int, scale: str = "smoke"
) -> dict:
    """Best validation accuracy of PolyStep with ``PRESETS[base] | overrides`` on one task."""
    task = dataclasses.replace(TASKS[task_name], preset="_tuning")
    splits = load_task_data(task, scale, TUNE_SEED)
    torch.manual_seed(TUNE_SEED)
    model = task.model(splits.num_features, splits.num_classes, scale)
    loaders = make_loaders(splits, task.scales[scale].batch_size, seed=TUNE_SEED, fast=True)
    selector = Selector(loaders.val, eval_every=max(1, budget_fwd // 20))
    started = time.perf_counter()
    PRESETS["_tuning"] = {**PRESETS[base], **overrides}
    try:
        result = run_polystep(
            task, model, loaders, selector, TUNE_SEED, max_evaluations=budget_fwd, max_seconds=None
        )
    finally:
        del PRESETS["_tuning"]
    return {
        "task": task_name,
        "scale": scale,
        "base": base,
        "overrides": overrides,
        "budget": budget_fwd,
        **result,
        "best_val_acc": selector.best_val,
        "last_val_acc": selector.curve[-1]["val_acc"],
        "seconds": time.perf_counter() - started,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tasks", default="mlp_mnist")
    parser.add_argument("--base", default="snn", choices=sorted(PRESETS))
    parser.add_argument("--grid", default="space", choices=sorted(GRIDS))
    parser.add_argument("--fixed", default="{}", help="JSON overrides applied to every config")
    parser.add_argument("--budget", type=int, default=40_000)
    parser.add_argument("--scale", default="smoke", choices=("smoke", "cpu"))
    parser.add_argument("--out", default="benchmarks/results/preset_tuning.json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    fixed = json.loads(args.fixed)
    out = Path(args.out)
    runs = json.loads(out.read_text())["runs"] if out.exists() else []
    for task_name in args.tasks.split(","):
        for config in GRIDS[args.grid]:
            overrides = {**fixed, **config}
            r = run_config(task_name, args.base, overrides, args.budget, args.scale)
            print(
                f"{task_name:16s} {args.base:9s} {json.dumps(overrides):90s} "
                f"val {r['best_val_acc']:.3f} (last {r['last_val_acc']:.3f}) "
                f"{r['steps']} steps x {r['passes_per_step']} {r['seconds']:.1f}s",
                flush=True,
            )
            runs.append(r)
            meta = {
                "machine": machine_info(),
                "protocol": "split/init seed 0, best validation accuracy (never test)",
                "command": " ".join(sys.argv),
            }
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps({"meta": meta, "runs": runs}, indent=1))


if __name__ == "__main__":
    main()
