"""Ask/tell front end: ``PolyStepES`` and the one-call ``minimize``.

The population is the probe points of ``num_particles`` particles in ``R^dim``:
``popsize = num_particles * V * num_probe``. ``ask()`` returns them (clipped to the box bounds,
then passed through ``repair`` when given); ``tell(fitness)`` moves every particle to its
barycentre. The same :class:`~polystep.step.StepRule` drives :class:`~polystep.solver.PolyStep`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from polystep.distributed import sharded
from polystep.engine import DEFAULTS, Engine, Particles, population, resolve, shaping
from polystep.epsilon import scaled
from polystep.schedules import Cosine, Schedule, as_schedule
from polystep.step import StepRule
from polystep.validation import check_float_dtype, check_positive_int


class PolyStepES:
    """Ask/tell PolyStep (minimisation): a front end over the engine's ``"particles"`` space.

    Args:
        dim: search dimension.
        num_particles: independent particles (each spends ``V * num_probe`` evaluations a step).
        epsilon: temperature, in units of the step's mean cost spread (``scale_cost="mean"``).
        step_radius: how far a particle can move in one step.
        probe_radius: where the probes sit (the one probe at half of it); None (default):
            ``2 * step_radius``, so the asked points lie at ``step_radius``, as in the paper's
            ``PolyStepES``.
        polytope, num_probe, solver: as in :class:`~polystep.step.StepRule`.
        x0: start ``(dim,)`` shared by all particles, or ``(num_particles, dim)``; default 0.
        bounds: ``(lower, upper)``, floats or ``(dim,)`` tensors; probes and particles are clipped.
        repair: optional ``(N, dim) -> (N, dim)`` map applied to every asked point after clipping.
        seed: seed of the rotation generator.
        dtype: float32 or float64.

    Attributes: ``positions`` ``(num_particles, dim)``, ``best`` and ``best_x`` (best asked point
    so far; ``best_fitness`` is the old name of ``best``), ``iteration``, ``evaluations``.
    """

    def __init__(
        self,
        dim: int,
        *,
        num_particles: int = 1,
        epsilon: float | Schedule = DEFAULTS["epsilon"],
        step_radius: float | Schedule = 0.5,
        probe_radius: float | Schedule | None = None,
        polytope: str = DEFAULTS["polytope"],
        num_probe: int = DEFAULTS["num_probe"],
        solver: str = DEFAULTS["solver"],
        x0: torch.Tensor | None = None,
        bounds: tuple[Any, Any] | None = None,
        repair: Callable[[torch.Tensor], torch.Tensor] | None = None,
        seed: int = 0,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        check_positive_int("dim", dim)
        check_positive_int("num_particles", num_particles)
        check_float_dtype("dtype", dtype)
        if probe_radius is None:
            probe_radius = scaled(as_schedule(step_radius, "step_radius"), 2.0)
        rule = StepRule.build(
            epsilon=epsilon,
            step_radius=step_radius,
            probe_radius=probe_radius,
            polytope=polytope,
            num_probe=num_probe,
            solver=solver,
        )
        clip = (
            None
            if bounds is None
            else resolve("projection", "clip", bounds=bounds, dim=dim, dtype=dtype)
        )
        fix = None if repair is None else resolve("projection", "repair", fn=repair)
        self.engine = Engine(
            rule,
            Particles(num_particles, dim),
            shaping(DEFAULTS["scale_cost"]),
            projection=clip,
            repair=fix,
        )
        self.rule, self.dim, self.popsize = rule, dim, self.engine.popsize
        start = self._start(x0, num_particles, dtype)
        generator = torch.Generator().manual_seed(int(seed))
        self.state = self.engine.start(start if clip is None else clip(start), generator)

    def _start(
        self, x0: torch.Tensor | None, num_particles: int, dtype: torch.dtype
    ) -> torch.Tensor:
        if x0 is None:
            return torch.zeros(num_particles, self.dim, dtype=dtype)
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
        return start.clone()

    positions = property(lambda self: self.state.x, doc="The particles ``(num_particles, dim)``.")
    best = property(lambda self: self.state.best, doc="Best fitness of an asked point so far.")
    best_fitness = best
    best_x = property(lambda self: self.state.best_x, doc="That point ``(dim,)`` (None before).")
    iteration = property(lambda self: self.state.iteration)
    evaluations = property(lambda self: self.state.evaluations)
    generator = property(lambda self: self.state.generator)
    mean = property(
        lambda self: self.positions.mean(dim=0), doc="Mean of the particles ``(dim,)``."
    )

    def ask(self) -> torch.Tensor:
        """The population to evaluate: ``(popsize, dim)``. Call :meth:`tell` before asking again."""
        return self.engine.ask(self.state)

    def tell(self, fitness: torch.Tensor | Any) -> None:
        """Report ``fitness (popsize,)`` (lower is better; NaN/inf allowed) and take the step."""
        values = torch.as_tensor(fitness, dtype=self.positions.dtype).reshape(-1)
        if values.shape[0] != self.popsize:
            raise ValueError(f"fitness must have {self.popsize} entries, got {values.shape[0]}")
        self.engine.tell(self.state, values)

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue the exact same trajectory (see :mod:`polystep.engine`)."""
        return self.state.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` output; every field is checked before anything changes."""
        self.state.load_state_dict(state)


@dataclass
class MinimizeResult:
    """Outcome of :func:`minimize`: best point ``x (dim,)``, its value ``best``, evaluations
    and steps spent, wall ``seconds``. ``fun`` is the deprecated old name of ``best``."""

    x: torch.Tensor
    best: float
    evaluations: int
    iterations: int
    seconds: float

    fun = property(lambda self: self.best)


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
    x0 = torch.as_tensor(x0)
    if x0.ndim != 1:
        raise ValueError(f"x0 must be 1-D (dim,), got shape {tuple(x0.shape)}")
    check_positive_int("budget", budget)
    dim = int(x0.shape[0])
    polytope, probes = (
        options.get("polytope", DEFAULTS["polytope"]),
        options.get("num_probe", DEFAULTS["num_probe"]),
    )
    popsize = population(polytope, dim, options.get("num_particles", 1), probes)
    steps = budget // popsize
    if steps < 1:
        raise ValueError(f"budget must be at least one population ({popsize}), got {budget}")
    options.setdefault("step_radius", Cosine(init=1.0, target=1e-4, total_steps=steps))
    options.setdefault("probe_radius", Cosine(init=2.0, target=2e-4, total_steps=steps))
    es = PolyStepES(
        dim, x0=x0, dtype=x0.dtype if x0.is_floating_point() else torch.float32, **options
    )
    started = time.perf_counter()
    objective = sharded(objective)  # under torchrun: each rank scores its rows
    for _ in range(steps):
        es.tell(objective(es.ask()))
    assert es.best_x is not None
    seconds = time.perf_counter() - started
    return MinimizeResult(es.best_x, es.best, es.evaluations, steps, seconds)
