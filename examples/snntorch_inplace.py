"""Train an existing snntorch network in place, with forward passes only.

The network is written the way snntorch's tutorials write it: ``nn.Sequential`` of ``Linear``
and ``snntorch.Leaky(init_hidden=True)``, here with ``surrogate_disable=True`` (the hard
Heaviside spike; there is no gradient to follow) and ``reset_mechanism="zero"``.
:func:`polystep.nn.snntorch_adapter.from_snntorch` wraps the network's OWN ``Linear`` layers in
a spiking MLP with the same spikes, so PolyStep trains the snntorch network itself on the fast
layered path. At the end the snntorch network is run with snntorch's own time loop and scored
on the held-out test split: no conversion back is needed.

Data: scikit-learn's bundled 8x8 digits (no download); selection on a validation split, test
scored once.

    python examples/snntorch_inplace.py          # ~60 s
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import torch
from torch import nn

from polystep import PolyStepOptimizer, TrainConfig, train
from polystep.data import load_digits_splits, make_loaders
from polystep.nn.snntorch_adapter import from_snntorch

SMALL = os.environ.get("POLYSTEP_EXAMPLE_SMALL") == "1"


def snntorch_network(hidden: int, seed: int) -> nn.Sequential:
    """``64 -> hidden -> 10`` snntorch net with hard spikes, weights at 3x the default init."""
    import snntorch

    def leaky() -> nn.Module:
        return snntorch.Leaky(
            beta=0.95,
            threshold=1.0,
            reset_mechanism="zero",
            surrogate_disable=True,
            init_hidden=True,
        )

    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(64, hidden), leaky(), nn.Linear(hidden, 10), leaky())
    with torch.no_grad():
        for p in net.parameters():
            p.mul_(3.0)  # neurons fire at the start: a silent net gives nothing to compare
    return net


@torch.no_grad()
def snntorch_accuracy(net: nn.Sequential, x: torch.Tensor, y: torch.Tensor, steps: int) -> float:
    """Accuracy of the snntorch network run by snntorch itself (spike counts over ``steps``)."""
    import snntorch

    for module in net:
        if isinstance(module, snntorch.Leaky):
            module.reset_mem()
    counts = torch.zeros(x.shape[0], 10)
    for _ in range(steps):
        counts += net(x)
    return float((counts.argmax(dim=1) == y).float().mean())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=2.0 if SMALL else 60.0)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--num-steps", type=int, default=10, help="simulation length T")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("runs/examples"))
    args = parser.parse_args(argv)
    try:
        import snntorch  # noqa: F401
    except ImportError:
        print("snntorch is not installed: pip install snntorch (it is in the dev extra).")
        return 2

    splits = load_digits_splits(seed=args.seed)
    loaders = make_loaders(splits, 32, seed=args.seed, eval_batch_size=None, fast=True)
    x_test, y_test = splits.test.tensors
    net = snntorch_network(args.hidden, args.seed)
    before = snntorch_accuracy(net, x_test, y_test, args.num_steps)
    model = from_snntorch(net, num_steps=args.num_steps)  # shares net's Linear layers
    optimizer = PolyStepOptimizer(model, preset="snn", seed=args.seed)
    config = TrainConfig(epochs=1000, max_seconds=args.seconds, val_every=10, progress=False)
    start = time.perf_counter()
    history = train(
        model, loaders.train, nn.CrossEntropyLoss(), optimizer, config, val_loader=loaders.val
    )
    seconds = time.perf_counter() - start
    after = snntorch_accuracy(net, x_test, y_test, args.num_steps)  # the snntorch net itself
    ours = float((model(x_test).argmax(dim=1) == y_test).float().mean())
    print(f"snntorch net 64-{args.hidden}-10 (Leaky, hard spikes), T={args.num_steps}, digits")
    print(
        f"{optimizer.iteration} PolyStep steps, {optimizer.evaluations:,} candidates, "
        f"{seconds:.0f} s"
    )
    print(
        f"validation accuracy of the selected model: {max(r['val_accuracy'] for r in history):.4f}"
    )
    print(f"TEST accuracy of the snntorch network, run by snntorch: {before:.4f} -> {after:.4f}")
    print(f"same network through polystep's spiking MLP: {ours:.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
