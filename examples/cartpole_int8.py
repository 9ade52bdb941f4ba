"""CartPole with a fully int8 policy (int8 weights and int8 activations), searched by PolyStep.

The policy is ``4 -> 16 -> 2``; every weight tensor is fake-quantized to int8 (one float scale
per tensor) and the hidden pre-activation is rounded to int8 levels, the actions are the argmax.
A tiny change of a weight changes no action at all, so the return is piecewise constant in the
parameters. PolyStep searches a 24-dimensional random subspace of the parameters (redrawn every
step); each candidate is scored by the mean return of 16 episodes that all candidates of the step
share. The environment is polystep's vectorised CartPole (same dynamics and limits as
Gymnasium's ``CartPole-v1``, horizon 500).

The reported return is from 100 HELD-OUT episodes (initial states never used in the search).

    python examples/cartpole_int8.py             # ~30-60 s, writes cartpole_int8.png
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from polystep.problems.rl import (
    evaluate_policy,
    make_env,
    make_policy,
    polystep_preset,
    search_policy,
)

SMALL = os.environ.get("POLYSTEP_EXAMPLE_SMALL") == "1"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--budget",
        type=int,
        default=480 if SMALL else 1_440,
        help="candidate evaluations (each = 16 episodes)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("runs/examples"))
    args = parser.parse_args(argv)

    env = make_env("cartpole")
    policy = make_policy("int8w", env)  # int8 weights and int8 activations
    curve: list[tuple[int, float]] = []
    start = time.perf_counter()
    result = search_policy(
        env,
        policy,
        budget_evals=args.budget,
        seed=args.seed,
        method="polystep",
        preset=polystep_preset("cartpole"),
        callback=lambda step, evals, best: curve.append((evals, best)),
    )
    seconds = time.perf_counter() - start
    held_out = evaluate_policy(env, policy, result.params, seed=args.seed, episodes=100)
    print(f"CartPole, int8 policy ({policy.dim} parameters), budget {args.budget:,} candidates")
    print(f"{result.steps} PolyStep steps, {result.evaluations:,} candidates in {seconds:.1f} s")
    print(
        f"HELD-OUT return over 100 episodes: mean {held_out.mean():.1f}, "
        f"min {held_out.min():.0f}, max {held_out.max():.0f} (500 is the maximum)"
    )
    png = plot(curve, float(held_out.mean()), args.out / "cartpole_int8.png")
    print(f"plot: {png}")
    return 0


def plot(curve: list[tuple[int, float]], held_out: float, png: Path) -> Path:
    """Best search return per step against evaluations, and the held-out mean."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(
        [e for e, _ in curve],
        [b for _, b in curve],
        label="best candidate of the step (16 search episodes)",
    )
    ax.axhline(held_out, color="tab:red", ls="--", label=f"held-out mean {held_out:.0f}")
    ax.set_xlabel("candidate evaluations")
    ax.set_ylabel("return")
    ax.set_ylim(0, 520)
    ax.set_title("CartPole, int8 policy, PolyStep")
    ax.legend(loc="lower right")
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=110)
    plt.close(fig)
    return png


if __name__ == "__main__":
    raise SystemExit(main())
