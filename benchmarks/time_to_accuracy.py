"""Test accuracy after one tenth of the authors' CPU time (issue 3's time-to-accuracy goal).

The authors' package on this 2-core CPU, 1 thread, digits (``../shared`` reference figures):
hard-LIF SNN 64-64-10, T=15: 56.4 % test after 193 s; MLP 64-128-10: 95.6 % test after 44 s.
A 10x shorter time-to-accuracy means reaching those figures in 19.3 s and 4.4 s. Each run here
trains for exactly that wall time with :func:`polystep.train` (validation selection; the test
split is scored once, at the end) and prints one JSON line.

    .venv/bin/python benchmarks/time_to_accuracy.py --seeds 42,123,456
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import torch
from torch import nn

from polystep import PolyStepOptimizer, TrainConfig, train
from polystep.bench.runner import machine_info
from polystep.data import load_digits_splits, make_loaders
from polystep.demos.snn import build_model
from polystep.nn import mlp
from polystep.training import evaluate_loader

# name: (authors' test accuracy, authors' seconds, batch size)
ANCHORS = {"snn": (0.564, 193.0, 32), "mlp": (0.956, 44.0, 64)}


def run(name: str, seed: int, speedup: float) -> dict:
    target, authors_s, batch_size = ANCHORS[name]
    seconds = authors_s / speedup
    splits = load_digits_splits(seed=seed)
    loaders = make_loaders(splits, batch_size, seed=seed, eval_batch_size=None, fast=True)
    if name == "snn":
        model = build_model(hidden=64, num_steps=15, seed=seed)
        optimizer = PolyStepOptimizer(model, preset="snn", seed=seed)
    else:
        torch.manual_seed(seed)
        model = mlp((64, 128, 10))
        optimizer = PolyStepOptimizer(model, preset="default", seed=seed)
    config = TrainConfig(epochs=10**6, max_seconds=seconds, val_every=10, progress=False)
    started = time.perf_counter()
    train(model, loaders.train, nn.CrossEntropyLoss(), optimizer, config, val_loader=loaders.val)
    elapsed = time.perf_counter() - started
    test = evaluate_loader(model, loaders.test, nn.CrossEntropyLoss())["accuracy"]
    return {
        "model": "hard-LIF SNN 64-64-10 T=15" if name == "snn" else "MLP 64-128-10",
        "seed": seed,
        "time_budget_s": round(seconds, 2),
        "wall_s": round(elapsed, 2),
        "steps": optimizer.iteration,
        "evaluations": optimizer.evaluations,
        "test_acc": test,
        "authors_test_acc": target,
        "authors_seconds": authors_s,
        "reached": test >= target,
        "batch_size": batch_size,
        "machine": machine_info(),
        "command": " ".join(sys.argv),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--models", default="snn,mlp")
    parser.add_argument("--seeds", default="42,123,456")
    parser.add_argument("--speedup", type=float, default=10.0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    for name in args.models.split(","):
        for seed in (int(s) for s in args.seeds.split(",")):
            print(json.dumps(run(name, seed, args.speedup)), flush=True)


if __name__ == "__main__":
    main()
