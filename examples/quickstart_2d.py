"""Quick start in 2-D: PolyStep particles on the Ackley function, with their paths.

Twelve particles start in a corner of the box [-5, 5]^2, far from the global minimum at the
origin. Every iteration each particle probes the four vertices of a randomly rotated square
(the 2-D orthoplex), weights them with softmax(-cost / epsilon) and moves to the weighted
barycentre; both radii shrink along a cosine schedule. The plot shows the loss landscape and
every particle's path.

    python examples/quickstart_2d.py            # about 2 s, writes runs/examples/quickstart_2d.png
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import torch

from polystep import Ackley, PolyStep
from polystep.epsilon import CosineEpsilon

SMALL = os.environ.get("POLYSTEP_EXAMPLE_SMALL") == "1"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--iterations", type=int, default=20 if SMALL else 80)
    parser.add_argument("--particles", type=int, default=12)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("runs/examples"))
    args = parser.parse_args(argv)

    objective = Ackley(dim=2)
    radius = CosineEpsilon(init=2.0, target=0.01, total_steps=args.iterations)
    solver = PolyStep.create(
        objective,
        epsilon=0.3,  # in units of each step's mean cost spread (scale_cost="mean")
        step_radius=radius,
        probe_radius=radius,
        max_iterations=args.iterations,
        seed=args.seed,
    )
    start = torch.Generator().manual_seed(args.seed)
    x0 = 3.0 + torch.rand(args.particles, 2, generator=start)  # all in [3, 4]^2
    state = solver.init_state(x0)
    paths = [state.positions.clone()]
    while state.iteration < solver.max_iterations:
        solver.step(state)
        paths.append(state.positions.clone())
    path = torch.stack(paths)  # (iterations + 1, particles, 2)

    final = objective(state.positions)
    print(f"Ackley-2D, {args.particles} particles, {args.iterations} iterations")
    print(f"objective evaluations: {state.evaluations:,}")
    print(f"best value found: {state.best_cost:.3g} at {state.best_x.tolist()} (minimum 0 at 0)")
    print(f"final particles: median value {final.median():.3g}, worst {final.max():.3g}")
    png = plot(objective, path, args.out / "quickstart_2d.png")
    print(f"plot: {png}")
    return 0


def plot(objective: Ackley, path: torch.Tensor, png: Path) -> Path:
    """Contours of ``objective`` on [-5, 5]^2 and every particle's path ``(T, N, 2)``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    grid = torch.linspace(-5, 5, 201)
    xx, yy = torch.meshgrid(grid, grid, indexing="xy")
    zz = objective(torch.stack([xx.reshape(-1), yy.reshape(-1)], dim=1)).reshape(xx.shape)
    fig, ax = plt.subplots(figsize=(6, 5.5))
    filled = ax.contourf(xx, yy, zz, levels=30, cmap="viridis")
    fig.colorbar(filled, ax=ax, label="Ackley value")
    for i in range(path.shape[1]):
        ax.plot(path[:, i, 0], path[:, i, 1], "-", color="white", lw=0.8, alpha=0.8)
    ax.plot(path[0, :, 0], path[0, :, 1], "o", color="tab:orange", ms=4, label="start")
    ax.plot(path[-1, :, 0], path[-1, :, 1], "*", color="tab:red", ms=9, label="end")
    ax.set_title("PolyStep particles on Ackley-2D")
    ax.legend(loc="lower left")
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=110)
    plt.close(fig)
    return png


if __name__ == "__main__":
    raise SystemExit(main())
