"""One default ``step_batch`` of a large MLP (784-4096-2048-10, 11.6M parameters, batch 256).

A model of 10M parameters or more gets the preset's factored space (every candidate touches one
layer) and ``large_blocks_per_step`` random blocks per step (see ``PRESETS`` in
:mod:`polystep.optimizer`). Inputs and labels are random: this times the step, nothing more.
Prints one JSON line: configuration, wall and CPU seconds of each timed step, candidates per
step, and the load average before and after (the machine may be shared).

    python benchmarks/large_model.py [--widths 784 4096 2048 10] [--batch 256] [--steps 2]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import time

import torch
from torch import nn

from polystep import PolyStepOptimizer


def mlp(widths: list[int]) -> nn.Sequential:
    """Linear layers of ``widths`` with a ReLU between each two."""
    layers: list[nn.Module] = []
    for k, (d_in, d_out) in enumerate(itertools.pairwise(widths)):
        layers.append(nn.Linear(d_in, d_out))
        if k < len(widths) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--widths", type=int, nargs="+", default=[784, 4096, 2048, 10])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--steps", type=int, default=2, help="timed steps (after one warm-up)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    torch.manual_seed(args.seed)
    model = mlp(args.widths)
    inputs = torch.randn(args.batch, args.widths[0])
    targets = torch.randint(0, args.widths[-1], (args.batch,))
    loss_fn = nn.CrossEntropyLoss()
    opt = PolyStepOptimizer(model, seed=args.seed)  # every setting at its default
    opt.progress = False  # keep the JSON line alone on the terminal
    load_before = os.getloadavg()
    opt.step_batch(inputs, targets, loss_fn)  # warm-up: evaluator set-up, first allocation
    walls, cpus, losses = [], [], []
    for _ in range(args.steps):
        evals, wall, cpu = opt.evaluations, time.perf_counter(), time.process_time()
        losses.append(opt.step_batch(inputs, targets, loss_fn))
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
        candidates = opt.evaluations - evals
    record = {
        "benchmark": "large_model",
        "widths": args.widths,
        "params": sum(p.numel() for p in model.parameters()),
        "batch": args.batch,
        "seed": args.seed,
        "subspace": repr(opt.subspace),
        "evaluator": opt.evaluator(loss_fn).name,
        "blocks_per_step": opt.blocks_per_step,
        "blocks_total": -(-opt.subspace.dim // opt.subspace.block_dim),
        "candidates_per_step": candidates,
        "step_seconds": [round(w, 2) for w in walls],
        "cpu_seconds": [round(c, 2) for c in cpus],
        "losses": [round(v, 4) for v in losses],
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "load_average_before": [round(v, 2) for v in load_before],
        "load_average_after": [round(v, 2) for v in os.getloadavg()],
        "torch": torch.__version__,
        "python": platform.python_version(),
    }
    print(json.dumps(record))


if __name__ == "__main__":
    main()
