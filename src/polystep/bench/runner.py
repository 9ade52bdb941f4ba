"""Run (task, method, seed) combinations under one protocol and write one JSON file per run.

Protocol (printed with every bench): a seeded 10 % validation split is carved from train; the
model is selected on validation only; the test split is scored once, after training, for the
selected and the last weights. Every method gets the same forward-pass budget (and optional wall
limit) and the same seeded batch stream. A finished run's JSON is never recomputed, so an
interrupted bench resumes where it stopped; a run file written under another configuration
(budget, scale, settings, threads, ...) or by other code (source digest) is never reported as
done: the bench refuses to start, or with ``resume`` reruns it and keeps the old file in
``stale/``. A run of any method killed part-way resumes from its last checkpoint
(``partial/``, written every few minutes under the run's configuration and code version; see
:mod:`polystep.bench.partial`) and ends with the record an uninterrupted run writes, times
aside.
"""

from __future__ import annotations

import copy
import json
import os
import platform
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NotRequired, TypedDict, Unpack

import torch
from torch import nn

from polystep import __version__
from polystep.bench import methods
from polystep.bench.codeversion import code_version
from polystep.bench.outdir import archive, config_mismatch, refuse_stale
from polystep.bench.overrides import resolved_settings
from polystep.bench.partial import Partial, discard, open_partial, partial_path
from polystep.bench.selection import Selector
from polystep.bench.tasks import TASKS, TaskSpec, adam_budget, data_label, load_task_data
from polystep.data import Loaders, Splits, make_loaders
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
UNBOUNDED_FWD = 10**15  # the forward-pass budget of a run limited by wall seconds alone


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


class RunSettings(TypedDict):
    """What defines a bench run besides its task, method and seed: the keywords of
    :func:`run_config`, :func:`train_one` and :func:`run_one`. ``overrides`` replaces some of the
    method's settings (e.g. a tuned selection)."""

    scale: str
    budget_fwd: int
    budget_seconds: float | None
    device: str
    overrides: NotRequired[dict[str, Any] | None]


def run_config(task: TaskSpec, method: str, **run: Unpack[RunSettings]) -> dict[str, Any]:
    """The settings that define a run (stored in its JSON; a stored run counts as done only when
    these are equal, and its code version is the current one). ``settings`` are the method's
    settings as run (preset or baseline settings with ``overrides`` on top, e.g. a tuned
    selection); ``threads`` the torch CPU threads. JSON-normalised, so it compares equal to what
    was read back."""
    unknown = sorted(set(run) - set(RunSettings.__annotations__))
    if unknown:
        raise TypeError(
            f"unknown run settings {unknown}; allowed: {list(RunSettings.__annotations__)}"
        )
    scale, overrides = run["scale"], run.get("overrides") or {}
    spec = task.scales[scale]
    config = {
        "scale": scale,
        "data": data_label(task, scale),
        "budget_fwd": run["budget_fwd"],
        "budget_seconds": run["budget_seconds"],
        "batch_size": spec.batch_size,
        "hidden": spec.hidden,
        "train_limit": spec.train_limit,
        "preset": task.preset if method == "polystep" else None,
        "overrides": overrides,
        "settings": resolved_settings(task, method, overrides, scale=scale),
        "threads": torch.get_num_threads(),
        "device": run["device"],
    }
    return json.loads(json.dumps(config))


@dataclass
class Trained:
    """What one training run leaves: the trained model, its data and selector, what the method
    runner returned (``evaluations``, ``steps``, ``budget_seconds_used`` (training seconds
    counted against the budget, validation excluded), ``longest_step_seconds``, ...), and the
    run's :func:`run_config`."""

    model: nn.Module
    loaders: Loaders
    selector: Selector
    extra: dict[str, Any]
    seconds: float  # wall seconds of training, validation included, over resumed sessions too
    config: dict[str, Any]
    resumes: int = 0  # times the run was resumed from a partial


def train_one(
    task: TaskSpec,
    method: str,
    seed: int,
    splits: Splits,
    *,
    partial: Partial | None = None,
    **run: Unpack[RunSettings],
) -> Trained:
    """Train ``method`` on ``task`` under the bench protocol with its settings as
    :func:`run_config` resolves them (passed down to the method); the test split is not touched.
    With ``partial`` the run checkpoints there and resumes from there."""
    if method not in methods.METHODS:
        raise ValueError(f"method must be one of {methods.METHODS}, got {method!r}")
    config = run_config(task, method, **run)
    scale, budget_fwd, budget_seconds, device = (
        run["scale"], run["budget_fwd"], run["budget_seconds"], run["device"]
    )  # fmt: skip
    settings, spec = config["settings"], task.scales[scale]
    torch.manual_seed(seed)
    model = task.model(splits.num_features, splits.num_classes, scale).to(device)
    loaders = make_loaders(splits.to(device), spec.batch_size, seed=seed, fast=True)
    if method == "adam":  # at scale full: the paper's epochs, not 31M-200M Adam steps
        budget_fwd = adam_budget(spec, budget_fwd, len(splits.train))
    selector = Selector(
        loaders.val,
        eval_every=max(1, budget_fwd // EVAL_POINTS),
        eval_every_seconds=None if budget_seconds is None else budget_seconds / EVAL_POINTS,
    )
    limits = {"max_evaluations": budget_fwd, "max_seconds": budget_seconds}
    started = time.perf_counter()
    if method == "polystep":
        extra = methods.run_polystep(
            settings, model, loaders, selector, seed, **limits, partial=partial
        )
    elif method == "adam":
        twin = (
            task.model(splits.num_features, splits.num_classes, scale, surrogate=True)
            if task.has_twin
            else copy.deepcopy(model)
        ).to(device)
        extra = methods.run_adam(
            model, twin, loaders, selector, settings=settings, **limits, partial=partial
        )
    else:
        run = methods.run_vector_baseline
        extra = run(
            method, model, loaders, selector, seed, settings=settings, **limits, partial=partial
        )
    seconds = time.perf_counter() - started
    if partial is None:
        return Trained(model, loaders, selector, extra, seconds, config)
    seconds += partial.ledger.earlier_seconds
    return Trained(model, loaders, selector, extra, seconds, config, partial.ledger.resumes)


def run_one(
    task: TaskSpec,
    method: str,
    seed: int,
    splits: Splits,
    *,
    partial: Partial | None = None,
    **run: Unpack[RunSettings],
) -> dict[str, Any]:
    """One training run (resumable with ``partial``, see :func:`train_one`); returns the JSON
    payload (config, versions, machine, figures, curve; wall and training seconds and
    ``resumes`` summed over the sessions that ran it)."""
    trained = train_one(task, method, seed, splits, partial=partial, **run)
    figures = trained.selector.finish(trained.model, trained.loaders.test)
    return {
        "task": task.name,
        "method": method,
        "seed": seed,
        "scale": run["scale"],
        "data": data_label(task, run["scale"]),
        "config": {**trained.config, "splits": splits.sizes()},
        "protocol": PROTOCOL,
        "versions": {"polystep": __version__, "torch": torch.__version__},
        "code": code_version(),
        "machine": machine_info(),
        "evaluations": trained.extra.pop("evaluations"),
        "wall_seconds": trained.seconds,
        "train_seconds": trained.selector.train_seconds,
        "resumes": trained.resumes,
        "budget_seconds_used": trained.extra.pop("budget_seconds_used"),
        "longest_step_seconds": trained.extra.pop("longest_step_seconds"),
        **trained.extra,
        **figures,
    }


def record_differences(stored: dict[str, Any], wanted: dict[str, Any]) -> list[str]:
    """How a stored run record differs from the run asked for: its configuration, and its code
    version against the current source (an older record without one differs)."""
    stored_config = {"scale": stored.get("scale"), **stored.get("config", {})}
    task = TASKS.get(str(stored.get("task")))
    if task is not None:
        stored_config.setdefault("data", data_label(task, str(stored.get("scale"))))
    differences = config_mismatch(stored_config, wanted)
    have = (stored.get("code") or {}).get("source")
    current = code_version()["source"]
    if have != current:
        short = "not recorded" if have is None else str(have)[:12]
        differences.append(f"code: source {short} -> {str(current)[:12]}")
    return differences


def bench_partial(
    out_dir: Path, task: TaskSpec, method: str, seed: int, config: dict[str, Any], log: Any
) -> Partial:
    """The partial of a run about to start under ``config`` (a :func:`run_config`): resumed when
    it was written under this configuration and code version (compared as
    :func:`record_differences` compares records), else moved aside."""
    identity = {"task": task.name, "scale": config["scale"], "config": config}
    identity["code"] = code_version()
    where = partial_path(out_dir, task.name, method, seed)
    return open_partial(where, identity, lambda stored: record_differences(stored, config), log)


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
    overrides: dict[tuple[str, str], dict[str, Any]] | None = None,
    resume: bool = False,
    log: Any = print,
) -> list[Path]:
    """Every (task, method, seed) not already in ``out_dir``; returns the JSON paths.

    ``overrides[(task, method)]`` replaces some of that method's settings (a tuned selection).
    A run file in ``out_dir`` counts as done only when its configuration and code version equal
    the current ones. One that differs is rerun with ``resume`` (the old file moves to
    ``stale/``); without it, :class:`~polystep.bench.outdir.StaleRecordError` is raised before
    any training. Runs checkpoint to ``out_dir/partial/`` as they go and resume a partial
    written under the same configuration and code (another one is moved to
    ``partial/stale/``); it is deleted once the record is written."""
    log(PROTOCOL)
    for label in sorted({data_label(task, scale) for task in tasks}):
        log(f"data at scale {scale}: {label}")
    overrides = overrides or {}

    def settings(task: TaskSpec, method: str) -> RunSettings:
        return RunSettings(
            scale=scale, budget_fwd=budget_fwd or task.scales[scale].budget_fwd,
            budget_seconds=budget_seconds, device=device,
            overrides=overrides.get((task.name, method)),
        )  # fmt: skip

    def wanted(task: TaskSpec, method: str) -> dict[str, Any]:
        return run_config(task, method, **settings(task, method))

    done, redo = set(), {}
    for task in tasks:
        for seed in seeds:
            for method in method_names:
                path = run_path(out_dir, task.name, method, seed)
                if not path.exists():
                    continue
                stored = json.loads(path.read_text())
                differences = record_differences(stored, wanted(task, method))
                if not differences:
                    done.add(path)
                elif resume:
                    redo[path] = (stored, differences)
                else:
                    refuse_stale(str(path), path.stem, differences)
    paths = []
    for task in tasks:
        for seed in seeds:
            splits: Splits | None = None
            for method in method_names:
                path = run_path(out_dir, task.name, method, seed)
                paths.append(path)
                if path in done:
                    # a partial left by a run killed between its record and the clean-up
                    discard(partial_path(out_dir, task.name, method, seed))
                    log(f"skip {path.name} (done, same configuration and code)")
                    continue
                if path in redo:
                    log(f"rerun {path.name} ({'; '.join(redo[path][1])})")
                partial = bench_partial(out_dir, task, method, seed, wanted(task, method), log)
                if splits is None:
                    splits = load_task_data(task, scale, seed, mnist_dir=mnist_dir)
                payload = run_one(
                    task, method, seed, splits, partial=partial, **settings(task, method)
                )
                if is_writer():  # under torchrun: rank 0 archives and writes the record
                    if path in redo:
                        archive(path, (redo[path][0].get("code") or {}).get("source"))
                    write_json_atomic(path, payload)
                partial.discard()  # rank 0, after the record is safely written
                log(
                    f"{task.name:16s} {method:10s} seed {seed}: "
                    f"test {payload['test_acc_selected']:.4f} "
                    f"(last {payload['test_acc_last']:.4f}), "
                    f"{payload['evaluations']:,} fwd, {payload['wall_seconds']:.1f}s"
                )
    return paths
