"""HybridSubspace: per-layer random projections; 1-D parameters searched directly.

A weight ``W`` seen as ``(d_out, d_in)`` gets as many coordinates as a rank-r LoRA has degrees
of freedom, ``r (d_out + d_in)`` (``r`` capped at ``min(d_out, d_in)``, the count capped at
``d_out d_in``), rounded up to whole rows of ``E``, through a LINEAR isometry:
``dW = C @ E`` with ``C (d_out, r2)`` random orthonormal columns fixed by the seed and
coordinates ``E (r2, d_in)``, ``r2 = min(d_out, ceil(r (d_out + d_in) / d_in))``.

Every coordinate moves ALL units of the layer at once, along a column of ``C``; none moves one
unit alone. That matters at the radii the paper's README uses (probes 5 to 10 away): a probe
that puts its whole length on one unit's weights saturates or silences that unit, and its
finite differences stop measuring the loss's slope (issue 15; the measurements are in
``benchmarks/results/seed_examples/report.md``).
Candidates stay cheap to score: ``x dWᵀ = (x Eᵀ) Cᵀ`` and a candidate changes 8 entries of E.
"""

from __future__ import annotations

from polystep.subspace.base import RankedSubspace
from polystep.subspace.segments import (
    DirectSegment,
    LowRankSegment,
    Segment,
    orthonormal_rows,
    round_up,
    seeded_generator,
)
from polystep.transform import ParamLayout


def mixing_rank(rank: int, d_out: int, d_in: int) -> int:
    """Rows of ``E`` that hold the rank-``rank`` LoRA coordinate count: ``r2`` above."""
    r = min(rank, d_out, d_in)
    return min(d_out, -(-r * (d_out + d_in) // d_in))


class HybridSubspace(RankedSubspace):
    """See the module docstring. Build with :meth:`from_layout`."""

    kind = "hybrid"

    @classmethod
    def from_layout(
        cls,
        layout: ParamLayout,
        rank: int = 8,
        *,
        block_dim: int = 8,
        seed: int | None = None,
        direct_max: int = 0,
        redraw_every: int | None = None,
    ) -> HybridSubspace:
        """Rank-``rank`` coordinate counts per weight (direct search for weights of <=
        ``direct_max`` values); ``seed`` None lets the optimizer choose it."""
        return cls(
            layout,
            rank=rank,
            direct_max=direct_max,
            block_dim=block_dim,
            seed=seed,
            redraw_every=redraw_every,
        )

    def _build(self, seed: int, draw: int, *, sizes_only: bool = False) -> list[Segment]:
        out: list[Segment] = []
        start = 0
        for index, e in enumerate(self.layout.entries):
            d_out, d_in = e.rows_cols
            if not e.is_matrix or e.numel <= self.direct_max:
                size = round_up(e.numel, self.block_dim)
                out.append(DirectSegment(e.name, e.shape, start, size))
            else:
                r2 = mixing_rank(self.rank, d_out, d_in)
                size = round_up(r2 * d_in, self.block_dim)
                left = None
                if not sizes_only:
                    gen = seeded_generator(seed, "hybrid", index, draw)
                    left = orthonormal_rows(r2, d_out, gen).T.contiguous()
                out.append(LowRankSegment(e.name, e.shape, start, size, left=left))
            start += size
        return out
