"""``polystep demo snn``: a hard-threshold spiking network trained with forward passes only.

Model: ``Linear(64, H) -> LIF -> Linear(H, 10) -> LIF -> spike count`` on scikit-learn's 8x8
digits, with the authors' neuron (``v <- 0.95 v + I``, spike ``1[v >= 1]``, reset to 0, no
surrogate anywhere), direct-current input over ``T`` steps and spike counts as logits. The
gradient is zero almost everywhere, so gradient descent cannot train it as is.

Search space: a factored rank-8 space for the hidden layer (each candidate changes one hidden
unit, so the layered evaluator propagates one unit, not H) and direct search of the small output
layer, redrawn every 5 steps. The weights start 3x PyTorch's default scale so that neurons fire
at initialisation: a silent network gives a forward-only optimizer nothing to compare.

Selection uses the validation split only; the test split is scored once, at the end.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch
from torch import nn

from polystep.bench.outdir import ensure_writable
from polystep.cliargs import nonneg_int, parser, positive_float, positive_int
from polystep.data import load_digits_splits, make_loaders
from polystep.nn import SpikingMLP
from polystep.optimizer import PolyStepOptimizer
from polystep.training import TrainConfig, evaluate_loader, train

INIT_GAIN = 3.0


def build_model(hidden: int, num_steps: int, seed: int) -> SpikingMLP:
    """Hard-LIF ``64-hidden-10`` network, weights at ``INIT_GAIN`` x the default init."""
    torch.manual_seed(seed)
    model = SpikingMLP((64, hidden, 10), num_steps=num_steps)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(INIT_GAIN)
    return model


def plot(history: list[dict], path: Path, title: str) -> None:
    """Train loss and validation accuracy against wall time, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = [row["time"] for row in history]
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(t, [row["train_loss"] for row in history], color="tab:blue", label="train loss")
    ax.set_xlabel("seconds")
    ax.set_ylabel("train loss (cross-entropy of spike counts)", color="tab:blue")
    acc = ax.twinx()
    acc.plot(t, [row.get("val_accuracy", float("nan")) for row in history], color="tab:red")
    acc.set_ylabel("validation accuracy", color="tab:red")
    acc.set_ylim(0, 1)
    ax.set_title(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = parser("polystep demo snn", __doc__)
    ap.add_argument("--seconds", type=positive_float, default=90.0, help="training time budget")
    ap.add_argument("--hidden", type=positive_int, default=64, help="hidden LIF neurons")
    ap.add_argument("--num-steps", type=positive_int, default=10, help="simulation length T")
    ap.add_argument("--batch-size", type=positive_int, default=32, help="training batch size")
    ap.add_argument("--seed", type=nonneg_int, default=0, help="seed of data split, init, search")
    ap.add_argument("--threads", type=positive_int, default=1, help="torch CPU threads")
    ap.add_argument("--out", type=Path, default=Path("runs/demo"), help="folder for PNG and CSV")
    ap.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = ap.parse_args(argv)
    try:
        ensure_writable(args.out)
    except ValueError as err:
        ap.error(f"argument --out: {err}")
    torch.set_num_threads(args.threads)

    splits = load_digits_splits(seed=args.seed)
    loaders = make_loaders(splits, args.batch_size, seed=args.seed, eval_batch_size=None, fast=True)
    model = build_model(args.hidden, args.num_steps, args.seed)
    optimizer = PolyStepOptimizer(model, preset="snn", seed=args.seed)  # factored rank-8 space
    print(
        f"hard-LIF SNN 64-{args.hidden}-10, T={args.num_steps}, digits "
        f"{splits.sizes()}; {len(optimizer.subspace.segments)} segments, "
        f"{2 * optimizer.subspace.dim} candidates per step; budget {args.seconds:.0f} s"
    )
    config = TrainConfig(
        epochs=10_000,
        max_seconds=args.seconds,
        val_every=10,
        metrics_csv=args.out / "snn_metrics.csv",
        progress=not args.no_progress,
    )
    start = time.perf_counter()
    history = train(
        model, loaders.train, nn.CrossEntropyLoss(), optimizer, config, val_loader=loaders.val
    )
    elapsed = time.perf_counter() - start
    val = evaluate_loader(model, loaders.val, nn.CrossEntropyLoss())
    test = evaluate_loader(model, loaders.test, nn.CrossEntropyLoss())
    png = args.out / "snn.png"
    plot(history, png, f"hard-LIF SNN on digits: test accuracy {test['accuracy']:.1%}")
    rate = optimizer.evaluations / max(elapsed, 1e-9)
    print(
        f"done in {elapsed:.1f} s: {optimizer.iteration} steps, {optimizer.evaluations:,} "
        f"candidate evaluations ({rate:,.0f}/s)"
    )
    print(f"validation accuracy (selected model): {val['accuracy']:.4f}")
    print(f"test accuracy (selected on validation): {test['accuracy']:.4f}")
    print(f"plot: {png}  metrics: {config.metrics_csv}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
