"""Does decaying the step radius (and epsilon) over a run help? (issue 10)

Written for the hard-LIF SNN (``snn_mnist``, the default ``--task``), usable for any bench task:
runs ``--task`` at ``--scale full`` (all of the task's data, the bench's batch) with PolyStep
under the bench's own protocol (:func:`polystep.bench.runner.train_one`), in one of four arms,
each given to the bench as overrides of the task's preset's step radius, epsilon and probe
radius:

- ``constant``: both constant at the preset's start values (a schedule's ``init``, or the
  preset's float). For ``snn_mnist`` that is 0.03 and 0.2: the ``snn`` preset before it adopted
  ``decay_both``; the log's older rows name this arm ``preset``, and are read as ``constant``;
- ``decay_both``: step radius cosine-decayed from its start value to ``--step-target`` and
  epsilon to ``--eps-target``, each over the run;
- ``decay_step``: only the step radius decayed;
- ``decay_all``: as ``decay_both``, and the probe radius decayed to ``--probe-target`` too.

The probe radius stays constant in every arm but ``decay_all``. A schedule over the run gets
its horizon from ``train()``: the run's budget divided by the forward passes one step costs,
rounded down (:func:`polystep.training.run_steps`). Scored on validation only: the test split
is never read. One JSON line per run is appended to ``--log`` (task, arm, schedules, settings,
seed, budget, code, load; rows without a task are ``snn_mnist``); a rerun skips what the log
already holds for the same schedules and the current library code (its ``source`` digest:
committing records does not change it).
Two options change any arm (a separate row, paired in the summary with the same arm without
it): ``--revive SHARE`` adds :class:`polystep.nn.ReviveSilentOutputs` at that share, ``--rank R``
sets the rank (the factored space's directions per unit: 2R candidates a unit and a step, so
fewer steps in the same budget; default: the bench's at scale full). The log names a run's
rank only where it is not the task's preset's. ``--summary`` writes the markdown table of the log
instead of running.

    .venv/bin/python benchmarks/snn_schedules.py --arm decay_both --seed 1 \
        --step-target 0.05 --eps-target 0.01 --budget-fwd 3000000 \
        --mnist-dir ../shared/data/mnist --log benchmarks/results/tuning/snn_schedules.jsonl
    nice -n 15 .venv/bin/python benchmarks/snn_schedules.py --task int8_mnist --arm constant \
        --seed 1 --step-target 0.025 --eps-target 0.01 --budget-fwd 4000000 \
        --mnist-dir ../shared/data/mnist --log benchmarks/results/tuning/int8_schedules.jsonl
"""

from __future__ import annotations

import json
import os
import statistics
import sys
from pathlib import Path
from typing import Any

import torch

from polystep.bench.codeversion import code_version
from polystep.bench.overrides import base_settings
from polystep.bench.runner import machine_info, train_one
from polystep.bench.tasks import TASKS, load_task_data
from polystep.cliargs import existing_dir, parser, positive_float, positive_int
from polystep.presets import PRESETS
from polystep.schedules import Cosine, as_schedule

ARMS = ("constant", "decay_both", "decay_step", "decay_all")
OLD_ARMS = {"preset": "constant"}  # the log's name of an arm before the preset adopted decay_both
TASK = "snn_mnist"  # the default task, and the task of log rows that name none
SCALE = "full"
KEYS = ("step_radius", "epsilon", "probe_radius")
OPTIONS = {"revive_outputs": "revive", "rank": "rank"}  # log key of an arm's option: its label


def start_values(task: str = TASK) -> dict[str, float]:
    """The start values of ``task``'s preset's step radius, epsilon and probe radius: a
    schedule's ``init``
    or the preset's constant (for ``snn_mnist``, the ``snn`` preset's values before it adopted
    ``decay_both``)."""
    if task not in TASKS:
        raise ValueError(f"task must be one of {sorted(TASKS)}, got {task!r}")
    preset = PRESETS[TASKS[task].preset]
    return {
        k: float(v["init"] if isinstance(v, dict) else v) for k, v in preset.items() if k in KEYS
    }


DECAYED = {  # the keys each arm decays, with the option that gives the key's final value
    "constant": {},
    "decay_both": {"step_radius": "--step-target", "epsilon": "--eps-target"},
    "decay_step": {"step_radius": "--step-target"},
    "decay_all": {
        "step_radius": "--step-target",
        "epsilon": "--eps-target",
        "probe_radius": "--probe-target",
    },
}


def arm_overrides(
    arm: str,
    step_target: float | None,
    eps_target: float | None,
    task: str = TASK,
    probe_target: float | None = None,
) -> dict[str, Any]:
    """``task``'s preset's step radius, epsilon and probe radius in ``arm``: constants (floats)
    or cosine schedules over the run (state dicts), as the bench takes overrides. A target is
    needed only by an arm that decays its value."""
    if arm not in ARMS:
        raise ValueError(f"arm must be one of {ARMS}, got {arm!r}")
    targets = {"step_radius": step_target, "epsilon": eps_target, "probe_radius": probe_target}
    out: dict[str, Any] = dict(start_values(task))
    for key, option in DECAYED[arm].items():
        if targets[key] is None:
            raise ValueError(f"arm {arm!r} needs {option} (the final {key.replace('_', ' ')})")
        out[key] = Cosine(init=out[key], target=targets[key]).state_dict()
    return out


def state_dicts(overrides: dict[str, Any]) -> dict[str, Any]:
    """Each value (a float, a schedule or its state dict) as its schedule's state dict."""
    return {key: as_schedule(value, key).state_dict() for key, value in overrides.items()}


def logged_rank(task_name: str, rank: int | None) -> int | None:
    """The rank a run at scale full uses (``rank``, or the task's own there) as the log names
    it: None when it is the task's preset's rank, so rows keep their meaning when the bench's
    rank at scale full changes."""
    task = TASKS[task_name]
    used = rank if rank is not None else base_settings(task, "polystep", SCALE)["rank"]
    return None if used == PRESETS[task.preset]["rank"] else used


def run(args: Any) -> dict[str, Any]:
    """Train one arm on one seed; return its log line (validation figures only)."""
    task = TASKS[args.task]
    splits = load_task_data(task, SCALE, args.seed, mnist_dir=args.mnist_dir)
    overrides = arm_overrides(
        args.arm, args.step_target, args.eps_target, args.task, args.probe_target
    )
    options = {"revive_outputs": args.revive}  # None: off, whatever the task's bench default
    if args.rank is not None:
        options["rank"] = args.rank
    load_before = os.getloadavg()[0]
    trained = train_one(
        task, "polystep", args.seed, splits, scale=SCALE, budget_fwd=args.budget_fwd,
        budget_seconds=None, device="cpu", overrides={**overrides, **options},
    )  # fmt: skip
    curve = trained.selector.curve
    return {
        "arm": args.arm,
        "task": args.task,
        "scale": SCALE,
        "seed": args.seed,
        "budget_fwd": args.budget_fwd,
        "schedules": state_dicts(overrides),
        "revive_outputs": args.revive,
        "rank": logged_rank(args.task, args.rank),
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
    """The complete lines of the log (none when it does not exist), with the arms' current
    names (:data:`OLD_ARMS`) and a task on every line (:data:`TASK` where it names none)."""
    if not path.exists():
        return []
    lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [
        {**r, "task": r.get("task", TASK), "arm": OLD_ARMS.get(r["arm"], r["arm"])} for r in lines
    ]


def _mean_sd(values: list[float]) -> str:
    """Mean ± sd in %; the mean alone for one value."""
    mean = f"{100 * statistics.mean(values):.2f}"
    return f"{mean} ± {100 * statistics.stdev(values):.2f}" if len(values) > 1 else mean


def _cosines(r: dict[str, Any]) -> list[str]:
    """The cosines of one log line, e.g. ``step_radius 0.2 → 0.05``, in key order."""
    return [
        f"{key} {state['init']} → {state['target']}"
        for key, state in sorted(r.get("schedules", {}).items())
        if isinstance(state, dict) and "target" in state
    ]


def _label(r: dict[str, Any]) -> str:
    """The arm with its cosines and options (:data:`OPTIONS`), so runs of one arm at other
    targets or options stay apart."""
    parts = _cosines(r) + [f"{word} {r[key]}" for key, word in OPTIONS.items() if r.get(key)]
    return f"{r['arm']} ({', '.join(parts)})" if parts else r["arm"]


def _order(label: str) -> tuple[int, str]:
    return ARMS.index(label.split(" ")[0]), label


def summary(lines: list[dict[str, Any]]) -> str:
    """Markdown of one task's log: one row per run, then per (budget, arm) mean ± sd and the
    paired differences to the constant arm on the seeds both ran (validation accuracy, %)."""
    tasks = sorted({r.get("task", TASK) for r in lines}) or [TASK]
    if len(tasks) > 1:
        raise ValueError(f"a summary covers one task; the log holds {tasks}")
    task = tasks[0]
    start = start_values(task)
    history = (
        " (the `snn` preset before it adopted `decay_both`; named `preset` in the log's older "
        "rows); `decay_both` is the `snn` preset now"
        if task == "snn_mnist"
        else f" (the `{TASKS[task].preset}` preset's start values)"
    )
    out = [
        f"Validation accuracy of `{task}` at scale full (generated by "
        "`benchmarks/snn_schedules.py --summary` from its log; load: 1-min load average before "
        "→ after the run, on the shared 2-core VM; s: wall seconds).",
        "",
        f"Arms: `constant` is epsilon {start['epsilon']} and step radius "
        f"{start['step_radius']} throughout{history}; decaying arms name their cosines "
        "(init → target over the run). The probe radius is "
        f"{start.get('probe_radius')} unless an arm decays it.",
        "",
        "| budget | arm | seed | val best % | val last % | selected step | steps | load | s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    key = lambda r: (r["budget_fwd"], _order(_label(r)), r["seed"])  # noqa: E731
    for r in sorted(lines, key=key):
        load = f"{r['load_before']:.1f}→{r['load_after']:.1f}"
        out.append(
            f"| {r['budget_fwd']:,} | {_label(r)} | {r['seed']} | {100 * r['val_acc_best']:.2f} "
            f"| {100 * r['val_acc_last']:.2f} | {r['selected_step']} | {r['steps']} | {load} "
            f"| {r['wall_seconds']:.0f} |"
        )
    out += [
        "",
        "| budget | arm | seeds | val best % | val last % | paired Δ best vs constant | "
        "paired Δ last vs constant |",
        "|---|---|---|---|---|---|---|",
    ]
    by = {(r["budget_fwd"], _label(r), r["seed"]): r for r in lines}
    groups = sorted({(b, a) for b, a, _ in by}, key=lambda k: (k[0], _order(k[1])))
    for budget, arm in groups:
        runs = _runs(by, budget, arm)
        cells = [_mean_sd([r[m] for r in runs]) for m in ("val_acc_best", "val_acc_last")]
        reference = (
            [] if arm == "constant" else [by.get((budget, "constant", r["seed"])) for r in runs]
        )
        seeds = ",".join(str(r["seed"]) for r in runs)
        out.append(
            f"| {budget:,} | {arm} | {seeds} | {cells[0]} | {cells[1]} | "
            + " | ".join(_paired(runs, reference, m) for m in ("val_acc_best", "val_acc_last"))
            + " |"
        )
    with_option = [
        (budget, arm, key)
        for key in OPTIONS
        for budget, arm in groups
        if any(r.get(key) for r in _runs(by, budget, arm))
    ]
    if with_option:
        out += [
            "",
            "Options: each arm with an option (" + ", ".join(OPTIONS.values()) + ") against the "
            "same arm without that option, paired by seed.",
            "",
            "| budget | arm | against | seeds | paired Δ best | paired Δ last |",
            "|---|---|---|---|---|---|",
        ]
    for budget, arm, key in with_option:
        runs = _runs(by, budget, arm)
        against = [_label({**r, key: None}) for r in runs]
        reference = [by.get((budget, a, r["seed"])) for r, a in zip(runs, against, strict=True)]
        seeds = ",".join(str(r["seed"]) for r, ref in zip(runs, reference, strict=True) if ref)
        out.append(
            f"| {budget:,} | {arm} | {against[0]} | {seeds} | "
            + " | ".join(_paired(runs, reference, m) for m in ("val_acc_best", "val_acc_last"))
            + " |"
        )
    return "\n".join(out) + "\n"


def _runs(by: dict[tuple, dict[str, Any]], budget: int, arm: str) -> list[dict[str, Any]]:
    """The runs of one (budget, arm label), by seed."""
    return [r for (b, a, _), r in sorted(by.items()) if (b, a) == (budget, arm)]


def _paired(runs: list[dict[str, Any]], reference: list[dict[str, Any] | None], metric: str) -> str:
    """``metric`` differences of ``runs`` to their ``reference`` runs (same seed; None: no
    pair), in points, and their mean; empty without a pair."""
    diffs = [r[metric] - ref[metric] for r, ref in zip(runs, reference) if ref is not None]
    shown = ", ".join(f"{100 * d:+.2f}" for d in diffs)
    return f"{shown} (mean {100 * statistics.mean(diffs):+.2f})" if diffs else ""


def main(argv: list[str] | None = None) -> int:
    ap = parser("benchmarks/snn_schedules.py", __doc__)
    ap.add_argument("--task", choices=sorted(TASKS), default=TASK, help="bench task")
    ap.add_argument("--arm", choices=ARMS, default="decay_both", help="which schedule arm")
    ap.add_argument("--seed", type=int, default=1, help="split and init seed")
    ap.add_argument("--budget-fwd", type=positive_int, default=3_000_000, help="forward passes")
    ap.add_argument("--step-target", type=positive_float, default=None, help="final step radius")
    ap.add_argument("--eps-target", type=positive_float, default=None, help="final epsilon")
    ap.add_argument("--probe-target", type=positive_float, default=None, help="final probe radius")
    ap.add_argument(
        "--revive", type=positive_float, default=None,
        help="revive silent output neurons to this share of a held batch (polystep.nn)",
    )  # fmt: skip
    ap.add_argument(
        "--rank", type=positive_int, default=None, help="rank (default: the bench's at scale full)"
    )
    ap.add_argument("--threads", type=positive_int, default=1, help="torch CPU threads")
    ap.add_argument("--mnist-dir", type=existing_dir, default=None, help="MNIST IDX folder")
    ap.add_argument("--log", type=Path, required=True, help="JSON lines, appended")
    ap.add_argument("--summary", type=Path, default=None, help="write the markdown summary here")
    args = ap.parse_args(argv)
    if args.summary is not None:
        args.summary.write_text(summary(load_log(args.log)))
        return 0
    try:
        overrides = arm_overrides(
            args.arm, args.step_target, args.eps_target, args.task, args.probe_target
        )
    except ValueError as err:
        ap.error(str(err))
    torch.set_num_threads(args.threads)
    wanted = (args.task, args.arm, args.seed, args.budget_fwd, state_dicts(overrides))
    done = [
        r
        for r in load_log(args.log)
        if (r["task"], r["arm"], r["seed"], r["budget_fwd"], state_dicts(r.get("schedules", {})))
        == wanted
        and r.get("revive_outputs") == args.revive
        and r.get("rank") == logged_rank(args.task, args.rank)
        and r["code"]["source"] == code_version()["source"]  # what records are compared on
    ]
    if done:
        print(f"already in {args.log}: {args.task} {args.arm} seed {args.seed}", file=sys.stderr)
        return 0
    line = run(args)
    args.log.parent.mkdir(parents=True, exist_ok=True)
    with args.log.open("a") as f:
        f.write(json.dumps(line) + "\n")
    print(json.dumps({k: v for k, v in line.items() if k not in ("curve", "machine")}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
