"""Seeded uniform random k-SAT instances (vectorised)."""

from __future__ import annotations

import numpy as np

from polystep.problems.maxsat.io import MaxSATInstance

DEFAULT_RATIO = 4.27


def random_ksat(
    num_vars: int,
    *,
    ratio: float = DEFAULT_RATIO,
    num_clauses: int | None = None,
    k: int = 3,
    seed: int = 0,
) -> MaxSATInstance:
    """Uniform random k-SAT: ``m = int(ratio * n)`` clauses (or ``num_clauses``), each over ``k``
    distinct variables drawn uniformly, each negated with probability 1/2; unit weights.

    Reproducible: the same arguments give the same instance (numpy ``default_rng(seed)``).
    """
    if isinstance(num_vars, bool) or not isinstance(num_vars, int) or num_vars < 1:
        raise ValueError(f"num_vars must be a positive int, got {num_vars!r}")
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= num_vars:
        raise ValueError(f"k must be an int in [1, num_vars], got {k!r}")
    if num_clauses is None:
        if not ratio > 0:
            raise ValueError(f"ratio must be > 0, got {ratio!r}")
        num_clauses = int(num_vars * ratio)
    if num_clauses < 0:
        raise ValueError(f"num_clauses must be >= 0, got {num_clauses!r}")
    rng = np.random.default_rng(seed)
    variables = rng.integers(0, num_vars, size=(num_clauses, k), dtype=np.int64)
    # Redraw rows with a repeated variable until every row is distinct (few rows for large n).
    while True:
        srt = np.sort(variables, axis=1)
        dup = (srt[:, 1:] == srt[:, :-1]).any(axis=1) if k > 1 else np.zeros(num_clauses, bool)
        rows = np.flatnonzero(dup)
        if rows.size == 0:
            break
        variables[rows] = rng.integers(0, num_vars, size=(rows.size, k), dtype=np.int64)
    signs = rng.integers(0, 2, size=(num_clauses, k), dtype=np.int64) * 2 - 1
    literals = ((variables + 1) * signs).astype(np.int32)
    return MaxSATInstance(
        num_vars=num_vars,
        literals=literals,
        weights=np.ones(num_clauses),
        hard=np.zeros(num_clauses, dtype=bool),
        name=f"random-{k}sat-n{num_vars}-r{ratio:g}-s{seed}",
    )
