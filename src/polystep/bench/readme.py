"""The tables of ``benchmarks/README.md`` that describe NN bench records, generated from them.

A generated block sits between ``<!-- KIND:ARG -->`` and ``<!-- end -->``; everything in between
is replaced by what the records say (``polystep bench report --readme FILE``), and a test checks
the committed README equals its regeneration. ``ARG`` is a path under the results folder
(``benchmarks/results``). Kinds:

- ``table:DIR``: task x method matrix of test accuracy (validation-selected, mean ± std over
  seeds) with the forward passes each fitted, PolyStep's margin over the best gradient-free
  baseline, then the command that reproduces the folder, the machine, the runs resumed from a
  partial checkpoint, the protocol(s) and the code versions (git commits) of the records;
- ``steps:DIR``: PolyStep's forward passes per step and the steps each seed took;
- ``tuning:FILE``: a tuning log (:mod:`polystep.bench.tuning`) summarised;
- ``tuning-counts:FILE``: configurations tried per method and task in an older tuning file.

The blocks depend on the records alone (not on the code running them), so they name each code
version's commit rather than calling it stale; ``report.md`` of a folder marks stale rows.
"""

from __future__ import annotations

import json
import re
import statistics
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from polystep.bench.methods import METHODS
from polystep.bench.report import (
    code_labels,
    load_runs,
    protocol_lines,
    resumed,
    source_of,
    untrained_selected,
)
from polystep.bench.tasks import TASKS
from polystep.bench.tuning import load_log, markdown_summary

BLOCK = re.compile(r"(<!-- ([a-z-]+):(\S+) -->\n)(.*?)(<!-- end -->)", re.S)
METHOD_NAMES = {
    "polystep": "PolyStep",
    "openai_es": "OpenAI-ES",
    "spsa": "SPSA",
    "cmaes": "CMA-ES",
    "adam": "Adam (smooth twin)",
}
GRADIENT_FREE = ("openai_es", "spsa", "cmaes")
# The authors' test accuracy % at their full budgets (revised paper, package 1.1.0; issue 10's
# targets): reference constants, not records; shown beside rows of data sets they measured.
AUTHORS = {
    "snn_mnist": 93.0,
    "int8_mnist": 97.1,
    "argmax_fmnist": 86.8,
    "staircase_mnist": 93.2,
    "moe_20": 90.5,
    "mlp_mnist": 96.0,
}
# The MNIST IDX folder the README's commands name (relative to the repository root, as the
# README's hand-written commands name it too).
MNIST_DIR = "../shared/data/mnist"


def _passes(value: float) -> str:
    return f"{value:,.0f}" if value < 1000 else f"{value / 1000:,.0f}k"


def _cell(group: list[dict[str, Any]], seeds: int, labels: dict[str | None, str]) -> str:
    """Mean ± std test accuracy, passes fitted, and marks: seeds short of the table's, an
    untrained selection, and the code version(s) when the table mixes several."""
    accs = [100 * r["test_acc_selected"] for r in group]
    text = f"{statistics.fmean(accs):.1f}"
    if len(accs) > 1:
        text += f" ± {statistics.stdev(accs):.1f}"
    text += f" ({_passes(statistics.fmean(r['evaluations'] for r in group))})"
    if len(group) != seeds:
        text += f" [{len(group)} seed{'s' if len(group) > 1 else ''}]"
    if any(untrained_selected(r) for r in group):
        text += " †"
    if len(labels) > 1:
        text += " code " + ", ".join(sorted({labels[source_of(r)] for r in group}))
    return text


def _mean(group: list[dict[str, Any]]) -> float:
    return statistics.fmean(100 * r["test_acc_selected"] for r in group)


def _margin(cells: dict[str, list[dict[str, Any]]]) -> str:
    """PolyStep's mean minus the best gradient-free baseline's mean (by test mean: this column
    compares reported results, it selects nothing)."""
    rivals = {m: _mean(cells[m]) for m in GRADIENT_FREE if m in cells}
    if "polystep" not in cells or not rivals:
        return "-"
    best = max(rivals, key=lambda m: rivals[m])
    return f"{_mean(cells['polystep']) - rivals[best]:+.1f} vs {METHOD_NAMES[best]}"


def _default_budget(run: dict[str, Any], scale: str) -> bool:
    """Whether ``run`` trained on its task's default forward-pass budget at ``scale``."""
    spec = TASKS.get(run["task"])
    budget = run.get("config", {}).get("budget_fwd")
    return spec is not None and scale in spec.scales and spec.scales[scale].budget_fwd == budget


def _reads_mnist(run: dict[str, Any], scale: str) -> bool:
    """Whether ``run`` read MNIST from an IDX folder (every scale but smoke, for a task on MNIST
    alone or with Fashion-MNIST; Fashion-MNIST itself is found without a flag)."""
    spec = TASKS.get(run["task"])
    return scale != "smoke" and spec is not None and "mnist" in spec.dataset.split("+")


def _command(runs: list[dict[str, Any]], folder: str) -> str:
    """The ``polystep bench`` command that reproduces the folder's records."""
    config = runs[0].get("config", {})
    tasks = [t for t in TASKS if any(r["task"] == t for r in runs)]
    methods = [m for m in METHODS if any(r["method"] == m for r in runs)]
    seeds = sorted({r["seed"] for r in runs})
    scale = runs[0].get("scale", config.get("scale"))
    if config.get("budget_seconds") is not None:
        budget = f"--budget-seconds {config['budget_seconds']:g} "
    elif all(_default_budget(r, scale) for r in runs):
        budget = ""  # each task's own budget at the scale: no flag reproduces them all
    else:
        budget = f"--budget-fwd {config.get('budget_fwd')} "
    threads = config.get("threads", runs[0].get("machine", {}).get("threads"))
    mnist = f"--mnist-dir {MNIST_DIR} " if any(_reads_mnist(r, scale) for r in runs) else ""
    tuned = "--tuned LOG " if tuned_settings(runs) else ""
    return (
        f"polystep bench {' '.join(tasks)} --methods {','.join(methods)} --scale {scale} "
        f"{budget}--seeds {','.join(str(s) for s in seeds)} --threads {threads} "
        f"{mnist}{tuned}--out benchmarks/results/{folder}"
    )


def tuned_settings(runs: list[dict[str, Any]]) -> list[str]:
    """``task / method: setting value, ...`` for every (task, method) whose records ran tuned
    overrides (``config.overrides``), in table order; empty when none did."""
    chosen: dict[tuple[str, str], set[str]] = defaultdict(set)
    for run in runs:
        overrides = run.get("config", {}).get("overrides")
        if overrides:
            text = ", ".join(f"{k} {v}" for k, v in sorted(overrides.items()))
            chosen[(run["task"], run["method"])].add(text)
    order = {name: i for i, name in enumerate([*TASKS, *METHODS])}
    keys = sorted(chosen, key=lambda tm: (order.get(tm[0], -1), order.get(tm[1], -1)))
    return [f"{t} / {METHOD_NAMES[m]}: {' | '.join(sorted(chosen[(t, m)]))}" for t, m in keys]


def table_block(results: Path, folder: str) -> str:
    """The ``table:DIR`` block."""
    runs = load_runs(results / folder)
    if not runs:
        raise FileNotFoundError(f"no run records in {results / folder}")
    methods = [m for m in METHODS if any(r["method"] == m for r in runs)]
    seeds = len({r["seed"] for r in runs})
    cells: dict[str, dict[str, list[dict[str, Any]]]] = defaultdict(lambda: defaultdict(list))
    for run in runs:
        cells[run["task"]][run["method"]].append(run)
    labels, legend = code_labels(runs)
    with_margin = "polystep" in methods and any(m in methods for m in GRADIENT_FREE)
    full_data = all(r.get("scale") != "smoke" for r in runs)
    head = ["task", *(METHOD_NAMES[m] for m in methods)]
    head += ["PolyStep − best gradient-free (points)"] if with_margin else []
    head += ["authors, full budget"] if full_data else []
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    for task in (t for t in TASKS if t in cells):
        row = [
            task,
            *(_cell(cells[task][m], seeds, labels) if m in cells[task] else "-" for m in methods),
        ]
        row += [_margin(cells[task])] if with_margin else []
        row += [f"{AUTHORS[task]:.1f}"] if full_data else []
        lines.append("| " + " | ".join(row) + " |")
    machines = Counter(
        f"{r['machine'].get('platform')}, {r['machine'].get('processor')}, "
        f"torch {r['machine'].get('torch', r.get('versions', {}).get('torch'))}, "
        f"{r['machine'].get('threads')} thread(s)"
        for r in runs
    )
    used = [r["budget_seconds_used"] for r in runs if "budget_seconds_used" in r]
    seed_list = ", ".join(str(s) for s in sorted({r["seed"] for r in runs}))
    over = f"mean ± std over {seeds} seeds ({seed_list})" if seeds > 1 else f"seed {seed_list}"
    lines += [
        "",
        f"Cells: test accuracy % of the validation-selected model, {over}, and the forward "
        "passes fitted (mean). † a seed's validation-selected model is the untrained one. "
        + ("code X: the code version (below) of the cell's records. " if len(labels) > 1 else "")
        + f"{len(runs)} records in `results/{folder}`."
        + (" Authors: their revised paper's test accuracy at full budget." if full_data else ""),
        "",
        f"Command (with the code versions below): `{_command(runs, folder)}`",
        "",
        *(
            [
                "Settings the records ran, as selected by the tuning log LOG (validation "
                "only): " + "; ".join(tuned),
                "",
            ]
            if (tuned := tuned_settings(runs))
            else []
        ),
        "Machine: " + "; ".join(f"{text} ({n} runs)" for text, n in sorted(machines.items())),
        "",
        "Training seconds counted against the budget (max over runs): "
        + (f"{max(used):.1f}" if used else "not recorded (records predate the field)"),
        "",
        resumed_line(runs),
        "",
        *protocol_lines(runs),
        "",
        "Code versions:",
        *legend,
    ]
    return "\n".join(lines) + "\n"


def resumed_line(runs: list[dict[str, Any]]) -> str:
    """The runs resumed from a partial checkpoint (after an interruption), each named with its
    resumes and its wall seconds summed over its sessions."""
    count = resumed(runs)
    if count == "not recorded":
        count += " (records predate the field)"
    line = f"Runs resumed from a partial checkpoint: {count}"
    again = sorted(
        (r for r in runs if r.get("resumes", 0) > 0),
        key=lambda r: (r["task"], r["method"], r["seed"]),
    )
    if again:
        line += (
            " ("
            + "; ".join(
                f"{r['task']} {METHOD_NAMES.get(r['method'], r['method'])} seed {r['seed']}: "
                f"{r['resumes']}x, {r['wall_seconds']:.0f} s wall over its sessions"
                for r in again
            )
            + ")"
        )
    return line + "."


def steps_block(results: Path, folder: str) -> str:
    """The ``steps:DIR`` block: PolyStep's passes per step and steps per seed, per task."""
    runs = [r for r in load_runs(results / folder) if r["method"] == "polystep"]
    if not runs:
        raise FileNotFoundError(f"no PolyStep records in {results / folder}")
    lines = [
        "| task | preset | forward passes per PolyStep step | steps per seed | wall s per seed |",
        "|---|---|---:|---|---|",
    ]
    for task in TASKS:
        group = sorted((r for r in runs if r["task"] == task), key=lambda r: r["seed"])
        if not group:
            continue
        per_step = sorted({r.get("passes_per_step", r.get("candidates_per_step")) for r in group})
        walls = " / ".join(format(r["wall_seconds"], ".0f") for r in group)
        lines.append(
            f"| {task} | {group[0].get('config', {}).get('preset')} "
            f"| {', '.join(f'{p:,}' for p in per_step if p is not None) or 'not recorded'} "
            f"| {' / '.join(str(r['steps']) for r in group)} "
            f"| {walls} |"
        )
    return "\n".join(lines) + "\n"


def tuning_counts_block(results: Path, name: str) -> str:
    """The ``tuning-counts:FILE`` block: configurations per method and task/model in an older
    tuning file (``{"runs": [...]}``; PolyStep runs name a task, baseline runs a model)."""
    runs = json.loads((results / name).read_text())["runs"]
    counts: Counter[tuple[str, str]] = Counter()
    seen: set[tuple[str, str, str]] = set()
    for run in runs:
        method = run.get("method", "polystep")
        where = (
            f"{run['task']} ({run.get('scale', 'smoke')})"
            if "task" in run
            else (f"digits {run.get('model')}")
        )
        config = json.dumps([run.get("base"), run.get("config", run.get("overrides"))])
        if (method, where, config) not in seen:
            seen.add((method, where, config))
            counts[(method, where)] += 1
    lines = ["| method | task / model | configurations |", "|---|---|---:|"]
    lines += [f"| {m} | {w} | {n} |" for (m, w), n in sorted(counts.items())]
    return "\n".join(lines) + "\n"


def render_block(kind: str, arg: str, results: Path) -> str:
    if kind == "table":
        return table_block(results, arg)
    if kind == "steps":
        return steps_block(results, arg)
    if kind == "tuning":
        return markdown_summary(load_log(results / arg))
    if kind == "tuning-counts":
        return tuning_counts_block(results, arg)
    raise ValueError(f"block kind must be table, steps, tuning or tuning-counts, got {kind!r}")


def render(text: str, results: Path) -> str:
    """``text`` with every generated block replaced by what the records say now."""
    return BLOCK.sub(
        lambda m: m.group(1) + render_block(m.group(2), m.group(3), results) + m.group(5), text
    )


def update_readme(path: Path) -> bool:
    """Regenerate the blocks of ``path`` from ``results/`` beside it; True if it changed."""
    text = path.read_text()
    new = render(text, path.parent / "results")
    if new != text:
        path.write_text(new)
    return new != text
