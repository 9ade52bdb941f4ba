"""Tune every method of the NN bench under one protocol (``polystep.bench.tuning``).

Each method gets the same number ``--k`` of configurations per task from its grid (declared in
``polystep.bench.tuning.GRIDS``), trained at the budget it is reported at on the tuning seeds
(never the reported ones) and scored on validation only. One JSON line per (method, task,
configuration, seed) is appended to ``--log`` as each trial ends; a rerun skips what the log
already holds for the current code. Prints the summary (selection per task and method, edge
flags) and one JSON line with the figures and the exact configuration. Run the bench with the
selection: ``polystep bench ... --tuned LOG`` (same scale and budget).

    .venv/bin/python benchmarks/tune.py all --scale cpu --budget-seconds 60 --threads 2 \
        --mnist-dir ../shared/data/mnist --log benchmarks/results/tuning/cpu_60s.jsonl
    .venv/bin/python benchmarks/tune.py mlp_mnist --methods spsa,adam --scale smoke \
        --budget-fwd 2000 --k 2 --log /tmp/tuning.jsonl          # a smoke check, seconds
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from polystep.bench.codeversion import code_version
from polystep.bench.methods import METHODS
from polystep.bench.runner import UNBOUNDED_FWD, machine_info
from polystep.bench.tasks import SCALES, TASKS, resolve_tasks
from polystep.bench.tuning import TUNE_SEEDS, K, markdown_summary, summarise, tune
from polystep.cliargs import (
    choice_list,
    existing_dir,
    int_list,
    parser,
    positive_float,
    positive_int,
    torch_device,
)


def main(argv: list[str] | None = None) -> int:
    ap = parser("benchmarks/tune.py", __doc__)
    ap.add_argument("tasks", nargs="+", help=f"task names, or 'all': {', '.join(TASKS)}")
    ap.add_argument(
        "--methods", type=choice_list(METHODS), default=",".join(METHODS),
        help=f"comma list of {', '.join(METHODS)}",
    )  # fmt: skip
    ap.add_argument("--scale", choices=SCALES, default="smoke", help="as in polystep bench")
    limit = ap.add_mutually_exclusive_group()
    limit.add_argument("--budget-fwd", type=positive_int, default=None, help="forward passes")
    limit.add_argument("--budget-seconds", type=positive_float, default=None, help="seconds")
    ap.add_argument("--k", type=positive_int, default=K, help="configurations per method, task")
    ap.add_argument(
        "--seeds", type=int_list(), default=",".join(map(str, TUNE_SEEDS)), help="tuning seeds"
    )
    ap.add_argument("--threads", type=positive_int, default=1, help="torch CPU threads")
    ap.add_argument("--device", type=torch_device, default="cpu", help="torch device")
    ap.add_argument("--mnist-dir", type=existing_dir, default=None, help="MNIST IDX folder")
    ap.add_argument("--log", type=Path, required=True, help="tuning log (JSON lines, appended)")
    args = ap.parse_args(argv)
    try:
        tasks = resolve_tasks(args.tasks)
    except ValueError as err:
        ap.error(f"argument tasks: {err}")
    torch.set_num_threads(args.threads)
    budget_fwd = UNBOUNDED_FWD if args.budget_seconds is not None else args.budget_fwd
    try:
        lines = tune(
            tasks, args.methods, scale=args.scale, log_path=args.log, k=args.k,
            seeds=tuple(args.seeds), budget_fwd=budget_fwd, budget_seconds=args.budget_seconds,
            device=args.device, mnist_dir=args.mnist_dir,
        )  # fmt: skip
    except ValueError as err:
        ap.error(str(err))
    asked = {
        (t.name, m, budget_fwd or t.scales[args.scale].budget_fwd)
        for t in tasks
        for m in args.methods
    }
    mine = [
        line for line in lines
        if (line["task"], line["method"], line["budget_fwd"]) in asked
        and (line["scale"], line["budget_seconds"]) == (args.scale, args.budget_seconds)
    ]  # fmt: skip
    print(markdown_summary(mine, code_version()["source"]))
    rows = [
        {key: row[key] for key in ("task", "method", "configs", "best_val", "selected", "edge")}
        for row in summarise(mine)
    ]
    config = {
        "tasks": [t.name for t in tasks], "methods": args.methods, "scale": args.scale,
        "budget_fwd": budget_fwd, "budget_seconds": args.budget_seconds, "k": args.k,
        "seeds": args.seeds, "threads": args.threads, "device": args.device,
        "log": str(args.log), "command": " ".join(sys.argv),
    }  # fmt: skip
    print(json.dumps({"config": config, "machine": machine_info(), "selections": rows}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
