"""A hard-threshold spiking network on MNIST, trained with forward passes only.

Model: ``Linear(784, 64) -> LIF -> Linear(64, 10) -> LIF -> spike count`` with direct-current
input over ``T`` steps. The spike is ``1[v >= 1]`` with no surrogate anywhere, so the gradient
of the loss is zero almost everywhere. PolyStep's ``"snn"`` preset searches a factored rank-8
space of the hidden layer (each candidate changes one hidden neuron) on the layered evaluator.

MNIST is read from the four IDX files (plain or ``.gz``) in ``--data``; nothing is downloaded.
The default is ``../shared/data/mnist`` next to the repository. Without the files the script
says so and exits with status 2: it never trains on something else instead.

The model is selected on a validation split carved from the training images; the 10,000-image
test set is scored once, at the end.

    python examples/snn_mnist.py [--data DIR]    # ~90 s of training, writes snn_mnist.png
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import torch
from torch import nn

from polystep import PolyStepOptimizer, TrainConfig, train
from polystep.data import has_idx_files, load_idx_splits, make_loaders
from polystep.nn import SpikingMLP
from polystep.training import evaluate_loader

SMALL = os.environ.get("POLYSTEP_EXAMPLE_SMALL") == "1"
DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mnist"
INIT_GAIN = 3.0  # neurons must fire at the start: a silent net gives nothing to compare


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="MNIST IDX folder")
    parser.add_argument("--seconds", type=float, default=2.0 if SMALL else 90.0)
    parser.add_argument("--train-images", type=int, default=2_000 if SMALL else 20_000)
    parser.add_argument("--test-images", type=int, default=1_000 if SMALL else None)
    parser.add_argument("--hidden", type=int, default=32 if SMALL else 64)
    parser.add_argument("--num-steps", type=int, default=10, help="simulation length T")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("runs/examples"))
    args = parser.parse_args(argv)

    if not has_idx_files(args.data):
        print(
            f"MNIST IDX files not found in {args.data}.\n"
            "Put train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte and "
            "t10k-labels-idx1-ubyte (plain or .gz) there, or pass --data DIR. Nothing was run."
        )
        return 2

    torch.manual_seed(args.seed)
    splits = load_idx_splits(
        args.data,
        val_fraction=0.1,
        seed=args.seed,
        limit=args.train_images,
        test_limit=args.test_images,
    )
    loaders = make_loaders(splits, args.batch_size, seed=args.seed, eval_batch_size=None, fast=True)
    model = SpikingMLP((784, args.hidden, 10), num_steps=args.num_steps)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(INIT_GAIN)
    optimizer = PolyStepOptimizer(model, preset="snn", seed=args.seed)
    loss_fn = nn.CrossEntropyLoss()
    print(
        f"hard-LIF SNN 784-{args.hidden}-10, T={args.num_steps}, MNIST {splits.sizes()}, "
        f"{2 * optimizer.subspace.dim:,} candidates per step, {args.seconds:.0f} s budget"
    )
    config = TrainConfig(epochs=1000, max_seconds=args.seconds, val_every=10, progress=False)
    start = time.perf_counter()
    history = train(model, loaders.train, loss_fn, optimizer, config, val_loader=loaders.val)
    seconds = time.perf_counter() - start
    test = evaluate_loader(model, loaders.test, loss_fn)  # once, after selection
    best_val = max(row.get("val_accuracy", 0.0) for row in history)
    print(
        f"{optimizer.iteration} steps, {optimizer.evaluations:,} forward passes of candidates "
        f"in {seconds:.0f} s"
    )
    print(f"validation accuracy of the selected model: {best_val:.4f}")
    print(f"TEST accuracy ({len(splits.test):,} images, scored once): {test['accuracy']:.4f}")
    png = plot(history, args.out / "snn_mnist.png", test["accuracy"])
    print(f"plot: {png}")
    return 0


def plot(history: list[dict], png: Path, test_accuracy: float) -> Path:
    """Validation accuracy against training time."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot([r["time"] for r in history], [r.get("val_accuracy") for r in history], "o-")
    ax.set_xlabel("training seconds")
    ax.set_ylabel("validation accuracy")
    ax.set_title(f"hard-LIF SNN on MNIST, forward passes only (test {test_accuracy:.1%})")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=110)
    plt.close(fig)
    return png


if __name__ == "__main__":
    raise SystemExit(main())
