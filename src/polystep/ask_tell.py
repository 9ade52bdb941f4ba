"""Ask/tell front end: ``PolyStepES`` and the one-call ``minimize``.

The population is the probe points of ``num_particles`` particles in ``R^dim``:
``popsize = num_particles * V * num_probe``. ``ask()`` returns them (clipped to the box bounds,
then passed through ``repair`` when given); ``tell(fitness)`` moves every particle to its
barycentre. The same :class:`~polystep.step.StepRule` drives :class:`~polystep.solver.PolyStep`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from polystep.epsilon import Schedule
from polystep.geometry import num_vertices
from polystep.solver import best_of
from polystep.step import Duals, Proposal, StepRule
from polystep.validation import check_positive_int

Repair = Callable[[torch.Tensor], torch.Tensor]


class PolyStepES:
    """Ask/tell PolyStep (minimisation). Radii are distances in search coordinates.

    Args:
        dim: search dimension.
        num_particles: independent particles (each spends ``V * num_probe`` evaluations a step).
        epsilon: temperature, in units of the step's mean cost spread (``scale_cost="mean"``).
        step_radius: how far a particle can move in one step.
        probe_radius: where the probes sit (the one probe at half of it).
        polytope, num_probe, solver: as in :class:`~polystep.step.StepRule`.
        x0: start ``(dim,)`` shared by all particles, or ``(num_particles, dim)``; default 0.
        bounds: ``(lower, upper)``, floats or ``(dim,)`` tensors; probes and particles are clipped.
        repair: optional ``(N, dim) -> (N, dim)`` map applied to every asked point after clipping.
        seed: seed of the rotation generator.
        dtype: float32 or float64.
    """

    def __init__(
        self,
        dim: int,
        *,
        num_particles: int = 1,
        epsilon: float | Schedule = 0.5,
        step_radius: float | Schedule = 0.5,
        probe_radius: float | Schedule = 1.0,
        polytope: str = "orthoplex",
        num_probe: int = 1,
        solver: str = "softmax",
        x0: torch.Tensor | None = None,
        bounds: tuple[Any, Any] | None = None,
        repair: Repair | None = None,
        seed: int = 0,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        check_positive_int("dim", dim)
        check_positive_int("num_particles", num_particles)
        if dtype not in (torch.float32, torch.float64):
            raise ValueError(f"dtype must be torch.float32 or torch.float64, got {dtype!r}")
        if repair is not None and not callable(repair):
            raise ValueError("repair must be callable: (N, dim) -> (N, dim)")
        self.rule = StepRule.build(
            epsilon=epsilon,
            step_radius=step_radius,
            probe_radius=probe_radius,
            polytope=polytope,
            num_probe=num_probe,
            solver=solver,
            scale_cost="mean",
        )
        self.dim = dim
        self.popsize = num_particles * num_vertices(polytope, dim) * num_probe
        self.lower, self.upper = self._bounds(bounds, dtype)
        self.repair = repair
        self.positions = self._start(x0, num_particles, dtype)
        self.generator = torch.Generator().manual_seed(int(seed))
        self.iteration = 0
        self.evaluations = 0
        self.best_fitness = float("inf")
        self.best_x: torch.Tensor | None = None
        self._duals = Duals()
        self._pending: tuple[Proposal, torch.Tensor] | None = None

    def _bounds(
        self, bounds: tuple[Any, Any] | None, dtype: torch.dtype
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        if bounds is None:
            return None, None
        if not (isinstance(bounds, tuple | list) and len(bounds) == 2):
            raise ValueError(f"bounds must be a (lower, upper) pair, got {bounds!r}")
        lower, upper = (torch.as_tensor(b, dtype=dtype).expand(self.dim).clone() for b in bounds)
        if not bool((lower < upper).all()):
            raise ValueError("bounds must satisfy lower < upper in every coordinate")
        return lower, upper

    def _start(
        self, x0: torch.Tensor | None, num_particles: int, dtype: torch.dtype
    ) -> torch.Tensor:
        if x0 is None:
            start = torch.zeros(num_particles, self.dim, dtype=dtype)
        else:
            start = torch.as_tensor(x0, dtype=dtype)
            if start.shape == (self.dim,):
                start = start.expand(num_particles, self.dim)
            if start.shape != (num_particles, self.dim):
                raise ValueError(
                    f"x0 must have shape ({self.dim},) or ({num_particles}, {self.dim}), "
                    f"got {tuple(start.shape)}"
                )
            if not bool(torch.isfinite(start).all()):
                raise ValueError("x0 must be finite")
        return self._clip(start.clone())

    def _clip(self, x: torch.Tensor) -> torch.Tensor:
        if self.lower is None:
            return x
        return torch.maximum(torch.minimum(x, self.upper), self.lower)

    @property
    def mean(self) -> torch.Tensor:
        """Mean of the particles: ``(dim,)``."""
        return self.positions.mean(dim=0)

    def ask(self) -> torch.Tensor:
        """The population to evaluate: ``(popsize, dim)``. Call :meth:`tell` before asking again."""
        if self._pending is not None:
            raise RuntimeError("ask() called twice: tell(fitness) the previous population first")
        proposal = self.rule.propose(self.positions, self.iteration, self.generator)
        points = self._clip(proposal.probes.reshape(-1, self.dim))
        if self.repair is not None:
            repaired = torch.as_tensor(self.repair(points.clone()), dtype=points.dtype)
            if repaired.shape != points.shape:
                raise ValueError(
                    f"repair must return shape {tuple(points.shape)}, got {tuple(repaired.shape)}"
                )
            points = repaired
        self._pending = (proposal, points)
        return points.clone()

    def tell(self, fitness: torch.Tensor | Any) -> None:
        """Report ``fitness (popsize,)`` (lower is better; NaN/inf allowed) and take the step."""
        if self._pending is None:
            raise RuntimeError("tell() called before ask()")
        proposal, points = self._pending
        values = torch.as_tensor(fitness, dtype=points.dtype).reshape(-1)
        if values.shape[0] != self.popsize:
            raise ValueError(f"fitness must have {self.popsize} entries, got {values.shape[0]}")
        self._pending = None
        x, value = best_of(points, values)
        if value < self.best_fitness:
            self.best_fitness, self.best_x = value, x
        moved, self._duals = self.rule.update(
            self.positions, proposal, values, self.iteration, self._duals
        )
        self.positions = self._clip(moved)
        self.evaluations += self.popsize
        self.iteration += 1

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue the exact same trajectory."""
        if self._pending is not None:
            raise RuntimeError("state_dict() between ask() and tell(): tell first")
        return {
            "positions": self.positions.clone(),
            "generator": self.generator.get_state(),
            "iteration": self.iteration,
            "evaluations": self.evaluations,
            "best_fitness": self.best_fitness,
            "best_x": None if self.best_x is None else self.best_x.clone(),
            "duals": {"f": self._duals.f, "g": self._duals.g},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` output; every field is read before anything changes."""
        if tuple(state["positions"].shape) != tuple(self.positions.shape):
            raise ValueError(
                f"positions in state have shape {tuple(state['positions'].shape)}, "
                f"expected {tuple(self.positions.shape)}"
            )
        torch.Generator().set_state(state["generator"])  # raises on a foreign state
        counts = int(state["iteration"]), int(state["evaluations"])
        best_fitness = float(state["best_fitness"])
        best_x = None if state["best_x"] is None else state["best_x"].clone()
        duals = Duals(f=state["duals"]["f"], g=state["duals"]["g"])
        self.positions = state["positions"].clone().to(self.positions.dtype)
        self.generator.set_state(state["generator"])
        self.iteration, self.evaluations = counts
        self.best_fitness, self.best_x, self._duals = best_fitness, best_x, duals
        self._pending = None


@dataclass
class MinimizeResult:
    """Outcome of :func:`minimize`: best point ``(dim,)``, its value, evaluations spent."""

    x: torch.Tensor
    fun: float
    evaluations: int
    iterations: int


def minimize(
    objective: Callable[[torch.Tensor], torch.Tensor],
    x0: torch.Tensor,
    *,
    budget: int,
    **options: Any,
) -> MinimizeResult:
    """Minimise a batched ``objective: (N, dim) -> (N,)`` from ``x0 (dim,)`` in at most ``budget``
    evaluations. ``options`` go to :class:`PolyStepES`; by default both radii follow a cosine
    decay over the run, from 1.0 (step) and 2.0 (probe) to 1e-4 of that.
    """
    from polystep.epsilon import CosineEpsilon

    x0 = torch.as_tensor(x0)
    if x0.ndim != 1:
        raise ValueError(f"x0 must be 1-D (dim,), got shape {tuple(x0.shape)}")
    check_positive_int("budget", budget)
    dim = int(x0.shape[0])
    popsize = (
        options.get("num_particles", 1)
        * num_vertices(options.get("polytope", "orthoplex"), dim)
        * options.get("num_probe", 1)
    )
    steps = budget // popsize
    if steps < 1:
        raise ValueError(f"budget must be at least one population ({popsize}), got {budget}")
    options.setdefault("step_radius", CosineEpsilon(init=1.0, target=1e-4, total_steps=steps))
    options.setdefault("probe_radius", CosineEpsilon(init=2.0, target=2e-4, total_steps=steps))
    es = PolyStepES(
        dim, x0=x0, dtype=x0.dtype if x0.is_floating_point() else torch.float32, **options
    )
    for _ in range(steps):
        es.tell(objective(es.ask()))
    assert es.best_x is not None
    return MinimizeResult(
        x=es.best_x, fun=es.best_fitness, evaluations=es.evaluations, iterations=steps
    )
