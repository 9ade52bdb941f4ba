"""Maximise F1 directly: a non-differentiable metric used as the loss.

Task: find the digit 8 among scikit-learn's bundled 8x8 digits (one image in ten is an 8) with
a linear model (two logits, prediction = argmax). The metric that matters is F1, but F1 of hard
predictions is a ratio of counts: piecewise constant in the weights, no gradient anywhere. The
usual route trains on cross-entropy instead and hopes F1 follows. Here:

1. Adam on cross-entropy (full batch), weights with the best validation F1 kept;
2. PolyStep on ``1 - F1`` itself, starting from the Adam model: forward passes only, on the
   whole training set each step (the F1 of a small batch is too noisy to rank candidates).

Both are selected on validation F1 (a quarter of the non-test images, for a less noisy count);
test F1 is scored once per model. From a random start the search is much slower: a model that
predicts no positive has F1 = 0 for every nearby candidate, a flat region with nothing to
compare, so start from a cheap smooth solution as here.

    python examples/f1_direct.py                 # ~1 min
"""

from __future__ import annotations

import argparse
import copy
import os
from pathlib import Path

import torch
from torch import nn

from polystep import PolyStepOptimizer, TrainConfig, train
from polystep.data import Splits, load_digits_splits, make_loaders
from polystep.schedules import Constant

SMALL = os.environ.get("POLYSTEP_EXAMPLE_SMALL") == "1"
POSITIVE = 8


def f1_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """``1 - F1`` of ``argmax(logits (B, 2))`` against 0/1 ``targets (B,)``: a 0-d tensor."""
    pred = logits.argmax(dim=-1)
    tp = ((pred == 1) & (targets == 1)).sum()
    fp = ((pred == 1) & (targets == 0)).sum()
    fn = ((pred == 0) & (targets == 1)).sum()
    return 1.0 - 2.0 * tp / (2.0 * tp + fp + fn).clamp(min=1)


def binary_splits(seed: int) -> Splits:
    """Digits relabelled ``1`` for the digit ``POSITIVE``, ``0`` otherwise."""
    splits = load_digits_splits(val_fraction=0.25, seed=seed)
    for ds in (splits.train, splits.val, splits.test):
        x, y = ds.tensors
        ds.tensors = (x, (y == POSITIVE).long())
    return splits


@torch.no_grad()
def f1_of(model: nn.Module, dataset: torch.utils.data.TensorDataset) -> float:
    x, y = dataset.tensors
    return 1.0 - float(f1_loss(model(x), y))


def adam_cross_entropy(model: nn.Module, splits: Splits, steps: int) -> nn.Module:
    """Full-batch Adam on cross-entropy; the weights with the best validation F1 are kept."""
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    x, y = splits.train.tensors
    best, best_state = -1.0, None
    for _ in range(steps):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        score = f1_of(model, splits.val)
        if score > best:
            best, best_state = score, copy.deepcopy(model.state_dict())
    model.load_state_dict(best_state)
    return model


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--adam-steps", type=int, default=50 if SMALL else 500)
    parser.add_argument("--polystep-steps", type=int, default=10 if SMALL else 150)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("runs/examples"))
    args = parser.parse_args(argv)

    splits = binary_splits(args.seed)
    full_batch = len(splits.train)
    loaders = make_loaders(splits, full_batch, seed=args.seed, eval_batch_size=None, fast=True)
    positives = int(splits.train.tensors[1].sum())
    print(f"digit {POSITIVE} vs rest: {positives} positives in {full_batch} training images")

    torch.manual_seed(args.seed)
    model = adam_cross_entropy(nn.Sequential(nn.Linear(64, 2)), splits, args.adam_steps)
    adam_test = f1_of(model, splits.test)
    # Small radii: the start is already good, and all 65 blocks of the full space move at once.
    optimizer = PolyStepOptimizer(
        model,
        seed=args.seed,
        epsilon=0.1,
        step_radius=Constant(value=0.01),  # distances in search coordinates
        probe_radius=Constant(value=0.1),
        scale_cost="mean",
    )
    config = TrainConfig(epochs=args.polystep_steps, val_every=5, select_on="loss", progress=False)
    train(model, loaders.train, f1_loss, optimizer, config, val_loader=loaders.val)
    print(f"Adam on cross-entropy ({args.adam_steps} steps):   TEST F1 {adam_test:.4f}")
    print(
        f"then PolyStep on 1 - F1 ({optimizer.iteration} steps, "
        f"{optimizer.evaluations:,} candidates): TEST F1 {f1_of(model, splits.test):.4f}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
