"""Aggregate bench JSON files into a markdown table and accuracy curves (PNG per task).

The table says what each record says about itself: the protocol(s) stored in the records (not
today's), rows whose validation-selected model is the untrained initial one, the runs that were
resumed from a partial checkpoint (``resumes``; their wall seconds sum their sessions), and the
code version
(:mod:`polystep.bench.codeversion`): a folder whose records come from more than one version gets a
``code`` column and a legend, so results of different code are never mixed silently. Records
older than these fields are shown as "not recorded". ``report.md`` marks rows with a record made
by code other than the running code's as stale; the README tables (:mod:`polystep.bench.readme`)
name the git commit of each code version instead, so they depend on the records alone.
"""

from __future__ import annotations

import json
import statistics
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from polystep.bench.codeversion import code_version
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


def untrained_selected(run: dict[str, Any]) -> bool:
    """Whether validation selected the initial model (``selected_step`` 0; older records: no
    forward pass spent at the selected point)."""
    if "selected_step" in run:
        return run["selected_step"] == 0
    return run.get("selected_at_evaluations") == 0


def _untrained_note(group: list[dict[str, Any]]) -> str:
    count = sum(untrained_selected(r) for r in group)
    if count == 0:
        return ""
    if count == len(group):
        return " (untrained model selected)"
    return f" (untrained model selected in {count} of {len(group)} seeds)"


def _budget_used(group: list[dict[str, Any]]) -> str:
    """The most training seconds any seed counted against its budget (validation excluded);
    ``not recorded`` for older records, whose wall seconds include validation and set-up."""
    used = [r["budget_seconds_used"] for r in group if "budget_seconds_used" in r]
    if not used:
        return "not recorded"
    return f"{max(used):.1f}" + ("" if len(used) == len(group) else f" ({len(used)} seeds)")


def resumed(group: list[dict[str, Any]]) -> str:
    """How many runs of ``group`` were resumed from a partial (``k of n``) and how many resumes
    that took; records older than the ``resumes`` field are counted as not recorded."""
    known = [r for r in group if "resumes" in r]
    if not known:
        return "not recorded"
    again = [r["resumes"] for r in known if r["resumes"] > 0]
    text = f"{len(again)} of {len(known)}"
    if again:
        text += f" ({sum(again)} resume{'s' if sum(again) > 1 else ''})"
    if len(known) < len(group):
        text += f", {len(group) - len(known)} not recorded"
    return text


def protocol_lines(runs: list[dict[str, Any]]) -> list[str]:
    """The protocol stored in the records; each one with its run count when they differ."""
    counts = Counter(str(r.get("protocol", "protocol: not recorded")) for r in runs)
    if len(counts) <= 1:
        return [next(iter(counts), PROTOCOL)]
    lines = [f"The records were made under {len(counts)} protocols:"]
    return lines + [f"- {n} runs: {text}" for text, n in sorted(counts.items())]


def _code(run: dict[str, Any]) -> tuple[str, str] | None:
    """(source digest, description) of a run's code version; None for an older record."""
    code = run.get("code")
    if not isinstance(code, dict) or not code.get("source"):
        return None
    commit = code.get("commit") or "no git commit"
    return str(code["source"]), f"source sha256 {str(code['source'])[:12]}, commit {commit}, " + (
        f"package {code.get('package')}"
    )


def code_labels(runs: list[dict[str, Any]]) -> tuple[dict[str | None, str], list[str]]:
    """A label per code version (A, B, ... in order of first appearance; ``not recorded`` for
    older records) and the legend lines describing them."""
    labels: dict[str | None, str] = {}
    legend = []
    for run in runs:
        code = _code(run)
        key = None if code is None else code[0]
        if key in labels:
            continue
        labels[key] = (
            "not recorded" if key is None else chr(ord("A") + sum(k is not None for k in labels))
        )
        if code is None:
            legend.append("- not recorded: records older than the code-version field")
        else:
            legend.append(f"- {labels[key]}: {code[1]}")
    return labels, legend


def source_of(run: dict[str, Any]) -> str | None:
    """The source digest of a run's code (None for a record older than the field)."""
    code = _code(run)
    return None if code is None else code[0]


def stale_note(runs: list[dict[str, Any]], current_source: str) -> list[str]:
    """A warning naming how many records were made by code other than ``current_source``."""
    stale = sum(source_of(r) != current_source for r in runs)
    if not stale:
        return []
    return [
        f"**{stale} of {len(runs)} records were made by code other than the current source "
        "(rows marked stale); `polystep bench ... --resume` reruns them.**",
        "",
    ]


def markdown_table(runs: list[dict[str, Any]], current_source: str | None = None) -> str:
    """One row per (task, data, method): test accuracy (selected, last), forward passes, wall
    time (all of the run, every session of a resumed one), the training seconds counted against
    the budget and how many runs were resumed (:func:`resumed`). The data column
    says what was really trained on (digits at scale smoke); rows whose selected model is the
    untrained one say so; a ``code`` column appears when the records come from more than one
    code version. With ``current_source`` (the running code's digest), rows with a record of
    other code are marked stale."""
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = defaultdict(list)
    for run in runs:
        groups[(run["task"], _data(run), run["method"])].append(run)
    labels, legend = code_labels(runs)
    stale = current_source is not None and any(source_of(r) != current_source for r in runs)
    mixed = len(labels) > 1 or stale
    lines = [
        *([] if current_source is None else stale_note(runs, current_source)),
        *protocol_lines(runs),
        "",
        "| task | data | method | seeds | test acc % (val-selected) | test acc % (last) "
        "| forward passes | wall s | budget s used (max) | resumed |"
        + (" code |" if mixed else ""),
        "|---|---|---|---|---|---|---|---|---|---|" + ("---|" if mixed else ""),
    ]
    for (task, data, method), group in sorted(groups.items()):
        row = (
            f"| {task} | {data} | {method} | {len(group)} "
            f"| {_mean_std([r['test_acc_selected'] for r in group], 100)}{_untrained_note(group)} "
            f"| {_mean_std([r['test_acc_last'] for r in group], 100)} "
            f"| {statistics.fmean(r['evaluations'] for r in group):,.0f} "
            f"| {statistics.fmean(r['wall_seconds'] for r in group):.1f} "
            f"| {_budget_used(group)} | {resumed(group)} |"
        )
        if mixed:
            versions = sorted({labels[source_of(r)] for r in group})
            old = current_source is not None and any(source_of(r) != current_source for r in group)
            row += (
                f" {', '.join(versions)}{' (mixed)' if len(versions) > 1 else ''}"
                f"{' stale' if old else ''} |"
            )
        lines.append(row)
    if runs:
        heading = (
            "Code versions (rows of different code are not comparable):"
            if mixed
            else ("Code version of every run:")
        )
        lines += ["", heading, *legend]
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
    """Write ``report.md`` and the PNG curves into ``directory``; returns the markdown path.
    Rows with a record made by code other than the running code's are marked stale."""
    runs = load_runs(directory)
    if not runs:
        raise FileNotFoundError(f"no run JSON files (task__method__seedN.json) in {directory}")
    path = directory / "report.md"
    path.write_text(markdown_table(runs, code_version()["source"]))
    plot_curves(runs, directory)
    return path
