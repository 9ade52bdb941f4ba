"""The full parameter space: coordinates are the parameters themselves (small models)."""

from __future__ import annotations

from polystep.subspace.base import Subspace
from polystep.subspace.segments import DirectSegment, Segment, round_up
from polystep.transform import ParamLayout


class FullSpace(Subspace):
    """Every parameter searched directly; each one padded to a multiple of ``block_dim``."""

    kind = "full"

    @classmethod
    def from_layout(cls, layout: ParamLayout, *, block_dim: int = 2) -> FullSpace:
        return cls(layout, block_dim=block_dim)

    def _build(self, seed: int, draw: int, *, sizes_only: bool = False) -> list[Segment]:
        out: list[Segment] = []
        start = 0
        for e in self.layout.entries:
            size = round_up(e.numel, self.block_dim)
            out.append(DirectSegment(e.name, e.shape, start, size))
            start += size
        return out
