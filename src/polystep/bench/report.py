"""Aggregate bench JSON files into a markdown table and accuracy curves (PNG per task)."""

from __future__ import annotations

import json
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

from polystep.bench.runner import PROTOCOL
from polystep.bench.tasks import TASKS, data_label


def load_runs(directory: Path) -> list[dict[str, Any]]:
    """Every run JSON in ``directory`` (files named ``task__method__seedN.json``)."""
    runs = []
    for path in sorted(directory.glob("*__*__seed*.json")):
        with path.open() as fh:
            runs.append(json.load(fh))
    return runs


def _mean_std(values: list[float], scale: float = 1.0) -> str:
    mean = statistics.fmean(values) * scale
    std = statistics.stdev(values) * scale if len(values) > 1 else 0.0
    return f"{mean:.1f} ± {std:.1f}"


def _data(run: dict[str, Any]) -> str:
    """The data a run trained on (older records: derived from its task and scale)."""
    if "data" in run:
        return str(run["data"])
    task = TASKS.get(run["task"])
    return data_label(task, str(run["scale"])) if task and "scale" in run else "?"


def markdown_table(runs: list[dict[str, Any]]) -> str:
    """One row per (task, data, method): test accuracy (selected, last), forward passes, wall
    time. The data column says what was really trained on (digits at scale smoke)."""
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = defaultdict(list)
    for run in runs:
        groups[(run["task"], _data(run), run["method"])].append(run)
    lines = [
        PROTOCOL,
        "",
        "| task | data | method | seeds | test acc % (val-selected) | test acc % (last) "
        "| forward passes | wall s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for (task, data, method), group in sorted(groups.items()):
        lines.append(
            f"| {task} | {data} | {method} | {len(group)} "
            f"| {_mean_std([r['test_acc_selected'] for r in group], 100)} "
            f"| {_mean_std([r['test_acc_last'] for r in group], 100)} "
            f"| {statistics.fmean(r['evaluations'] for r in group):,.0f} "
            f"| {statistics.fmean(r['wall_seconds'] for r in group):.1f} |"
        )
    return "\n".join(lines) + "\n"


def plot_curves(runs: list[dict[str, Any]], out_dir: Path) -> list[Path]:
    """Per task: validation accuracy vs forward passes and vs wall seconds, all methods."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    for task in sorted({r["task"] for r in runs}):
        fig, axes = plt.subplots(1, 2, figsize=(11, 4))
        for i, method in enumerate(sorted({r["method"] for r in runs if r["task"] == task})):
            for j, run in enumerate(r for r in runs if r["task"] == task and r["method"] == method):
                curve = run["curve"]
                label = method if j == 0 else None
                acc = [100 * p["val_acc"] for p in curve]
                axes[0].plot([p["evaluations"] for p in curve], acc, color=f"C{i}", label=label)
                axes[1].plot([p["seconds"] for p in curve], acc, color=f"C{i}", label=label)
        axes[0].set_xlabel("forward passes")
        axes[1].set_xlabel("training wall seconds")
        for ax in axes:
            ax.set_ylabel("validation accuracy %")
            ax.grid(alpha=0.3)
        axes[0].legend()
        fig.suptitle(f"{task} (one line per seed)")
        fig.tight_layout()
        path = out_dir / f"{task}.png"
        fig.savefig(path, dpi=90)
        plt.close(fig)
        paths.append(path)
    return paths


def write_report(directory: Path) -> Path:
    """Write ``report.md`` and the PNG curves into ``directory``; returns the markdown path."""
    runs = load_runs(directory)
    if not runs:
        raise FileNotFoundError(f"no run JSON files (task__method__seedN.json) in {directory}")
    path = directory / "report.md"
    path.write_text(markdown_table(runs))
    plot_curves(runs, directory)
    return path
