"""A hard oblique decision tree trained with forward passes only.

Each internal node of a depth-``d`` tree routes a sample right when ``w . x + b > 0`` (an
oblique split: any direction, not just one feature), and each leaf holds class logits. The
routing is a hard threshold, so the loss is piecewise constant in every split weight and
backprop gives them nothing; PolyStep searches all of the tree's numbers at once.

Data: two interleaving half moons with noise (generated and seeded, no download), split into
train / validation / test. scikit-learn's axis-aligned CART tree of the same depth is the
reference. Selection on validation, test scored once.

    python examples/oblique_tree.py              # ~30 s, writes oblique_tree.png
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import TensorDataset

from polystep import PolyStepOptimizer, TrainConfig, train
from polystep.data import Splits, make_loaders
from polystep.training import evaluate_loader

SMALL = os.environ.get("POLYSTEP_EXAMPLE_SMALL") == "1"


class ObliqueTree(nn.Module):
    """Complete binary tree of depth ``depth`` with hard oblique splits.

    Nodes are stored in heap order (children of ``i`` are ``2i + 1`` and ``2i + 2``).

    Shapes: ``(B, features) -> (B, classes)`` logits of the leaf each sample reaches.
    """

    def __init__(self, features: int, classes: int, depth: int) -> None:
        super().__init__()
        nodes, leaves = 2**depth - 1, 2**depth
        self.depth = depth
        self.split = nn.Linear(features, nodes)  # row i: the hyperplane of node i
        self.leaf = nn.Parameter(torch.zeros(leaves, classes))

    def leaf_index(self, x: torch.Tensor) -> torch.Tensor:
        """Index ``(B,)`` of the leaf each sample reaches."""
        right = (self.split(x) > 0).long()  # (B, nodes): every node's decision
        node = torch.zeros(x.shape[0], 1, dtype=torch.long, device=x.device)
        for _ in range(self.depth):
            node = 2 * node + 1 + right.gather(1, node)
        return node[:, 0] - (2**self.depth - 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.leaf[self.leaf_index(x)]


def moons(num: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    from sklearn.datasets import make_moons

    x, y = make_moons(num, noise=0.25, random_state=seed)
    return torch.as_tensor(x, dtype=torch.float32), torch.as_tensor(y)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--depth", type=int, default=3)
    parser.add_argument("--steps", type=int, default=30 if SMALL else 300)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("runs/examples"))
    args = parser.parse_args(argv)

    (x, y), (x_val, y_val), (x_test, y_test) = (
        moons(n, args.seed + k) for k, n in enumerate((1000, 500, 2000))
    )
    splits = Splits(
        TensorDataset(x, y),
        TensorDataset(x_val, y_val),
        TensorDataset(x_test, y_test),
        num_classes=2,
    )
    loaders = make_loaders(splits, 250, seed=args.seed, eval_batch_size=None, fast=True)
    torch.manual_seed(args.seed)
    tree = ObliqueTree(2, 2, args.depth)
    loss_fn = nn.CrossEntropyLoss()
    optimizer = PolyStepOptimizer(tree, seed=args.seed)
    config = TrainConfig(epochs=10_000, max_steps=args.steps, val_every=10, progress=False)
    train(tree, loaders.train, loss_fn, optimizer, config, val_loader=loaders.val)
    ours = evaluate_loader(tree, loaders.test, loss_fn)["accuracy"]

    from sklearn.tree import DecisionTreeClassifier

    cart = DecisionTreeClassifier(max_depth=args.depth, random_state=args.seed).fit(x, y)
    cart_acc = float((torch.as_tensor(cart.predict(x_test)) == y_test).float().mean())
    print(f"two moons, {len(y)} train / {len(y_val)} val / {len(y_test)} test, depth {args.depth}")
    print(f"oblique tree, PolyStep ({optimizer.iteration} steps): TEST accuracy {ours:.4f}")
    print(f"axis-aligned CART tree, same depth (scikit-learn): TEST accuracy {cart_acc:.4f}")
    png = plot(tree, x_test, y_test, args.out / "oblique_tree.png")
    print(f"plot: {png}")
    return 0


@torch.no_grad()
def plot(tree: ObliqueTree, x: torch.Tensor, y: torch.Tensor, png: Path) -> Path:
    """Decision regions of ``tree`` with the test points."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lo, hi = x.min(dim=0).values - 0.5, x.max(dim=0).values + 0.5
    gx, gy = torch.meshgrid(
        torch.linspace(lo[0], hi[0], 300), torch.linspace(lo[1], hi[1], 300), indexing="xy"
    )
    grid = torch.stack([gx.reshape(-1), gy.reshape(-1)], dim=1)
    region = tree(grid).argmax(dim=1).reshape(gx.shape)
    fig, ax = plt.subplots(figsize=(6, 4.5))
    ax.contourf(gx, gy, region, levels=[-0.5, 0.5, 1.5], colors=["#c6dbef", "#fdd0a2"])
    ax.scatter(x[:, 0], x[:, 1], c=y, cmap="coolwarm", s=4)
    ax.set_title(f"hard oblique tree, depth {tree.depth}, trained with PolyStep")
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=110)
    plt.close(fig)
    return png


if __name__ == "__main__":
    raise SystemExit(main())
