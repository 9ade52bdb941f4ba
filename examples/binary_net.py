"""A binary-weight network trained without straight-through estimators.

Every weight of ``BinaryLinear`` is used as ``scale * sign(w)`` (+-1 times a fixed scale), so the
loss is piecewise constant in ``w`` and backprop gives the weights no gradient at all (checked
below). The usual fix is a straight-through estimator (STE): pretend the sign was the identity
on the way back. PolyStep needs no such pretence: it only compares losses of candidate weights.

For reference the same network is also trained with Adam + STE for the same wall time. Data:
scikit-learn's bundled 8x8 digits; selection on validation, test scored once per method.

    python examples/binary_net.py                # ~2 x 40 s
"""

from __future__ import annotations

import argparse
import copy
import os
import time
from pathlib import Path

import torch
from torch import nn

from polystep import PolyStepOptimizer, TrainConfig, train
from polystep.data import load_digits_splits, make_loaders
from polystep.nn import binary_mlp, set_surrogate
from polystep.training import evaluate_loader

SMALL = os.environ.get("POLYSTEP_EXAMPLE_SMALL") == "1"


def weight_gradients(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> list[float]:
    """Largest |gradient| of each layer's weight after one backward pass of the hard model."""
    model.zero_grad()
    nn.functional.cross_entropy(model(x), y).backward()
    grads = [m.weight.grad for m in model.modules() if isinstance(m, nn.Linear)]
    return [0.0 if g is None else float(g.abs().max()) for g in grads]


def adam_ste(model: nn.Module, loaders, seconds: float, seed: int) -> nn.Module:
    """Adam through straight-through estimators, best validation accuracy kept."""
    torch.manual_seed(seed)
    model = set_surrogate(copy.deepcopy(model), "ste")
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = nn.CrossEntropyLoss()
    best, best_state, start = -1.0, None, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for x, y in loaders.train:
            opt.zero_grad()
            loss_fn(model(x), y).backward()
            opt.step()
        acc = evaluate_loader(model, loaders.val, loss_fn)["accuracy"]
        if acc > best:
            best, best_state = acc, copy.deepcopy(model.state_dict())
    model.load_state_dict(best_state)
    return set_surrogate(model, False)  # evaluated as the hard binary network


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=2.0 if SMALL else 40.0)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("runs/examples"))
    args = parser.parse_args(argv)

    splits = load_digits_splits(seed=args.seed)
    loaders = make_loaders(splits, 64, seed=args.seed, eval_batch_size=None, fast=True)
    torch.manual_seed(args.seed)
    model = binary_mlp((64, args.hidden, 10))  # hard: sign weights, no STE
    x, y = splits.train.tensors
    grads = weight_gradients(model, x[:256], y[:256])
    print(f"binary MLP 64-{args.hidden}-10 on digits {splits.sizes()}")
    print(f"backprop through the hard model: max |d loss / d weight| per layer = {grads}")

    initial = copy.deepcopy(model)
    loss_fn = nn.CrossEntropyLoss()
    optimizer = PolyStepOptimizer(model, preset="quantized", seed=args.seed)
    config = TrainConfig(epochs=1000, max_seconds=args.seconds, val_every=10, progress=False)
    train(model, loaders.train, loss_fn, optimizer, config, val_loader=loaders.val)
    polystep_test = evaluate_loader(model, loaders.test, loss_fn)["accuracy"]
    ste = adam_ste(initial, loaders, args.seconds, args.seed)
    ste_test = evaluate_loader(ste, loaders.test, loss_fn)["accuracy"]
    print(
        f"PolyStep ({optimizer.iteration} steps, {args.seconds:.0f} s): "
        f"TEST accuracy {polystep_test:.4f}"
    )
    print(f"Adam + straight-through estimator ({args.seconds:.0f} s): TEST accuracy {ste_test:.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
