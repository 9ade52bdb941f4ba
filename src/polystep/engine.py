"""The one place a PolyStep step happens: ``ask(state)``, ``tell(state, losses)``.

:class:`EngineState` holds everything a run needs to continue exactly (its fields are the
checkpoint); :class:`Engine` holds configuration only: a :class:`~polystep.step.StepRule`, a
*space* (what the particles are), a cost *shaping*, optional *projections*, a stopping rule.
Every part is a small callable; :func:`resolve` turns a string alias from :data:`REGISTRY` into
one. A front end is an engine configuration plus what is truly its own. A whole MAX-SAT front
end (blocks of ``theta``, assignment ``theta > 0``, clipped to a box, best incumbent kept)::

    import torch
    from polystep.engine import Engine, resolve
    from polystep.problems.maxsat.objective import DeltaEvaluator
    from polystep.step import StepRule

    def solve(instance, steps=50, seed=0, box=0.2):
        evaluator = DeltaEvaluator(instance, 2)
        engine = Engine(
            StepRule.build(epsilon=0.5, step_radius=1.0, probe_radius=5.0),
            space=resolve("space", "blocks", dim=instance.num_vars, block_dim=2),
            projection=resolve("projection", "clip", bounds=(-box, box)),
            max_iterations=steps,
        )
        generator = torch.Generator().manual_seed(seed)
        state = engine.start(0.1 * torch.randn(instance.num_vars, generator=generator), generator)
        while True:
            engine.record(state, state.x > 0, evaluator.set_assignment(state.x > 0))
            if engine.should_stop(state):
                return state.best_x, state.best
            candidates = engine.ask(state)
            state, metrics = engine.tell(state, evaluator.costs(state.x, candidates))
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from polystep.geometry import num_vertices
from polystep.parts import FORMAT_VERSION, SHAPINGS, Clip, Repair, SubspaceDraw, check_state
from polystep.spaces import Asked, Blocks, BlockSubset, Particles, Space, Subspace
from polystep.step import WEIGHT_RULES, Duals, StepRule

Transform = Callable[[torch.Tensor], torch.Tensor]

# The one set of defaults every front end starts from (radii are each front end's own).
DEFAULTS: dict[str, Any] = {
    "epsilon": 0.5,
    "polytope": "orthoplex",
    "num_probe": 1,
    "solver": "softmax",
    "scale_cost": "mean",
}


def population(polytope: str, particle_dim: int, num_particles: int, num_probe: int = 1) -> int:
    """Candidates a step: ``num_particles * V * num_probe`` (``V``: the polytope's vertices)."""
    return num_particles * num_vertices(polytope, particle_dim) * num_probe


@dataclass
class EngineState:
    """Search point ``x`` (particles ``(P, p)`` or a vector ``(D,)``), generator, duals, counters,
    best so far (``best``, ``best_x``) and the subspace draw; ``pending`` is never saved."""

    x: torch.Tensor
    generator: torch.Generator
    duals: Duals = field(default_factory=Duals)
    iteration: int = 0
    evaluations: int = 0
    best: float = math.inf
    best_x: torch.Tensor | None = None
    draw: SubspaceDraw | None = None
    pending: Asked | None = field(default=None, repr=False)

    def state_dict(self) -> dict[str, Any]:
        if self.pending is not None:
            raise RuntimeError("state_dict() between ask() and tell(): tell first")
        draw = self.draw
        return {
            "format": FORMAT_VERSION,
            "x": self.x.clone(),
            "generator": self.generator.get_state(),
            "duals": {"f": self.duals.f, "g": self.duals.g},
            "iteration": self.iteration,
            "evaluations": self.evaluations,
            "best": self.best,
            "best_x": None if self.best_x is None else self.best_x.clone(),
            "draw": None if draw is None else draw.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` output; every field is checked before anything changes."""
        fields = check_state(state, self.x, self.draw)
        self.generator.set_state(fields.pop("generator"))
        for name, value in fields.items():
            setattr(self, name, value)
        self.pending = None


def shaping(value: str | float | Transform | None, name: str = "shaping") -> Transform:
    """A cost shaping from an alias (``"mean"``, ``"max"``, ``"row"``, ``"rank"``; None: raw
    units), a cost unit (float > 0) or a callable ``(P, V) -> (P, V)``."""
    return resolve("shaping", value, name=name)


REGISTRY: dict[str, dict[Any, Callable[..., Any]]] = {
    "shaping": SHAPINGS,
    "projection": {"clip": Clip.build, "repair": Repair.build},
    "space": {
        "particles": Particles,
        "blocks": Blocks,
        "block subset": BlockSubset,
        "subspace": Subspace,
    },
    "weights": {name: (lambda fn=fn: fn) for name, fn in WEIGHT_RULES.items()},
}


def resolve(kind: str, value: Any, /, *, name: str | None = None, **config: Any) -> Any:
    """``REGISTRY[kind][value](**config)``; a callable passes through. Errors name ``name``."""
    if kind not in REGISTRY:
        raise ValueError(f"kind must be one of {sorted(REGISTRY)}, got {kind!r}")
    table = REGISTRY[kind]
    if callable(value) and not isinstance(value, str):
        return value
    number = isinstance(value, int | float) and not isinstance(value, bool)
    if kind == "shaping" and number:
        if not 0 < value < math.inf:
            raise ValueError(
                f"{name or kind} as a cost unit must be positive and finite, got {value!r}"
            )
        return table["unit"](unit=value)
    if not isinstance(value, str | None) or value not in table:
        allowed = ", ".join(repr(k) for k in table if k != "unit")
        unit = " or a positive cost unit" if kind == "shaping" else ""
        raise ValueError(f"{name or kind} must be one of {allowed}{unit}, got {value!r}")
    return table[value](**config)


@dataclass(frozen=True)
class Engine:
    """Configuration of a run: the step rule, the space, the cost shaping, ``projection``
    (applied to dense candidates and to every new ``x``), ``repair`` (dense candidates only),
    and ``max_iterations`` (None: the caller decides when to stop)."""

    rule: StepRule
    space: Space
    shaping: Transform = field(default_factory=lambda: shaping("mean"))
    projection: Transform | None = None
    repair: Transform | None = None
    max_iterations: int | None = None

    @property
    def popsize(self) -> int:
        """Candidates per ask: ``P * V * num_probe``."""
        rule, space = self.rule, self.space
        return population(rule.polytope, space.particle_dim, space.num_particles, rule.num_probe)

    def should_stop(self, state: EngineState) -> bool:
        return self.max_iterations is not None and state.iteration >= self.max_iterations

    def start(self, x: torch.Tensor, generator: torch.Generator) -> EngineState:
        """A fresh state at ``x`` (particles, a vector, or ``theta`` for a subspace), as given
        (not projected): the generator goes on from where the caller left it."""
        x, draw = self.space.start(x, generator)
        return EngineState(x=x, generator=generator, draw=draw)

    def ask(self, state: EngineState) -> Any:
        """Draw the next candidates (dense ones projected, then repaired)."""
        if state.pending is not None:
            raise RuntimeError("ask() called twice: tell(losses) the previous population first")
        asked = self.space.propose(self.rule, state)
        if isinstance(asked.candidates, torch.Tensor):
            for transform in (self.projection, self.repair):
                if transform is not None:
                    asked.candidates = transform(asked.candidates)
        state.pending = asked
        dense = isinstance(asked.candidates, torch.Tensor)
        return asked.candidates.clone() if dense else asked.candidates

    def tell(
        self, state: EngineState, losses: torch.Tensor, *, counted: int | None = None
    ) -> tuple[EngineState, dict[str, float]]:
        """Move to the barycentres from ``losses (N,)`` (NaN/inf allowed); ``counted``
        evaluations are added (default ``N``). Dense candidates also update the best so far."""
        asked = state.pending
        if asked is None:
            raise RuntimeError("tell() called before ask()")
        losses = torch.as_tensor(losses).reshape(-1)
        if losses.shape[0] != self.popsize:
            raise ValueError(f"losses must have {self.popsize} entries, got {losses.shape[0]}")
        state.pending = None
        if isinstance(asked.candidates, torch.Tensor):
            self.record(state, asked.candidates, losses)
        moved, state.duals = self.rule.update(
            asked.particles,
            asked.proposal,
            losses.to(asked.particles.device),
            state.iteration,
            state.duals,
            shaping=self.shaping,
        )
        x = self.space.write(state, asked, moved)
        state.x = x if self.projection is None else self.projection(x)
        state.iteration += 1
        state.evaluations += losses.shape[0] if counted is None else counted
        metrics = {"iteration": state.iteration, "evaluations": state.evaluations}
        return state, {**metrics, "best": state.best}

    @staticmethod
    def record(
        state: EngineState, x: torch.Tensor, value: Any, *, later_ties: bool = False
    ) -> None:
        """Keep the best of ``x`` (one point, value a float; or rows ``(N, ...)``, values
        ``(N,)``); NaN and +-inf never count. ``later_ties``: an equal value replaces the best."""
        if isinstance(value, int | float):  # one point
            best, point = float(value), x
        else:
            values = value.to(torch.float64).reshape(-1)
            clean = torch.where(torch.isfinite(values), values, math.inf)
            index = int(clean.argmin())
            best, point = float(clean[index]), x[index]
        if not math.isfinite(best):
            return
        if best < state.best or (later_ties and best == state.best):
            state.best, state.best_x = best, point.clone()
