"""Low-level front end: PolyStep over a particle array ``X (N, dim)`` and an objective.

Each row of ``X`` is an independent point of ``R^dim``. One iteration scores ``N * V * K`` probe
points (in chunks of at most ``chunk_size`` rows), moves every particle, then scores the moved
particles, so ``state.costs[t]`` is the best objective value among the particles after
iteration ``t`` and ``min(state.costs)`` is the best particle value found.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from polystep.epsilon import CosineEpsilon, Schedule
from polystep.step import Duals, StepRule
from polystep.validation import check_positive_int

Objective = Callable[[torch.Tensor], torch.Tensor]


def evaluate_in_chunks(
    objective: Objective, points: torch.Tensor, chunk_size: int | None
) -> torch.Tensor:
    """``objective`` on ``points (M, dim)`` in slices of at most ``chunk_size`` rows: ``(M,)``."""
    size = points.shape[0] if chunk_size is None else chunk_size
    values = [objective(points[start : start + size]) for start in range(0, points.shape[0], size)]
    out = torch.cat([torch.as_tensor(v).reshape(-1) for v in values])
    if out.shape[0] != points.shape[0]:
        raise ValueError(
            f"objective must return one value per row: {out.shape[0]} for {points.shape[0]} rows"
        )
    return out


def best_of(points: torch.Tensor, values: torch.Tensor) -> tuple[torch.Tensor, float]:
    """The row with the smallest finite value and that value (NaN and +-inf count as +inf)."""
    clean = torch.where(torch.isfinite(values), values, torch.full_like(values, float("inf")))
    index = int(clean.argmin())
    return points[index].clone(), float(clean[index])


@dataclass
class SolverState:
    """Everything a run needs to continue exactly: positions, history, best point, RNG, duals."""

    positions: torch.Tensor
    generator: torch.Generator
    costs: list[float] = field(default_factory=list)
    best_x: torch.Tensor | None = None
    best_cost: float = float("inf")
    iteration: int = 0
    evaluations: int = 0
    duals: Duals = field(default_factory=Duals)

    def state_dict(self) -> dict[str, Any]:
        return {
            "positions": self.positions.clone(),
            "generator": self.generator.get_state(),
            "costs": list(self.costs),
            "best_x": None if self.best_x is None else self.best_x.clone(),
            "best_cost": self.best_cost,
            "iteration": self.iteration,
            "evaluations": self.evaluations,
            "duals": {"f": self.duals.f, "g": self.duals.g},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` output; every field is read before anything changes."""
        positions = state["positions"]
        if not isinstance(positions, torch.Tensor) or positions.ndim != 2:
            raise ValueError(f"positions in state must be an (N, dim) tensor, got {positions!r}")
        torch.Generator(device=self.generator.device).set_state(state["generator"])
        costs, best_cost = [float(c) for c in state["costs"]], float(state["best_cost"])
        counts = int(state["iteration"]), int(state["evaluations"])
        best_x = None if state["best_x"] is None else state["best_x"].clone()
        duals = Duals(f=state["duals"]["f"], g=state["duals"]["g"])
        self.positions = positions.clone()
        self.generator.set_state(state["generator"])
        self.costs, self.best_x, self.best_cost, self.duals = costs, best_x, best_cost, duals
        self.iteration, self.evaluations = counts


@dataclass(frozen=True)
class PolyStep:
    """PolyStep over independent particles. Build it with :meth:`create`."""

    objective: Objective
    dim: int
    rule: StepRule
    max_iterations: int = 100
    chunk_size: int | None = None
    seed: int = 0

    @classmethod
    def create(
        cls,
        objective: Objective,
        *,
        dim: int | None = None,
        epsilon: float | Schedule = 0.5,
        step_radius: float | Schedule | None = None,
        probe_radius: float | Schedule | None = None,
        polytope: str = "orthoplex",
        num_probe: int = 1,
        solver: str = "softmax",
        scale_cost: str | float | None = "mean",
        max_iterations: int = 100,
        chunk_size: int | None = None,
        seed: int = 0,
        **aliases: Any,
    ) -> PolyStep:
        """Validate the arguments and build the solver.

        ``dim`` defaults to ``objective.dim``. Both radii default to a cosine decay from 4.0 to
        4e-3 over ``max_iterations`` (with one probe, it sits at half the step radius).
        ``epsilon`` is in units of the step's mean cost spread (``scale_cost="mean"``).
        ``max_iteration`` is accepted as an alias of ``max_iterations``.
        """
        if "max_iteration" in aliases:
            max_iterations = aliases.pop("max_iteration")
        if aliases:
            raise TypeError(f"unexpected keyword arguments: {sorted(aliases)}")
        dim = getattr(objective, "dim", None) if dim is None else dim
        if dim is None:
            raise ValueError("dim must be given when the objective has no .dim attribute")
        check_positive_int("dim", dim)
        check_positive_int("max_iterations", max_iterations)
        check_positive_int("chunk_size", chunk_size, allow_none=True)
        if not callable(objective):
            raise ValueError("objective must be callable: (N, dim) -> (N,)")
        if step_radius is None:
            step_radius = CosineEpsilon(init=4.0, target=4e-3, total_steps=max_iterations)
        if probe_radius is None:
            probe_radius = CosineEpsilon(init=4.0, target=4e-3, total_steps=max_iterations)
        rule = StepRule.build(
            epsilon=epsilon,
            step_radius=step_radius,
            probe_radius=probe_radius,
            polytope=polytope,
            num_probe=num_probe,
            solver=solver,
            scale_cost=scale_cost,
        )
        return cls(objective, dim, rule, max_iterations, chunk_size, int(seed))

    def _score(self, state: SolverState, points: torch.Tensor) -> torch.Tensor:
        values = evaluate_in_chunks(self.objective, points, self.chunk_size)
        state.evaluations += points.shape[0]
        x, value = best_of(points, values)
        if value < state.best_cost:
            state.best_x, state.best_cost = x, value
        return values

    def init_state(self, x: torch.Tensor) -> SolverState:
        """Initial state from particles ``x (N, dim)`` (float tensor); scores them once."""
        if not isinstance(x, torch.Tensor) or x.ndim != 2 or x.shape[1] != self.dim:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"x must be a tensor of shape (N, {self.dim}), got {shape}")
        if not x.is_floating_point():
            raise ValueError(f"x must be a floating-point tensor, got dtype {x.dtype}")
        generator = torch.Generator(device=x.device)
        generator.manual_seed(self.seed)
        state = SolverState(positions=x.detach().clone(), generator=generator)
        self._score(state, state.positions)
        return state

    def step(self, state: SolverState) -> SolverState:
        """One iteration in place; returns ``state`` for chaining."""
        t = state.iteration
        proposal = self.rule.propose(state.positions, t, state.generator)
        probes = proposal.probes.reshape(-1, self.dim)
        losses = self._score(state, probes)
        state.positions, state.duals = self.rule.update(
            state.positions, proposal, losses.to(state.positions.device), t, state.duals
        )
        particle_values = self._score(state, state.positions)
        state.costs.append(best_of(state.positions, particle_values)[1])
        state.iteration += 1
        return state

    def run(self, x: torch.Tensor) -> SolverState:
        """``max_iterations`` iterations from particles ``x (N, dim)``."""
        state = self.init_state(x)
        while state.iteration < self.max_iterations:
            self.step(state)
        return state
