"""One tuning protocol for every method of the NN bench, and its log.

Protocol (:data:`PROTOCOL`): every method gets the same number ``k`` of configurations per task,
the first ``k`` of a seeded permutation of its grid (:data:`GRIDS`, the one place the grids are
declared; a larger ``k`` extends a smaller one's set). Each configuration replaces some of the
method's settings (:mod:`polystep.bench.overrides`) and trains under the bench protocol at the
budget the method is reported at, on the tuning seeds (:data:`TUNE_SEEDS`: splits and inits
never used by a reported run); its score is its best VALIDATION accuracy (mean over the tuning
seeds). The test split is never scored. The configuration with the best score is the selection;
a selected value at the end of its axis (the grid's smallest or largest, on an axis of three or
more values) is flagged: the optimum may lie outside the grid.

The log is JSON lines, one per (method, task, configuration, seed, budget), appended as each
trial ends: a rerun skips every trial already logged with the same settings and the current code
version, and reruns one logged by other code (the old line stays; only current-code lines
count).
"""

from __future__ import annotations

import json
import os
import random
import statistics
import time
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from polystep.bench.codeversion import code_version
from polystep.bench.runner import RunSettings, machine_info, run_config, train_one
from polystep.bench.tasks import TaskSpec, data_label, load_task_data
from polystep.distributed import is_writer

GRIDS: dict[str, dict[str, list[Any]]] = {
    "polystep": {
        "step_radius": [0.03, 0.1, 0.3, 1.0],
        "probe_radius": [0.25, 0.5, 1.0, 2.0, 4.0],
        "epsilon": [0.01, 0.03, 0.1],
        "rank": [2, 4, 8],
    },
    "openai_es": {
        "sigma": [0.003, 0.01, 0.03, 0.1],
        "learning_rate": [0.003, 0.01, 0.03, 0.1],
        "popsize": [20, 50, 100],
    },
    "spsa": {
        "a": [0.1, 0.3, 1.0, 3.0],
        "c": [0.01, 0.03, 0.1],
        "num_directions": [2, 8, 32],
    },
    "cmaes": {
        "sigma0": [0.01, 0.03, 0.1, 0.3],
        "popsize": [16, 50, 100],
    },
    "adam": {
        "lr": [3e-4, 1e-3, 3e-3, 1e-2, 3e-2],
        "weight_decay": [0.0, 1e-4],
    },
}
K = 8  # configurations per (method, task) by default; every grid holds at least this many
TUNE_SEEDS = (0,)
PROTOCOL = (
    "tuning protocol: every method gets the same number of configurations per task (the first k "
    "of a seeded permutation of its grid), each trained under the bench protocol at the budget "
    "the method is reported at, on tuning seeds that no reported run uses; score: best "
    "validation accuracy (mean over tuning seeds); the test split is never scored"
)


def grid_points(method: str) -> list[dict[str, Any]]:
    """Every configuration of ``method``'s grid, in declaration order."""
    if method not in GRIDS:
        raise ValueError(f"method must be one of {sorted(GRIDS)}, got {method!r}")
    points: list[dict[str, Any]] = [{}]
    for axis, values in GRIDS[method].items():
        points = [{**point, axis: value} for point in points for value in values]
    return points


def draw_configs(method: str, k: int) -> list[dict[str, Any]]:
    """The ``k`` configurations ``method`` is tuned with: a prefix of a permutation of its grid
    seeded by the method's name (the same for every task)."""
    points = grid_points(method)
    if not 1 <= k <= len(points):
        raise ValueError(f"k must be in 1..{len(points)} for {method} (its grid size), got {k!r}")
    order = random.Random(f"polystep-tuning:{method}").sample(range(len(points)), len(points))
    return [points[i] for i in order[:k]]


def config_key(config: dict[str, Any]) -> str:
    return json.dumps(config, sort_keys=True)


def trial_key(line: dict[str, Any]) -> tuple[Any, ...]:
    """What makes two log lines the same trial (besides the code version)."""
    return (
        line["method"], line["task"], line["seed"], line["scale"], line["budget_fwd"],
        line["budget_seconds"], config_key(line["config"]), config_key(line["settings"]),
        line["threads"],
    )  # fmt: skip


def load_log(path: Path) -> list[dict[str, Any]]:
    """Every complete line of a tuning log (a final line cut off by a crash is ignored)."""
    if not path.exists():
        return []
    text = path.read_text()
    lines = text.split("\n")
    complete = lines[:-1]  # the text after the last newline is empty or cut off
    return [json.loads(line) for line in complete if line.strip()]


def append_line(path: Path, line: dict[str, Any]) -> None:
    """Append one JSON line and flush it to disk (one write: a crash leaves at most a cut-off
    last line, which :func:`load_log` ignores)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as fh:
        fh.write(json.dumps(line) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def latest(lines: Iterable[dict[str, Any]], source: str | None = None) -> list[dict[str, Any]]:
    """The last line of every trial; only lines of code version ``source`` when given."""
    out: dict[tuple[Any, ...], dict[str, Any]] = {}
    for line in lines:
        if source is None or (line.get("code") or {}).get("source") == source:
            out[trial_key(line)] = line
    return list(out.values())


def current(lines: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """The lines made by the current code version (later lines win for the same trial)."""
    return latest(lines, code_version()["source"])


def run_trial(
    task: TaskSpec, method: str, seed: int, run: RunSettings, mnist_dir: str | None = None
) -> dict[str, Any]:
    """One tuning trial (its configuration: ``run["overrides"]``): train, score validation only,
    return its log line."""
    splits = load_task_data(task, run["scale"], seed, mnist_dir=mnist_dir)
    trained = train_one(task, method, seed, splits, **run)
    return {
        "method": method,
        "task": task.name,
        "seed": seed,
        "scale": run["scale"],
        "data": data_label(task, run["scale"]),
        "budget_fwd": run["budget_fwd"],
        "budget_seconds": run["budget_seconds"],
        "config": run.get("overrides"),
        "settings": trained.config["settings"],
        "threads": trained.config["threads"],
        "val_acc_best": trained.selector.best_val,
        "val_acc_last": trained.selector.curve[-1]["val_acc"],
        "selected_step": trained.selector.best_step,
        "evaluations": trained.extra["evaluations"],
        "steps": trained.extra.get("steps", trained.extra.get("generations")),
        "wall_seconds": trained.seconds,
        "budget_seconds_used": trained.extra["budget_seconds_used"],
        "protocol": PROTOCOL,
        "grid": GRIDS[method],
        "code": code_version(),
        "machine": machine_info(),
        "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def tune(
    tasks: list[TaskSpec],
    method_names: list[str],
    *,
    scale: str,
    log_path: Path,
    k: int = K,
    seeds: tuple[int, ...] = TUNE_SEEDS,
    budget_fwd: int | None = None,
    budget_seconds: float | None = None,
    device: str = "cpu",
    mnist_dir: str | None = None,
    log: Any = print,
) -> list[dict[str, Any]]:
    """Run every trial of the protocol not yet in the log; returns the current-code lines."""
    draws = {method: draw_configs(method, k) for method in method_names}  # bad k: before any run
    log(PROTOCOL)
    for task in tasks:
        fwd = budget_fwd or task.scales[scale].budget_fwd
        for method in method_names:
            for config in draws[method]:
                for seed in seeds:
                    probe = {
                        "method": method, "task": task.name, "seed": seed, "scale": scale,
                        "budget_fwd": fwd, "budget_seconds": budget_seconds, "config": config,
                    }  # fmt: skip
                    run = RunSettings(
                        scale=scale, budget_fwd=fwd, budget_seconds=budget_seconds, device=device,
                        overrides=config,
                    )  # fmt: skip
                    wanted = run_config(task, method, **run)
                    key = trial_key(
                        {**probe, "settings": wanted["settings"], "threads": wanted["threads"]}
                    )
                    if any(trial_key(line) == key for line in current(load_log(log_path))):
                        log(f"skip {task.name} {method} {config_key(config)} seed {seed}")
                        continue
                    line = run_trial(task, method, seed, run, mnist_dir=mnist_dir)
                    if is_writer():  # under torchrun: rank 0 appends the line
                        append_line(log_path, line)
                    log(
                        f"{task.name:16s} {method:10s} {config_key(config)} seed {seed}: "
                        f"val {line['val_acc_best']:.4f} ({line['steps']} steps, "
                        f"{line['wall_seconds']:.1f}s)"
                    )
    return current(load_log(log_path))


def edge_flags(method: str, config: dict[str, Any]) -> list[str]:
    """``axis=value (grid min|max)`` for every selected value at an end of an axis of three or
    more values."""
    flags = []
    for axis, value in config.items():
        values = GRIDS[method].get(axis, [])
        if len(values) >= 3 and value in (min(values), max(values)):
            flags.append(f"{axis}={value} (grid {'min' if value == min(values) else 'max'})")
    return flags


def summarise(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (scale, budget, task, method): configurations tried, each one's mean validation score
    over its seeds, the selection and its edge flags. Pass current-code lines only."""
    groups: dict[tuple[Any, ...], dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    configs: dict[str, dict[str, Any]] = {}
    for line in lines:
        group = (
            line["scale"], line["budget_fwd"], line["budget_seconds"], line["task"],
            line["method"],
        )  # fmt: skip
        groups[group][config_key(line["config"])].append(line["val_acc_best"])
        configs[config_key(line["config"])] = line["config"]
    out = []
    for (scale, fwd, seconds, task, method), scores in sorted(
        groups.items(), key=lambda item: tuple(str(x) for x in item[0])
    ):
        means = {key: statistics.fmean(values) for key, values in scores.items()}
        best = max(means, key=lambda key: (means[key], key))
        out.append(
            {
                "scale": scale,
                "budget_fwd": fwd,
                "budget_seconds": seconds,
                "task": task,
                "method": method,
                "configs": len(means),
                "seeds": sorted({len(v) for v in scores.values()}),
                "best_val": means[best],
                "worst_val": min(means.values()),
                "selected": configs[best],
                "edge": edge_flags(method, configs[best]),
            }
        )
    return out


def selections(
    lines: list[dict[str, Any]],
    pairs: list[tuple[str, str]],
    *,
    scale: str,
    budget_fwd: int,
    budget_seconds: float | None,
    k: int = K,
) -> dict[tuple[str, str], dict[str, Any]]:
    """``{(task, method): selected config}`` from current-code lines at this scale and budget;
    a ``ValueError`` names every pair whose ``k`` configurations are not all in the log."""
    by_pair = {
        (row["task"], row["method"]): row
        for row in summarise(current(lines))
        if (row["scale"], row["budget_fwd"], row["budget_seconds"])
        == (scale, budget_fwd, budget_seconds)
    }
    missing = [
        f"{task}/{method}" for task, method in pairs
        if (task, method) not in by_pair or by_pair[(task, method)]["configs"] < k
    ]  # fmt: skip
    if missing:
        raise ValueError(
            f"the tuning log has fewer than k={k} configurations by the current code at scale "
            f"{scale}, budget_fwd {budget_fwd}, budget_seconds {budget_seconds} for: "
            f"{', '.join(missing)} (run benchmarks/tune.py with the same settings first)"
        )
    return {pair: by_pair[pair]["selected"] for pair in pairs}


def markdown_summary(lines: list[dict[str, Any]], source: str | None = None) -> str:
    """The tuning log as a table: one row per (budget, task, method). With ``source`` (a code
    version) only its lines count and the others are counted as stale; without, the last line
    of every trial counts and the code versions are listed (commits), so the table depends on
    the log alone."""
    shown = latest(lines, source)
    stale = len(lines) - len(shown) if source is not None else 0
    rows = summarise(shown)
    out = [
        PROTOCOL,
        "",
        "| scale | budget | task | method | configs | tuning seeds | best val % | worst val % "
        "| selected | on grid edge |",
        "|---|---|---|---|---:|---|---:|---:|---|---|",
    ]
    for row in rows:
        budget = (
            f"{row['budget_seconds']:g} s"
            if row["budget_seconds"] is not None
            else f"{row['budget_fwd']:,} passes"
        )
        selected = ", ".join(f"{key} {value}" for key, value in row["selected"].items())
        out.append(
            f"| {row['scale']} | {budget} | {row['task']} | {row['method']} | {row['configs']} "
            f"| {'/'.join(str(s) for s in row['seeds'])} | {100 * row['best_val']:.1f} "
            f"| {100 * row['worst_val']:.1f} | {selected} | {'; '.join(row['edge']) or 'no'} |"
        )
    if stale:
        out += ["", f"{stale} log lines by other code versions are not shown (stale)."]
    commits = sorted({str((line.get("code") or {}).get("commit")) for line in shown})
    out += ["", f"Code versions (git commit) of these lines: {', '.join(commits) or 'none'}."]
    return "\n".join(out) + "\n"


def tuned_overrides(
    log_path: Path,
    tasks: list[TaskSpec],
    method_names: list[str],
    *,
    scale: str,
    budget_fwd: int | None,
    budget_seconds: float | None,
    k: int = K,
) -> dict[tuple[str, str], dict[str, Any]]:
    """``{(task, method): config}`` selected by the log at ``log_path`` at this scale and budget
    (each task's default forward-pass budget when ``budget_fwd`` is None); every pair must have
    its ``k`` configurations tried by the current code (a ``ValueError`` names those that
    were not)."""
    lines = load_log(log_path)
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for task in tasks:
        out.update(
            selections(
                lines, [(task.name, m) for m in method_names], scale=scale,
                budget_fwd=budget_fwd or task.scales[scale].budget_fwd,
                budget_seconds=budget_seconds, k=k,
            )
        )  # fmt: skip
    return out
