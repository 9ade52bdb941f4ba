"""The equal-wall-time tables (issue 10, item 2): every method for ``--short`` seconds of
training, then PolyStep and the best gradient-free baseline of each row (by validation) for
``--long`` seconds; 3 seeds, one run at a time, the same ``--threads`` for every method.

Records go to ``OUT/60s`` and ``OUT/300s`` as each run finishes; rerunning the command resumes
(``--resume`` also reruns records of another configuration or code). With ``--tune-log LOG``
each table is preceded by the tuning protocol (``polystep.bench.tuning``: ``--k``
configurations per task and method at that table's budget, logged to LOG, resumable) and runs
the selections; without it every method runs its default settings. Prints the estimated wall
time first and one JSON line with the configuration and the long table's baselines at the end.

    .venv/bin/python benchmarks/equal_time.py all --mnist-dir ../shared/data/mnist \
        --threads 2 --tune-log benchmarks/results/tuning/equal_time.jsonl \
        --out benchmarks/results/equal_time
    .venv/bin/python benchmarks/equal_time.py mlp_mnist --scale smoke --short 2 --long 4 \
        --seeds 0 --out /tmp/equal_time                              # a smoke check
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch

from polystep.bench.equal_time import (
    LONG_SECONDS,
    SHORT_SECONDS,
    estimate_seconds,
    run_protocol,
)
from polystep.bench.outdir import StaleRecordError, ensure_writable
from polystep.bench.runner import machine_info
from polystep.bench.tasks import SCALES, TASKS, resolve_tasks
from polystep.bench.tuning import TUNE_SEEDS, K
from polystep.cliargs import (
    existing_dir,
    int_list,
    parser,
    positive_float,
    positive_int,
)

# Per run, on top of its budget: data loading, validation (20 checks, excluded from the budget)
# and test scoring; 10 s runs of the SNN and MLP rows took 12-24 s of wall at load 13-15.
OVERHEAD_SECONDS = 20.0


def main(argv: list[str] | None = None) -> int:
    ap = parser("benchmarks/equal_time.py", __doc__)
    ap.add_argument("tasks", nargs="+", help=f"task names, or 'all': {', '.join(TASKS)}")
    ap.add_argument("--scale", choices=SCALES, default="cpu", help="as in polystep bench")
    ap.add_argument("--short", type=positive_float, default=SHORT_SECONDS, help="seconds")
    ap.add_argument("--long", type=positive_float, default=LONG_SECONDS, help="seconds")
    ap.add_argument("--seeds", type=int_list(), default="42,123,456", help="comma list")
    ap.add_argument("--threads", type=positive_int, default=2, help="torch threads, every run")
    ap.add_argument("--mnist-dir", type=existing_dir, default=None, help="MNIST IDX folder")
    ap.add_argument("--tune-log", type=Path, default=None, help="tune first, into this log")
    ap.add_argument("--k", type=positive_int, default=K, help="configurations per task, method")
    ap.add_argument("--resume", action="store_true", help="rerun records of other config/code")
    ap.add_argument("--out", type=Path, default=Path("runs/equal_time"), help="output folder")
    args = ap.parse_args(argv)
    try:
        tasks = resolve_tasks(args.tasks)
        ensure_writable(args.out)
    except ValueError as err:
        ap.error(str(err))
    torch.set_num_threads(args.threads)
    per_cell = len(args.seeds) + (0 if args.tune_log is None else args.k * len(TUNE_SEEDS))
    estimate = estimate_seconds(
        len(tasks), per_cell, short=args.short, long=args.long, overhead=OVERHEAD_SECONDS
    )
    print(f"estimated wall time (nothing done yet): {estimate / 3600:.1f} h", flush=True)
    started = time.perf_counter()
    try:
        chosen = run_protocol(
            tasks, args.seeds, out=args.out, scale=args.scale, short=args.short, long=args.long,
            tune_log=args.tune_log, k=args.k, resume=args.resume,
            mnist_dir=args.mnist_dir,
        )  # fmt: skip
    except (StaleRecordError, ValueError) as err:
        ap.error(str(err))
    config = {
        "tasks": [t.name for t in tasks], "scale": args.scale, "short": args.short,
        "long": args.long, "seeds": args.seeds, "threads": args.threads,
        "tune_log": None if args.tune_log is None else str(args.tune_log), "k": args.k,
        "out": str(args.out),
        "command": " ".join(sys.argv),
    }  # fmt: skip
    figures = {
        "long_table_baselines": chosen,
        "estimated_seconds": estimate,
        "seconds_this_invocation": time.perf_counter() - started,
    }
    print(json.dumps({"config": config, "machine": machine_info(), **figures}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
