"""One PolyStep step for a set of particles: propose probe points, then move to the barycentre.

A particle is a point ``x_i`` in ``R^p``. :meth:`StepRule.propose` draws a Haar rotation per
particle, rotates the unit template and returns the probe points; the caller scores them (forward
passes only); :meth:`StepRule.update` turns the ``(P, V)`` costs into weights and moves every
particle to ``x_i + r_s * sum_v w_iv d_iv``. ``StepRule`` holds configuration only; all state
(positions, iteration, Sinkhorn duals, random generator) is passed in and returned.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from polystep.geometry import POLYTOPES, polytope, probe_fractions, random_rotations
from polystep.schedules import Schedule, as_schedule
from polystep.transport import (
    greedy_weights,
    prepare_costs,
    sinkhorn_weights,
    softmax_weights,
    validate_cost_scale,
)
from polystep.validation import check_positive_int

WeightsOut = tuple[torch.Tensor, "Duals"]


def _greedy(rule: StepRule, costs: torch.Tensor, epsilon: float, duals: Duals) -> WeightsOut:
    return greedy_weights(costs), duals


def _softmax(rule: StepRule, costs: torch.Tensor, epsilon: float, duals: Duals) -> WeightsOut:
    return softmax_weights(costs, epsilon), duals


def _sinkhorn(rule: StepRule, costs: torch.Tensor, epsilon: float, duals: Duals) -> WeightsOut:
    if costs.shape[0] == 1:
        # One particle: the balanced plan is uniform and would never move; use softmax.
        return softmax_weights(costs, epsilon), duals
    result = sinkhorn_weights(
        costs,
        epsilon,
        f=duals.f,
        g=duals.g,
        tolerance=rule.sinkhorn_tolerance,
        max_iterations=rule.sinkhorn_max_iterations,
    )
    return result.weights, Duals(f=result.f, g=result.g)


# The weight rules, by name: ``(rule, prepared costs (P, V), epsilon, duals) -> (W (P, V), duals)``.
WEIGHT_RULES: dict[str, Callable[[StepRule, torch.Tensor, float, Duals], WeightsOut]] = {
    "softmax": _softmax,
    "sinkhorn": _sinkhorn,
    "greedy": _greedy,
}
SOLVERS = tuple(WEIGHT_RULES)


def vertex_directions(rotations: torch.Tensor, template: torch.Tensor) -> torch.Tensor:
    """Rotated unit vertices ``d_iv = R_i v_v``: ``(P, p, p), (V, p) -> (P, V, p)``."""
    return torch.einsum("pij,vj->pvi", rotations, template)


def orthoplex_directions(rotations: torch.Tensor) -> torch.Tensor:
    """:func:`vertex_directions` of the orthoplex ``+e_1..+e_p, -e_1..-e_p``: the columns of
    each ``R_i``, then their negatives (the same numbers: each is one product by 1 or -1 plus
    products by 0), without the matrix product: ``(P, p, p) -> (P, 2p, p)``, laid out as the
    product lays it out (``[R_i, -R_i]`` transposed), so the move's product runs as before."""
    return torch.cat([rotations, -rotations], dim=2).transpose(1, 2)


def probe_points(
    positions: torch.Tensor, directions: torch.Tensor, probe_radius: float, fractions: torch.Tensor
) -> torch.Tensor:
    """``x_i + r_p * s_k * d_iv``: ``(P, p), (P, V, p), float, (K,) -> (P, V, K, p)``."""
    offsets = probe_radius * fractions[None, None, :, None] * directions[:, :, None, :]
    return positions[:, None, None, :] + offsets


def barycentric_move(
    positions: torch.Tensor, directions: torch.Tensor, weights: torch.Tensor, step_radius: float
) -> torch.Tensor:
    """``x_i + r_s * sum_v w_iv d_iv``: ``(P, p), (P, V, p), (P, V), float -> (P, p)``. The sum
    is the batched product ``einsum("pv,pvi->pi")`` runs, called directly."""
    return positions + step_radius * torch.bmm(weights.unsqueeze(1), directions).squeeze(1)


@dataclass
class Proposal:
    """What :meth:`StepRule.propose` drew: directions ``(P, V, p)`` and probes ``(P, V, K, p)``."""

    directions: torch.Tensor
    probes: torch.Tensor


@dataclass
class Duals:
    """Sinkhorn duals carried between steps (warm start): ``f (P,)``, ``g (V,)``."""

    f: torch.Tensor | None = None
    g: torch.Tensor | None = None


@dataclass(frozen=True)
class StepRule:
    """Configuration of one step. Radii are distances in search coordinates (see ``schedules``).

    ``epsilon`` is the temperature of the weights, in the units ``scale_cost`` leaves the
    costs in (raw loss units when ``scale_cost`` is None).
    """

    epsilon: Schedule
    step_radius: Schedule
    probe_radius: Schedule
    polytope: str = "orthoplex"
    num_probe: int = 1
    solver: str = "softmax"
    scale_cost: str | float | None = None
    sinkhorn_tolerance: float = 1e-6
    sinkhorn_max_iterations: int = 1000

    @classmethod
    def build(
        cls,
        *,
        epsilon: float | Schedule,
        step_radius: float | Schedule,
        probe_radius: float | Schedule,
        polytope: str = "orthoplex",
        num_probe: int = 1,
        solver: str = "softmax",
        scale_cost: str | float | None = None,
    ) -> StepRule:
        """Validate every argument (errors name it) and turn floats into constant schedules."""
        if polytope not in POLYTOPES:
            raise ValueError(f"polytope must be one of {POLYTOPES}, got {polytope!r}")
        if solver not in SOLVERS:
            raise ValueError(f"solver must be one of {SOLVERS}, got {solver!r}")
        check_positive_int("num_probe", num_probe)
        validate_cost_scale(scale_cost)
        return cls(
            epsilon=as_schedule(epsilon, "epsilon"),
            step_radius=as_schedule(step_radius, "step_radius"),
            probe_radius=as_schedule(probe_radius, "probe_radius"),
            polytope=polytope,
            num_probe=num_probe,
            solver=solver,
            scale_cost=scale_cost,
        )

    def propose(
        self, positions: torch.Tensor, iteration: int, generator: torch.Generator
    ) -> Proposal:
        """Draw rotations and probe points around ``positions (P, p)``."""
        num, dim = positions.shape
        kw = {"dtype": positions.dtype, "device": positions.device}
        rotations = random_rotations(num, dim, generator=generator, **kw)
        if self.polytope == "orthoplex":
            directions = orthoplex_directions(rotations)
        else:
            directions = vertex_directions(rotations, polytope(self.polytope, dim, **kw))
        fractions = probe_fractions(self.num_probe, **kw)
        probes = probe_points(positions, directions, self.probe_radius(iteration), fractions)
        return Proposal(directions=directions, probes=probes)

    def weights(
        self, costs: torch.Tensor, iteration: int, duals: Duals
    ) -> tuple[torch.Tensor, Duals]:
        """Weights ``(P, V)`` from raw costs ``(P, V)``; non-finite costs are penalised."""
        prepared = prepare_costs(costs, self.scale_cost)
        return WEIGHT_RULES[self.solver](self, prepared, self.epsilon(iteration), duals)

    def update(
        self,
        positions: torch.Tensor,
        proposal: Proposal,
        losses: torch.Tensor,
        iteration: int,
        duals: Duals,
        shaping: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, Duals]:
        """Move every particle; ``losses`` has one entry per probe, ``(P, V, K)`` or flat.

        ``shaping`` maps the per-vertex costs ``(P, V)`` (float64) to finite, recentred costs
        for the weights in place of ``scale_cost`` (see :mod:`polystep.parts`)."""
        num, num_vertices = proposal.directions.shape[:2]
        costs = losses.reshape(num, num_vertices, self.num_probe)
        # Mean over probes in float64 (a float32 sum of huge costs overflows); a non-finite
        # probe makes its vertex non-finite (then penalised).
        costs = costs.to(torch.float64).mean(dim=-1)
        if shaping is None:
            weights, duals = self.weights(costs, iteration, duals)
        else:  # the shaping replaces scale_cost: its costs are already finite and recentred
            rule = WEIGHT_RULES[self.solver]
            weights, duals = rule(self, shaping(costs), self.epsilon(iteration), duals)
        weights = weights.to(positions.dtype)
        moved = barycentric_move(
            positions, proposal.directions, weights, self.step_radius(iteration)
        )
        # A particle that saw no finite cost has learnt nothing: it stays exactly where it was
        # (uniform weights would move it by the rounding error of the template's centroid).
        seen = torch.isfinite(costs).any(dim=1)
        if bool(seen.all()):
            return moved, duals
        return torch.where(seen.to(positions.device)[:, None], moved, positions), duals
