"""HybridSubspace: per-layer random low-rank projections; 1-D parameters searched directly.

A weight ``W`` seen as ``(d_out, d_in)`` gets ``r (d_out + d_in)`` coordinates (``r`` capped at
``min(d_out, d_in)``), the degrees of freedom of a rank-r LoRA, through a LINEAR map:
``dW = A @ B + C @ E`` with ``B (r, d_in)`` random orthonormal rows and ``C (d_out, r)`` random
orthonormal columns fixed by the seed, and coordinates ``A (d_out, r)``, ``E (r, d_in)``. Each
factor is an isometry and the two are nearly orthogonal (inner products ~ 1/sqrt(d_out d_in)).
The structure is what makes candidates cheap to score: ``x dWᵀ = (x Bᵀ) Aᵀ + (x Eᵀ) Cᵀ``.
Where ``r (d_out + d_in) >= d_out d_in`` the weight is searched directly instead.
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
        """Rank-``rank`` projections per weight (direct search for weights of <= ``direct_max``
        values); ``seed`` None lets the optimizer choose it."""
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
            r = min(self.rank, d_out, d_in)
            if not e.is_matrix or e.numel <= self.direct_max or r * (d_out + d_in) >= e.numel:
                size = round_up(e.numel, self.block_dim)
                out.append(DirectSegment(e.name, e.shape, start, size))
            else:
                size = round_up(r * (d_out + d_in), self.block_dim)
                right = left = None
                if not sizes_only:
                    gen = seeded_generator(seed, "hybrid", index, draw)
                    right = orthonormal_rows(r, d_in, gen)
                    left = orthonormal_rows(r, d_out, gen).T.contiguous()
                out.append(LowRankSegment(e.name, e.shape, start, size, right=right, left=left))
            start += size
        return out
