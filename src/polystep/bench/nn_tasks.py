"""``polystep bench TASK... [options]`` and ``polystep bench report DIR``: the NN task table."""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from polystep.bench.methods import METHODS
from polystep.bench.report import write_report
from polystep.bench.runner import run_bench
from polystep.bench.tasks import SCALES, TASKS, resolve_tasks


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v]


def main(argv: list[str]) -> int:
    if argv[:1] == ["report"]:
        if len(argv) != 2:
            raise SystemExit("usage: polystep bench report DIR")
        print(write_report(Path(argv[1])).read_text())
        return 0
    parser = argparse.ArgumentParser(
        prog="polystep bench", description=f"tasks: all, {', '.join(TASKS)}"
    )
    parser.add_argument("tasks", nargs="+", help="task names, or 'all'")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--seeds", type=_ints, default=[42, 123, 456])
    limit = parser.add_mutually_exclusive_group()
    limit.add_argument("--budget-fwd", type=int, default=None, help="forward passes per run")
    limit.add_argument("--budget-seconds", type=float, default=None, help="wall seconds per run")
    parser.add_argument("--scale", choices=SCALES, default="smoke")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--mnist-dir", default=None, help="MNIST IDX folder")
    parser.add_argument("--out", type=Path, default=Path("runs/bench"))
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = parser.parse_args(argv)
    methods = [m for m in args.methods.split(",") if m]
    for m in methods:
        if m not in METHODS:
            parser.error(f"--methods must be a comma list of {METHODS}, got {m!r}")
    try:
        tasks = resolve_tasks(args.tasks)
    except ValueError as err:
        parser.error(str(err))
    torch.set_num_threads(args.threads)
    budget_fwd = args.budget_fwd
    if args.budget_seconds is not None:  # a wall limit alone: forward passes unbounded
        budget_fwd = 10**15
    run_bench(
        tasks, methods, args.seeds, scale=args.scale, out_dir=args.out, budget_fwd=budget_fwd,
        budget_seconds=args.budget_seconds, device=args.device, mnist_dir=args.mnist_dir,
    )  # fmt: skip
    print(write_report(args.out).read_text())
    return 0
