"""Validation runs behind the MAX-SAT preset rule (``preset_for_budget``), never on reported seeds.

Random 3-SAT (``--kind random``, ratio 4.27) or a random Max-Cut encoding (``--kind maxcut``:
``--edges`` random edges on ``--vars`` nodes, clauses ``(x | y)`` and ``(-x | -y)`` per edge).
Each JSON config overrides fields of the rule's preset; ``"es"`` runs OpenAI-ES instead.

    python benchmarks/maxsat_preset_tuning.py --vars 100000 --budget 20000 --instance-seed 1000 \
        --configs '[{}, {"group_size_final": 1}, "es"]'
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace

import numpy as np
import torch

from polystep.problems.maxsat import (
    DeltaEvaluator,
    MaxSATInstance,
    random_ksat,
    satisfied_fraction,
    solve_maxsat,
    solve_maxsat_openai_es,
)
from polystep.problems.maxsat.solve import preset_for_budget


def random_maxcut(nodes: int, edges: int, seed: int) -> MaxSATInstance:
    """Max-Cut of a random simple graph as MAX-2-SAT: each edge gives ``(x|y)`` and ``(-x|-y)``."""
    rng = np.random.default_rng(seed)
    pairs: set[tuple[int, int]] = set()
    while len(pairs) < edges:
        a, b = sorted(int(v) for v in rng.choice(nodes, size=2, replace=False))
        pairs.add((a + 1, b + 1))
    ab = np.array(sorted(pairs), dtype=np.int32)
    literals = np.concatenate([ab, -ab])
    return MaxSATInstance(
        num_vars=nodes,
        literals=literals,
        weights=np.ones(len(literals)),
        hard=np.zeros(len(literals), dtype=bool),
        name=f"maxcut-{nodes}-{edges}-s{seed}",
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--kind", choices=["random", "maxcut"], default="random")
    ap.add_argument("--vars", type=int, required=True)
    ap.add_argument("--edges", type=int, default=0)
    ap.add_argument("--budget", type=int, required=True)
    ap.add_argument("--instance-seed", type=int, default=1000)
    ap.add_argument("--seeds", default="7,8")
    ap.add_argument("--configs", default="[{}]")
    args = ap.parse_args()
    torch.set_num_threads(1)
    if args.kind == "random":
        inst = random_ksat(args.vars, ratio=4.27, seed=args.instance_seed)
    else:
        inst = random_maxcut(args.vars, args.edges, args.instance_seed)
    evaluator = DeltaEvaluator(inst, 2)
    for config in json.loads(args.configs):
        for seed in (int(s) for s in args.seeds.split(",")):
            t0 = time.perf_counter()
            if config == "es":
                res = solve_maxsat_openai_es(inst, budget_evals=args.budget, seed=seed)
            else:
                preset = replace(preset_for_budget(inst.num_vars, args.budget), **config)
                res = solve_maxsat(
                    inst, budget_evals=args.budget, seed=seed, preset=preset, evaluator=evaluator
                )
            print(
                f"{inst.name} {json.dumps(config)} seed {seed}: best {res.best_cost:g} "
                f"({100 * satisfied_fraction(inst, res.best_cost):.3f} %), final "
                f"{res.incumbent_cost:g}, {res.evaluations} evals, {res.steps} steps, "
                f"{time.perf_counter() - t0:.1f} s",
                flush=True,
            )


if __name__ == "__main__":
    main()
