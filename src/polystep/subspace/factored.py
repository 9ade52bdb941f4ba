"""FactoredSubspace: ``dW = A @ B`` per weight, coordinates ``A``, ``B`` redrawn on a schedule.

``B (r, d_in)`` has random orthonormal rows fixed by ``(seed, draw)``; the coordinates are
``A (d_out, r)``. Every ``redraw_every`` steps the optimizer absorbs the perturbation into the
weights and draws new ``B`` (a new ``draw``, nothing stored). 1-D parameters are searched
directly, as are weights with ``r >= d_in`` (where ``A @ B`` already spans every matrix).
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


class FactoredSubspace(RankedSubspace):
    """See the module docstring. Build with :meth:`from_layout`."""

    kind = "factored"

    @classmethod
    def from_layout(
        cls,
        layout: ParamLayout,
        rank: int = 8,
        *,
        block_dim: int = 8,
        seed: int | None = None,
        direct_max: int = 0,
        redraw_every: int | None = 5,
    ) -> FactoredSubspace:
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
            r = min(self.rank, d_in)
            if not e.is_matrix or e.numel <= self.direct_max or r >= d_in:
                size = round_up(e.numel, self.block_dim)
                out.append(DirectSegment(e.name, e.shape, start, size))
            else:
                size = round_up(d_out * r, self.block_dim)
                right = None
                if not sizes_only:
                    gen = seeded_generator(seed, "factored", index, draw)
                    right = orthonormal_rows(r, d_in, gen)
                out.append(LowRankSegment(e.name, e.shape, start, size, right=right))
            start += size
        return out
