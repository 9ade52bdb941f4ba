"""Very sparse random projections for large models (>= 10M parameters).

Each parameter gets coordinates in proportion to its size (at least one block); coordinate ``c``
touches ``nnz = max(1, round(density * numel))`` random positions of that parameter with signs
``+-1/sqrt(nnz)`` (default density ``1/sqrt(numel)``: Li, Hastie and Church). The positions and
signs come from a generator seeded by ``(seed, parameter, draw)``; only ``(k, nnz)`` index and
sign tensors are kept, never a dense ``(numel, k)`` matrix. Small 1-D parameters are direct.
"""

from __future__ import annotations

import math

import torch

from polystep.subspace.base import Subspace
from polystep.subspace.segments import (
    DirectSegment,
    Segment,
    SparseSegment,
    round_up,
    seeded_generator,
)
from polystep.transform import ParamEntry, ParamLayout
from polystep.validation import check_positive_int

DIRECT_MAX = 4096


def sparse_segment(
    entry: ParamEntry, start: int, k: int, nnz: int, generator: torch.Generator | None
) -> SparseSegment:
    """``k`` coordinates of one parameter, each touching ``nnz`` random positions with signs
    ``+-1/sqrt(nnz)`` drawn from ``generator`` (None: sizes only, no index or sign tensors)."""
    idx = sign = None
    if generator is not None:
        idx = torch.randint(0, entry.numel, (k, nnz), generator=generator)
        sign = (torch.randint(0, 2, (k, nnz), generator=generator) * 2 - 1) / math.sqrt(nnz)
    return SparseSegment(entry.name, entry.shape, start, k, index=idx, sign=sign)


class SparseProjection(Subspace):
    """See the module docstring. Build with :meth:`from_layout`."""

    kind = "sparse"

    def __init__(
        self,
        layout: ParamLayout,
        *,
        dim: int = 4096,
        density: float | None = None,
        **kwargs: object,
    ) -> None:
        check_positive_int("dim", dim)
        if density is not None and not 0.0 < density <= 1.0:
            raise ValueError(f"density must lie in (0, 1], got {density!r}")
        self.target_dim = dim
        self.density = density
        super().__init__(layout, **kwargs)  # type: ignore[arg-type]

    @classmethod
    def from_layout(
        cls,
        layout: ParamLayout,
        dim: int = 4096,
        *,
        density: float | None = None,
        block_dim: int = 8,
        seed: int | None = None,
        redraw_every: int | None = None,
    ) -> SparseProjection:
        return cls(
            layout,
            dim=dim,
            density=density,
            block_dim=block_dim,
            seed=seed,
            redraw_every=redraw_every,
        )

    def _build(self, seed: int, draw: int, *, sizes_only: bool = False) -> list[Segment]:
        projected = [e for e in self.layout.entries if e.is_matrix or e.numel > DIRECT_MAX]
        total = sum(e.numel for e in projected) or 1
        out: list[Segment] = []
        start = 0
        for index, e in enumerate(self.layout.entries):
            if e not in projected:
                size = round_up(e.numel, self.block_dim)
                out.append(DirectSegment(e.name, e.shape, start, size))
                start += size
                continue
            k = max(self.block_dim, round_up(self.target_dim * e.numel // total, self.block_dim))
            k = min(k, round_up(e.numel, self.block_dim))
            density = self.density or 1.0 / math.sqrt(e.numel)
            nnz = max(1, round(density * e.numel))
            gen = None if sizes_only else seeded_generator(seed, "sparse", index, draw)
            out.append(sparse_segment(e, start, k, nnz, gen))
            start += k
        return out
