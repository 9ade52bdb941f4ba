"""Run (task, method, seed) combinations under one protocol and write one JSON file per run.

Protocol (printed with every bench): a seeded 10 % validation split is carved from train; the
model is selected on validation only; the test split is scored once, after training, for the
selected and the last weights. Every method gets the same forward-pass budget (and optional wall
limit) and the same seeded batch stream. A finished run's JSON is never recomputed, so an
interrupted bench resumes where it stopped; a run file written under another configuration
(budget, scale, preset, ...) is never reported as done: the bench refuses to start.
"""

from __future__ import annotations

import copy
import json
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from polystep import __version__
from polystep.baselines import NN_PRESETS
from polystep.bench import methods
from polystep.bench.codeversion import code_version
from polystep.bench.deadline import StepBudget
from polystep.bench.outdir import config_mismatch, refuse_stale
from polystep.bench.selection import Selector
from polystep.bench.tasks import TaskSpec, data_label, load_task_data
from polystep.data import Splits, make_loaders
from polystep.distributed import is_writer, world_size

PROTOCOL = (
    "protocol: seeded 10% validation split carved from train; model selected on validation "
    "only; test scored once after training (selected and last weights); every method gets the "
    "same budget (forward passes, and wall seconds when --budget-seconds is given: then it stops "
    "at whichever comes first) and the same batch stream; wall seconds count training only "
    "(validation excluded for every method), and a step whose estimated time (the longest of the "
    "last 10 steps) would end past the budget is not started; mean +- std over seeds"
)
EVAL_POINTS = 20


def run_path(out_dir: Path, task: str, method: str, seed: int) -> Path:
    return out_dir / f"{task}__{method}__seed{seed}.json"


def machine_info() -> dict[str, Any]:
    """Where a figure was measured: platform, processor, torch version and CPU threads."""
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "world_size": world_size(),
    }


def write_json_atomic(path: Path, payload: dict[str, Any]) -> None:
    """Write to a temp file in the same folder, then rename: never a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(payload, fh, indent=1)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def run_config(
    task: TaskSpec,
    method: str,
    *,
    scale: str,
    budget_fwd: int,
    budget_seconds: float | None,
    device: str,
) -> dict[str, Any]:
    """The settings that define a run (stored in its JSON; a stored run counts as done only when
    these are equal). JSON-normalised, so it compares equal to what was read back."""
    spec = task.scales[scale]
    config = {
        "scale": scale,
        "data": data_label(task, scale),
        "budget_fwd": budget_fwd,
        "budget_seconds": budget_seconds,
        "batch_size": spec.batch_size,
        "hidden": spec.hidden,
        "train_limit": spec.train_limit,
        "preset": task.preset if method == "polystep" else None,
        "baseline_settings": NN_PRESETS.get(method),
        "device": device,
    }
    return json.loads(json.dumps(config))


def run_one(
    task: TaskSpec,
    method: str,
    seed: int,
    splits: Splits,
    *,
    scale: str,
    budget_fwd: int,
    budget_seconds: float | None,
    device: str,
) -> dict[str, Any]:
    """One training run; returns the JSON payload (config, versions, machine, figures, curve)."""
    if method not in methods.METHODS:
        raise ValueError(f"method must be one of {methods.METHODS}, got {method!r}")
    spec = task.scales[scale]
    config = run_config(
        task, method, scale=scale, budget_fwd=budget_fwd, budget_seconds=budget_seconds,
        device=device,
    )  # fmt: skip
    torch.manual_seed(seed)
    model = task.model(splits.num_features, splits.num_classes, scale).to(device)
    loaders = make_loaders(splits.to(device), spec.batch_size, seed=seed, fast=True)
    selector = Selector(
        loaders.val,
        eval_every=max(1, budget_fwd // EVAL_POINTS),
        eval_every_seconds=None if budget_seconds is None else budget_seconds / EVAL_POINTS,
    )
    budget = StepBudget(
        budget_fwd, budget_seconds, clock=lambda: time.perf_counter() - selector.eval_seconds
    )
    started = time.perf_counter()
    if method == "polystep":
        extra = methods.run_polystep(task, model, loaders, budget, selector, seed)
    elif method == "adam":
        twin = (
            task.model(splits.num_features, splits.num_classes, scale, surrogate=True)
            if task.has_twin
            else copy.deepcopy(model)
        ).to(device)
        extra = methods.run_adam(model, twin, loaders, budget, selector)
    else:
        extra = methods.run_vector_baseline(method, model, loaders, budget, selector, seed)
    selector.observe(model, budget.evaluations, budget.steps, force=True)
    seconds, budget_used = time.perf_counter() - started, budget.elapsed
    figures = selector.finish(model, loaders.test)
    return {
        "task": task.name,
        "method": method,
        "seed": seed,
        "scale": scale,
        "data": data_label(task, scale),
        "config": {**config, "splits": splits.sizes()},
        "protocol": PROTOCOL,
        "versions": {"polystep": __version__, "torch": torch.__version__},
        "code": code_version(),
        "machine": machine_info(),
        "evaluations": budget.evaluations,
        "wall_seconds": seconds,
        "train_seconds": selector.train_seconds,
        "budget_seconds_used": budget_used,
        "longest_step_seconds": budget.longest_step,
        **extra,
        **figures,
    }


def run_bench(
    tasks: list[TaskSpec],
    method_names: list[str],
    seeds: list[int],
    *,
    scale: str,
    out_dir: Path,
    budget_fwd: int | None = None,
    budget_seconds: float | None = None,
    device: str = "cpu",
    mnist_dir: str | None = None,
    log: Any = print,
) -> list[Path]:
    """Every (task, method, seed) not already in ``out_dir``; returns the JSON paths.

    Raises :class:`~polystep.bench.outdir.StaleRecordError` before any training if a run file in
    ``out_dir`` holds the same run under another configuration."""
    log(PROTOCOL)
    for label in sorted({data_label(task, scale) for task in tasks}):
        log(f"data at scale {scale}: {label}")
    done = set()
    for task in tasks:
        for seed in seeds:
            for method in method_names:
                path = run_path(out_dir, task.name, method, seed)
                if path.exists():
                    wanted = run_config(
                        task, method, scale=scale,
                        budget_fwd=budget_fwd or task.scales[scale].budget_fwd,
                        budget_seconds=budget_seconds, device=device,
                    )  # fmt: skip
                    stored = json.loads(path.read_text())
                    stored_config = {"scale": stored.get("scale"), **stored.get("config", {})}
                    stored_config.setdefault("data", data_label(task, str(stored.get("scale"))))
                    refuse_stale(str(path), path.stem, config_mismatch(stored_config, wanted))
                    done.add(path)
    paths = []
    for task in tasks:
        for seed in seeds:
            splits: Splits | None = None
            for method in method_names:
                path = run_path(out_dir, task.name, method, seed)
                paths.append(path)
                if path in done:
                    log(f"skip {path.name} (done, same configuration)")
                    continue
                if splits is None:
                    splits = load_task_data(task, scale, seed, mnist_dir=mnist_dir)
                fwd = budget_fwd or task.scales[scale].budget_fwd
                payload = run_one(
                    task, method, seed, splits, scale=scale, budget_fwd=fwd,
                    budget_seconds=budget_seconds, device=device,
                )  # fmt: skip
                if is_writer():  # under torchrun: rank 0 writes the record
                    write_json_atomic(path, payload)
                log(
                    f"{task.name:16s} {method:10s} seed {seed}: "
                    f"test {payload['test_acc_selected']:.4f} "
                    f"(last {payload['test_acc_last']:.4f}), "
                    f"{payload['evaluations']:,} fwd, {payload['wall_seconds']:.1f}s"
                )
    return paths
