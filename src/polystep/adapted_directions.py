"""Covariance-adapted probe directions: a CMA-style rank-one adaptation per particle.

Each particle ``i`` keeps a covariance ``C_i (p, p)`` (start: the identity). Its Haar-rotated
template directions ``d`` are sheared to ``L_i d / ||L_i d||`` (``L_i`` the Cholesky factor of
``C_i``), so probes crowd around the directions its past moves took while staying at the same
radius. After a step with move ``m_i`` the covariance learns it:
``C_i <- (1 - rate) C_i + rate * p * m_i m_i^T / ||m_i||^2`` (the trace stays ``p``); a particle
that did not move keeps its ``C_i``. The covariance lives in search coordinates, so it restarts at
the identity when the subspace is redrawn.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from polystep.geometry import probe_fractions
from polystep.step import Proposal, StepRule, probe_points


def shear(directions: torch.Tensor, factors: torch.Tensor) -> torch.Tensor:
    """``L_i d_iv`` renormalised to unit length: ``(P, V, p), (P, p, p) -> (P, V, p)``."""
    sheared = torch.einsum("pij,pvj->pvi", factors.to(directions), directions)
    return sheared / sheared.norm(dim=-1, keepdim=True).clamp(min=1e-12)


def rank_one(covariance: torch.Tensor, moves: torch.Tensor, rate: float) -> torch.Tensor:
    """``(P, p, p), (P, p) -> (P, p, p)``: each row's covariance pulled toward its move."""
    dim = moves.shape[1]
    norms = moves.norm(dim=1)
    unit = moves / norms.clamp(min=1e-300)[:, None]
    pulled = (1 - rate) * covariance + rate * dim * unit[:, :, None] * unit[:, None, :]
    moved = (norms > 0) & torch.isfinite(norms)
    return torch.where(moved[:, None, None], pulled, covariance)


@dataclass(frozen=True)
class AdaptedDirections:
    """``rate`` in ``(0, 1)``: how much of each covariance one move replaces."""

    rate: float

    @classmethod
    def build(cls, *, rate: float) -> AdaptedDirections:
        ok = isinstance(rate, int | float) and not isinstance(rate, bool)
        if not (ok and math.isfinite(rate) and 0 < rate < 1):
            raise ValueError(f"adapted directions rate must be in (0, 1), got {rate!r}")
        return cls(float(rate))

    @staticmethod
    def identity(num: int, dim: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
        """The starting covariances ``(num, dim, dim)``."""
        return torch.eye(dim, dtype=dtype).expand(num, dim, dim).clone()

    def update(self, covariance: torch.Tensor, moves: torch.Tensor) -> torch.Tensor:
        return rank_one(covariance, moves.to(covariance.dtype), self.rate)


@dataclass(frozen=True)
class ShearedRule(StepRule):
    """A :class:`~polystep.step.StepRule` whose directions are sheared by ``factors (P, p, p)``
    (Cholesky factors of the particles' covariances)."""

    factors: torch.Tensor | None = field(default=None, compare=False)

    def propose(
        self, positions: torch.Tensor, iteration: int, generator: torch.Generator
    ) -> Proposal:
        proposal = super().propose(positions, iteration, generator)
        if self.factors is None:
            return proposal
        directions = shear(proposal.directions, self.factors)
        kw = {"dtype": positions.dtype, "device": positions.device}
        fractions = probe_fractions(self.num_probe, **kw)
        probes = probe_points(positions, directions, self.probe_radius(iteration), fractions)
        return Proposal(directions=directions, probes=probes)
