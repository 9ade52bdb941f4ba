"""MAX-SAT from a DIMACS file, with python-sat's RC2 as the exact reference.

PolyStep searches ``theta`` with the assignment ``1[theta > 0]``: a staircase objective (the
weight of unsatisfied clauses) that no gradient can see. Each candidate flips at most a couple
of variables, so it is scored exactly by re-counting only the clauses that touch them.

Input: ``--instance FILE`` (DIMACS CNF or WCNF, plain / .gz / .xz), e.g. one of
``../shared/data/maxsat/satlib/*.cnf``. Without it the script generates a seeded random
over-constrained 3-SAT instance (80 variables, 480 clauses: unsatisfiable, so the optimum cost
is above zero), writes it as DIMACS and reads the file back: it needs no data folder.

RC2 (core-guided, exact) proves the optimum; keep instances small for it (``--no-exact``
skips it).

    python examples/maxsat_dimacs.py [--instance FILE]    # ~30-60 s, writes maxsat.png
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from polystep.problems.maxsat import (
    MaxSATInstance,
    random_ksat,
    read_dimacs,
    satisfied_fraction,
    solve_maxsat,
    write_dimacs,
)

SMALL = os.environ.get("POLYSTEP_EXAMPLE_SMALL") == "1"


def exact_optimum(instance: MaxSATInstance) -> tuple[float, float]:
    """Optimal cost (weight of unsatisfied soft clauses) by RC2, and the seconds it took."""
    from pysat.examples.rc2 import RC2
    from pysat.formula import WCNF

    wcnf = WCNF()
    for clause, weight, hard in zip(
        instance.clause_lists(), instance.weights, instance.hard, strict=True
    ):
        if hard:
            wcnf.append(clause)
        else:
            wcnf.append(clause, weight=int(weight))
    start = time.perf_counter()
    with RC2(wcnf) as rc2:
        if rc2.compute() is None:
            raise ValueError("the hard clauses are unsatisfiable: no MAX-SAT optimum exists")
        return float(rc2.cost), time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--instance", type=Path, help="DIMACS CNF/WCNF (default: generated)")
    parser.add_argument(
        "--budget",
        type=int,
        default=5_000 if SMALL else 50_000,
        help="objective evaluations for PolyStep",
    )
    parser.add_argument("--no-exact", action="store_true", help="skip the RC2 reference")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("runs/examples"))
    args = parser.parse_args(argv)

    path = args.instance
    if path is None:
        num_vars = 40 if SMALL else 80
        path = args.out / f"random-3sat-n{num_vars}-m{6 * num_vars}.cnf"
        path.parent.mkdir(parents=True, exist_ok=True)
        write_dimacs(random_ksat(num_vars, num_clauses=6 * num_vars, seed=args.seed), path)
    instance = read_dimacs(path)
    print(
        f"{path}: {instance.num_vars} variables, {instance.num_clauses} clauses "
        f"({int(instance.hard.sum())} hard)"
    )

    result = solve_maxsat(instance, budget_evals=args.budget, seed=args.seed)
    fraction = satisfied_fraction(instance, result.best_cost)
    print(
        f"PolyStep: cost {result.best_cost:g} ({fraction:.2%} of soft weight satisfied), "
        f"{result.evaluations:,} evaluations, {result.steps} steps, {result.wall_s:.1f} s"
    )
    optimum = None
    if not args.no_exact:
        optimum, seconds = exact_optimum(instance)
        gap = result.best_cost - optimum
        print(f"RC2 exact optimum: cost {optimum:g} in {seconds:.1f} s; PolyStep gap {gap:g}")
    png = plot(result.history, optimum, args.out / "maxsat.png")
    print(f"plot: {png}")
    return 0


def plot(history: list[tuple[int, float, float]], optimum: float | None, png: Path) -> Path:
    """Best and incumbent cost against evaluations, with the exact optimum."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    evals = [h[0] for h in history]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(evals, [h[2] for h in history], lw=0.8, alpha=0.6, label="incumbent")
    ax.plot(evals, [h[1] for h in history], lw=1.5, label="best so far")
    if optimum is not None:
        ax.axhline(optimum, color="black", ls="--", label=f"RC2 optimum {optimum:g}")
    ax.set_xscale("log")
    ax.set_xlabel("objective evaluations")
    ax.set_ylabel("unsatisfied weight")
    ax.set_title("MAX-SAT with PolyStep")
    ax.legend()
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=110)
    plt.close(fig)
    return png


if __name__ == "__main__":
    raise SystemExit(main())
