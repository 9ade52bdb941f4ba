"""Search spaces over a model's parameters; each is defined by a seed and linear in ``z``."""

from polystep.subspace.base import Subspace
from polystep.subspace.factored import FactoredSubspace
from polystep.subspace.full import FullSpace
from polystep.subspace.hybrid import HybridSubspace
from polystep.subspace.segments import (
    DenseSegment,
    DirectSegment,
    LowRankSegment,
    Segment,
    SparseSegment,
)
from polystep.subspace.sparse import SparseProjection

__all__ = [
    "DenseSegment",
    "DirectSegment",
    "FactoredSubspace",
    "FullSpace",
    "HybridSubspace",
    "LowRankSegment",
    "Segment",
    "SparseProjection",
    "SparseSegment",
    "Subspace",
]
