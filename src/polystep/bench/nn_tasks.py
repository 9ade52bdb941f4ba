"""``polystep bench TASK... [options]`` and ``polystep bench report DIR | --readme FILE``.

Runs every task x method x seed under one protocol (validation-selected model, test split scored
once) and writes one JSON file per run plus report.md and accuracy curves to --out. A run already
in --out under the same configuration and code version is skipped; one under another
configuration or made by other code stops the bench before any training, unless --resume is
given: then it is rerun and the old file kept in --out/stale/. --tuned LOG runs each method with
the configuration a tuning log (benchmarks/tune.py) selected on validation at the same scale and
budget.

At scale smoke (the default) every task trains on scikit-learn's bundled 8x8 digits, whatever its
name says; scales cpu and full read MNIST / Fashion-MNIST IDX files (--mnist-dir).
"""

from __future__ import annotations

from pathlib import Path

import torch

from polystep.bench.methods import METHODS
from polystep.bench.outdir import StaleRecordError, ensure_writable
from polystep.bench.readme import update_readme
from polystep.bench.report import write_report
from polystep.bench.runner import UNBOUNDED_FWD, run_bench
from polystep.bench.tasks import SCALES, TASKS, resolve_tasks
from polystep.bench.tuning import tuned_overrides
from polystep.cliargs import (
    choice_list,
    existing_dir,
    existing_file,
    int_list,
    parser,
    positive_float,
    positive_int,
    torch_device,
)
from polystep.data import has_idx_files
from polystep.distributed import is_writer


def _report(argv: list[str]) -> int:
    ap = parser(
        "polystep bench report",
        "Aggregate a task-table folder into report.md (rows of other code marked stale), or "
        "regenerate the record tables of a README (blocks between <!-- KIND:ARG --> and "
        "<!-- end -->, from the results/ folder beside it).",
    )
    where = ap.add_mutually_exclusive_group(required=True)
    where.add_argument("dir", nargs="?", type=existing_dir, help="folder of run JSON files")
    where.add_argument("--readme", type=existing_file, help="README to regenerate in place")
    args = ap.parse_args(argv)
    try:
        if args.readme is not None:
            changed = update_readme(args.readme)
            print(f"{args.readme}: {'regenerated' if changed else 'already current'}")
        else:
            print(write_report(args.dir).read_text())
    except (FileNotFoundError, ValueError) as err:
        ap.error(str(err))
    return 0


def main(argv: list[str]) -> int:
    if argv[:1] == ["report"]:
        return _report(argv[1:])
    ap = parser("polystep bench", __doc__)
    ap.add_argument("tasks", nargs="+", help=f"task names, or 'all': {', '.join(TASKS)}")
    ap.add_argument(
        "--methods", type=choice_list(METHODS), default=",".join(METHODS),
        help=f"comma list of {', '.join(METHODS)}",
    )  # fmt: skip
    ap.add_argument("--seeds", type=int_list(), default="42,123,456", help="comma list")
    limit = ap.add_mutually_exclusive_group()
    limit.add_argument(
        "--budget-fwd", type=positive_int, default=None,
        help="forward passes per run (default: the scale's budget of each task)",
    )  # fmt: skip
    limit.add_argument(
        "--budget-seconds", type=positive_float, default=None, help="wall seconds per run"
    )
    ap.add_argument(
        "--scale", choices=SCALES, default="smoke",
        help="smoke: digits, small budgets; cpu: 20k MNIST images; full: the paper's budgets",
    )  # fmt: skip
    ap.add_argument("--device", type=torch_device, default="cpu", help="torch device")
    ap.add_argument("--mnist-dir", type=existing_dir, default=None, help="MNIST IDX folder")
    ap.add_argument("--out", type=Path, default=Path("runs/bench"), help="output folder")
    ap.add_argument("--threads", type=positive_int, default=1, help="torch CPU threads")
    ap.add_argument(
        "--resume", action="store_true",
        help="rerun records in --out whose configuration or code version differs",
    )  # fmt: skip
    ap.add_argument(
        "--tuned", type=existing_file, default=None,
        help="tuning log: run each method with its validation-selected configuration",
    )  # fmt: skip
    args = ap.parse_args(argv)
    try:
        tasks = resolve_tasks(args.tasks)
    except ValueError as err:
        ap.error(f"argument tasks: {err}")
    if args.mnist_dir is not None and not has_idx_files(args.mnist_dir):
        ap.error(f"argument --mnist-dir: no MNIST IDX files in {str(args.mnist_dir)!r}")
    try:
        ensure_writable(args.out)
    except ValueError as err:
        ap.error(f"argument --out: {err}")
    torch.set_num_threads(args.threads)
    budget_fwd = args.budget_fwd
    if args.budget_seconds is not None:  # a wall limit alone: forward passes unbounded
        budget_fwd = UNBOUNDED_FWD
    overrides = None
    if args.tuned is not None:
        try:
            overrides = tuned_overrides(
                args.tuned, tasks, args.methods, scale=args.scale, budget_fwd=budget_fwd,
                budget_seconds=args.budget_seconds,
            )  # fmt: skip
        except ValueError as err:
            ap.error(f"argument --tuned: {err}")
    try:
        run_bench(
            tasks, args.methods, args.seeds, scale=args.scale, out_dir=args.out,
            budget_fwd=budget_fwd, budget_seconds=args.budget_seconds, device=args.device,
            mnist_dir=args.mnist_dir, overrides=overrides, resume=args.resume,
        )  # fmt: skip
    except StaleRecordError as err:
        ap.error(f"argument --out: {err} (or rerun it with --resume)")
    if is_writer():  # under torchrun: rank 0 writes the report
        print(write_report(args.out).read_text())
    return 0
