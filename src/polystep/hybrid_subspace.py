"""Compatibility module: ``from polystep.hybrid_subspace import HybridSubspace``."""

from polystep.subspace.hybrid import HybridSubspace

__all__ = ["HybridSubspace"]
