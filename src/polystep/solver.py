"""Low-level front end: PolyStep over a particle array ``X (N, dim)`` and an objective.

Each row of ``X`` is an independent point of ``R^dim`` (a particle of :mod:`polystep.engine`,
space ``"particles"``). One iteration scores ``N * V * K`` probe
points (in chunks of at most ``chunk_size`` rows), moves every particle, then scores the moved
particles, so ``state.costs[t]`` is the best objective value among the particles after
iteration ``t`` and ``min(state.costs)`` is the best particle value found.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from polystep.engine import DEFAULTS, Engine, EngineState, Particles, shaping
from polystep.schedules import Cosine, Schedule
from polystep.step import StepRule
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


class SolverState(EngineState):
    """The engine state (``x`` is the particles ``(N, dim)``) plus ``costs``: the best particle
    value after each iteration. ``positions`` and ``best_cost`` name ``x`` and ``best``."""

    def __init__(self, *args: Any, costs: list[float] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.costs: list[float] = [] if costs is None else costs

    positions = property(lambda self: self.x, doc="The particles ``(N, dim)`` (``x``).")
    best_cost = property(lambda self: self.best, doc="The best particle value (``best``).")

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "costs": list(self.costs)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` output; every field is checked before anything changes."""
        costs = state.get("costs") if isinstance(state, dict) else None
        if not isinstance(costs, list) or not all(isinstance(c, int | float) for c in costs):
            raise ValueError("costs in state must be a list of numbers")
        super().load_state_dict(state)
        self.costs = [float(c) for c in costs]


@dataclass(frozen=True)
class PolyStep:
    """PolyStep over independent particles: a loop over the engine. Build it with :meth:`create`."""

    objective: Objective
    dim: int
    rule: StepRule
    max_iterations: int = 100
    chunk_size: int | None = None
    seed: int = 0
    shaping: Callable[[torch.Tensor], torch.Tensor] = field(default_factory=lambda: shaping("mean"))

    @classmethod
    def create(
        cls,
        objective: Objective,
        *,
        dim: int | None = None,
        epsilon: float | Schedule = DEFAULTS["epsilon"],
        step_radius: float | Schedule | None = None,
        probe_radius: float | Schedule | None = None,
        polytope: str = DEFAULTS["polytope"],
        num_probe: int = DEFAULTS["num_probe"],
        solver: str = DEFAULTS["solver"],
        scale_cost: str | float | None = DEFAULTS["scale_cost"],
        max_iterations: int = 100,
        chunk_size: int | None = None,
        seed: int = 0,
        **aliases: Any,
    ) -> PolyStep:
        """Validate the arguments and build the solver.

        ``dim`` defaults to ``objective.dim``. Both radii default to a cosine decay from 4.0 to
        4e-3 over ``max_iterations`` (with one probe, it sits at half the step radius).
        ``epsilon`` is in units of the step's cost spread (``scale_cost``: ``"mean"``, ``"max"``,
        ``"row"``, ``"rank"``, a cost unit, or None for raw units; see :mod:`polystep.parts`).
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
        default = Cosine(init=4.0, target=4e-3, total_steps=max_iterations)
        rule = StepRule.build(
            epsilon=epsilon,
            step_radius=default if step_radius is None else step_radius,
            probe_radius=default if probe_radius is None else probe_radius,
            polytope=polytope,
            num_probe=num_probe,
            solver=solver,
        )
        shape = shaping(scale_cost, "scale_cost")
        return cls(objective, dim, rule, max_iterations, chunk_size, int(seed), shape)

    def engine(self, num_particles: int) -> Engine:
        space = Particles(num_particles, self.dim)
        return Engine(self.rule, space, self.shaping, max_iterations=self.max_iterations)

    def _score(self, state: SolverState, points: torch.Tensor) -> torch.Tensor:
        values = evaluate_in_chunks(self.objective, points, self.chunk_size)
        state.evaluations += points.shape[0]
        Engine.record(state, points, values)
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
        state = SolverState(x=x.detach().clone(), generator=generator)
        self._score(state, state.x)
        return state

    def step(self, state: SolverState) -> SolverState:
        """One iteration in place (ask, score the probes, tell, score the moved particles)."""
        engine = self.engine(state.x.shape[0])
        probes = engine.ask(state)
        engine.tell(state, evaluate_in_chunks(self.objective, probes, self.chunk_size))
        values = self._score(state, state.x)
        state.costs.append(float(torch.where(torch.isfinite(values), values, math.inf).min()))
        return state

    def run(self, x: torch.Tensor) -> SolverState:
        """``max_iterations`` iterations from particles ``x (N, dim)``."""
        state = self.init_state(x)
        while not self.engine(state.x.shape[0]).should_stop(state):
            self.step(state)
        return state
