"""Why a spiking run collapses: per-class figures of the validation-selected model (issue 10).

Reruns one run of ``benchmarks/snn_schedules.py`` (same task, arm, targets, seed, budget and
thread count: a run is reproducible only at the thread count it was logged with) and reads the
validation-selected model's output layer on the validation split: for each class its recall,
the share of images predicted as it, the mean spike count of its output neuron, the share of
images on which that neuron spikes at all, and whether it never spikes. A silent output neuron
loses its whole class (the spike counts tie at 0 and argmax takes the lowest class). Validation
only: the test split is never read. One JSON line.

    .venv/bin/python benchmarks/output_silence.py --arm decay_step --seed 3 \
        --step-target 0.05 --budget-fwd 3000000 --mnist-dir ../shared/data/mnist
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import snn_schedules
from polystep.bench.runner import train_one
from polystep.bench.tasks import TASKS, load_task_data
from polystep.cliargs import existing_dir, parser, positive_float, positive_int


def class_figures(counts: torch.Tensor, labels: torch.Tensor) -> dict[str, list[float]]:
    """Per-class figures of output spike counts ``counts`` (N, C) against ``labels`` (N,)."""
    predicted = counts.argmax(dim=1)
    classes = range(counts.shape[1])

    def share(mask: torch.Tensor) -> float:
        return round(float(mask.float().mean()), 4) if mask.numel() else float("nan")

    return {
        "recall": [share(predicted[labels == k] == k) for k in classes],
        "predicted_share": [share(predicted == k) for k in classes],
        "mean_count": [round(float(counts[:, k].float().mean()), 3) for k in classes],
        "spiking_share": [share(counts[:, k] > 0) for k in classes],
        "never_spikes": [bool((counts[:, k] == 0).all()) for k in classes],
    }


def run(args: Any) -> dict[str, Any]:
    """Train the logged run again; the selected model's per-class validation figures."""
    task = TASKS[args.task]
    splits = load_task_data(task, "full", args.seed, mnist_dir=args.mnist_dir)
    overrides = snn_schedules.arm_overrides(
        args.arm, args.step_target, args.eps_target, args.task, args.probe_target
    )
    trained = train_one(
        task, "polystep", args.seed, splits, scale="full", budget_fwd=args.budget_fwd,
        budget_seconds=None, device="cpu", overrides=overrides,
    )  # fmt: skip
    model = trained.model
    if trained.selector.best_state is not None:
        model.load_state_dict(trained.selector.best_state)
    with torch.no_grad():
        counts = torch.cat([model(x) for x, _ in trained.loaders.val])
    labels = torch.cat([y for _, y in trained.loaders.val])
    accuracy = float((counts.argmax(dim=1) == labels).float().mean())
    return {
        "task": args.task, "arm": args.arm, "seed": args.seed, "budget_fwd": args.budget_fwd,
        "threads": args.threads, "schedules": snn_schedules.state_dicts(overrides),
        "val_acc_selected": round(accuracy, 4), "selected_step": trained.selector.best_step,
        **class_figures(counts, labels),
    }  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    ap = parser("benchmarks/output_silence.py", __doc__)
    ap.add_argument("--task", choices=sorted(TASKS), default=snn_schedules.TASK)
    ap.add_argument("--arm", choices=snn_schedules.ARMS, default="decay_both")
    ap.add_argument("--seed", type=int, default=1, help="split and init seed")
    ap.add_argument("--budget-fwd", type=positive_int, default=3_000_000, help="forward passes")
    ap.add_argument("--step-target", type=positive_float, default=None)
    ap.add_argument("--eps-target", type=positive_float, default=None)
    ap.add_argument("--probe-target", type=positive_float, default=None)
    ap.add_argument("--threads", type=positive_int, default=1, help="as the logged run had")
    ap.add_argument("--mnist-dir", type=existing_dir, default=None, help="MNIST IDX folder")
    args = ap.parse_args(argv)
    try:
        snn_schedules.arm_overrides(
            args.arm, args.step_target, args.eps_target, args.task, args.probe_target
        )
    except ValueError as err:
        ap.error(str(err))
    torch.set_num_threads(args.threads)
    print(json.dumps(run(args)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
