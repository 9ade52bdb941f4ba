"""HybridSubspace: one fixed random projection per weight; 1-D parameters searched directly.

As in the paper's package (1.1.0): a weight ``W`` seen as ``(d_out, d_in)`` gets as many
coordinates as a rank-r LoRA has degrees of freedom, ``k = r (d_out + d_in)`` with
``r = min(rank, d_out, d_in)``, capped at ``d_out d_in`` (and rounded up to whole blocks), and
a LINEAR map ``vec(dW) = P c`` from its coordinates ``c (k,)``:

* ``P (d_out d_in, k)`` dense with orthonormal columns (QR of a Gaussian fixed by the seed)
  when it takes at most ``DENSE_MAX_BYTES`` in float32;
* otherwise (the 784x128 layer of an MNIST MLP at rank 8: 2.9 GB dense) a very sparse random
  projection: each coordinate moves ``isqrt(d_out d_in)`` random entries by ``+-1/sqrt(nnz)``
  (Li, Hastie and Church's density ``1/sqrt(n)``; the paper's package switches at 1 GiB, we
  at 64 MiB so that no QR of a huge matrix runs at build time).

Every coordinate moves many units of the layer a little; none moves one unit alone. Candidates
stay cheap to score: a candidate changes one block of ``c``, and ``x dWᵀ`` for each of the
block's coordinates is formed once per block and shared by the block's candidates.
"""

from __future__ import annotations

import math

from polystep.subspace.base import RankedSubspace
from polystep.subspace.segments import (
    DenseSegment,
    DirectSegment,
    Segment,
    orthonormal_columns,
    round_up,
    seeded_generator,
)
from polystep.subspace.sparse import sparse_segment
from polystep.transform import ParamLayout

DENSE_MAX_BYTES = 2**26  # a dense projection up to this size in float32, sparse above


def coordinate_count(rank: int, d_out: int, d_in: int) -> int:
    """The paper package's coordinates for one weight: ``r (d_out + d_in)``, at most
    ``d_out d_in``, with ``r = min(rank, d_out, d_in)``."""
    r = min(rank, d_out, d_in)
    return min(r * (d_out + d_in), d_out * d_in)


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
                start += size
                continue
            k = coordinate_count(self.rank, d_out, d_in)
            size = round_up(k, self.block_dim)
            gen = None if sizes_only else seeded_generator(seed, "hybrid", index, draw)
            if e.numel * k * 4 <= DENSE_MAX_BYTES:
                basis = None if gen is None else orthonormal_columns(e.numel, k, gen)
                out.append(DenseSegment(e.name, e.shape, start, size, basis=basis))
            else:  # the padding coordinates of a sparse map are real ones
                out.append(sparse_segment(e, start, size, max(1, math.isqrt(e.numel)), gen))
            start += size
        return out
