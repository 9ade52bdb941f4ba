"""PolyStep on MAX-SAT: the driver :func:`solve_maxsat` (presets: :mod:`.presets`; the OpenAI-ES
baseline: :mod:`.openai_es`).

The search vector is ``theta (n,)`` with the assignment ``1[theta > 0]``; only signs matter, so
the radii below are relative to the initial spread ``init_scale`` of ``theta``. One PolyStep step
probes every block of ``block_dim`` consecutive variables at the ``V`` vertices of its rotated
polytope (``N = P * V`` candidates, each differing from the incumbent in one block), scores them
exactly with :class:`~polystep.problems.maxsat.objective.DeltaEvaluator` (time proportional to
the clauses touched), then moves every block to its softmax barycentre
(the engine, :mod:`polystep.engine`, with its ``"blocks"`` space and a box projection; the
run and its checkpoint are :class:`MaxSATRun`).

Why the preset works: ``theta`` is clipped to a box ``[-0.2, 0.2]^n`` and the probe radius exceeds
the box diameter, so the four vertices of a randomly rotated 2-D orthoplex fall in the four sign
quadrants of the block: the probes score every assignment of the block's two variables. The softmax
barycentre then moves the block toward the cheap quadrants; a variable flips when the move crosses
zero, and variables pushed the same way step after step sit at the box edge (inertia). Decaying
``epsilon`` and both radii turns the early, noisy parallel moves into a near-greedy descent at the
end. See :class:`MaxSATPreset`.

With few evaluations per variable (:func:`preset_for_budget`) the same step runs in a random
subspace instead: a particle is one coordinate that moves a whole group of random variables toward
their flip, so one evaluation decides many variables.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import partial
from typing import Any

import numpy as np
import torch

from polystep.blocks import BlockCandidates, num_blocks
from polystep.distributed import Shard
from polystep.engine import Asked, Blocks, Engine, EngineState, population, resolve, shaping
from polystep.parts import ProblemRun
from polystep.problems.maxsat.io import MaxSATInstance
from polystep.problems.maxsat.objective import DeltaEvaluator
from polystep.problems.maxsat.presets import (  # noqa: F401  (also imported from here)
    DEFAULT_ES,
    DEFAULT_PRESET,
    SUBSPACE_STEPS,
    ESConfig,
    MaxSATPreset,
    preset_for_budget,
)
from polystep.spaces import Direct
from polystep.step import StepRule


@dataclass
class MaxSATResult:
    """Outcome of a run. Costs are weighted unsatisfied counts (plain CNF: unsatisfied clauses).

    ``history`` rows: ``(evaluations, best_cost, incumbent_cost)`` after each step / generation.
    """

    method: str
    best_cost: float
    best_assignment: np.ndarray
    incumbent_cost: float
    incumbent_assignment: np.ndarray
    evaluations: int
    steps: int
    wall_s: float
    history: list[tuple[int, float, float]] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)

    # The engine's names; the fields keep theirs while the bench builds results with them.
    best = property(lambda self: self.best_cost)
    seconds = property(lambda self: self.wall_s)

    def best_at(self, evaluations: int) -> float:
        """Best cost reached within ``evaluations`` (inf if no step finished by then)."""
        best = float("inf")
        for evals, cost, _ in self.history:
            if evals > evaluations:
                break
            best = min(best, cost)
        return best


def satisfied_fraction(instance: MaxSATInstance, cost: float) -> float:
    """Fraction of soft weight satisfied, for a cost that breaks no hard clause (else NaN)."""
    total = instance.soft_weight
    if instance.hard.any() and instance.top is not None and cost >= instance.top:
        return float("nan")
    return 1.0 - cost / total if total > 0 else 1.0


def _cost_unit(instance: MaxSATInstance) -> float:
    soft = instance.weights[~instance.hard]
    return float(soft.mean()) if soft.size else 1.0


def solve_maxsat(
    instance: MaxSATInstance,
    *,
    budget_evals: int,
    seed: int = 0,
    preset: MaxSATPreset | None = None,
    device: torch.device | str = "cpu",
    max_seconds: float | None = None,
    evaluator: DeltaEvaluator | None = None,
    callback: Callable[[dict[str, float]], None] | None = None,
) -> MaxSATResult:
    """Minimise the unsatisfied weight of ``instance`` with PolyStep within ``budget_evals``
    objective evaluations; ``preset=None`` applies :func:`preset_for_budget`.

    A candidate whose assignment equals the incumbent's (one vertex per block: the probe in the
    incumbent's own sign pattern) has the incumbent's known cost and is neither evaluated nor
    counted; every other candidate and each step's new incumbent count one evaluation.
    Returns the best assignment seen and the final incumbent. ``max_seconds`` stops early
    (between steps). Pass a prebuilt ``evaluator`` to reuse its index across seeds.
    ``callback`` gets ``{"step", "evaluations", "cost", "best"}`` after every step.
    """
    run = MaxSATRun(
        instance,
        budget_evals=budget_evals,
        seed=seed,
        preset=preset,
        device=device,
        evaluator=evaluator,
    )
    return run.run(callback, max_seconds)


class MaxSATRun(ProblemRun):
    """One PolyStep run on MAX-SAT as an engine configuration: ``step()`` until ``finished``;
    ``state_dict()`` / ``load_state_dict()`` resume it exactly (the evaluator's incumbent is
    rebuilt from ``theta``). The engine's best so far is the best *incumbent* assignment."""

    def __init__(
        self,
        instance: MaxSATInstance,
        *,
        budget_evals: int,
        seed: int = 0,
        preset: MaxSATPreset | None = None,
        device: torch.device | str = "cpu",
        evaluator: DeltaEvaluator | None = None,
    ) -> None:
        self.start_clock()
        self.instance, self.budget, self.seed = instance, int(budget_evals), int(seed)
        n = instance.num_vars
        self.preset = preset = preset_for_budget(n, budget_evals) if preset is None else preset
        p, device = preset.block_dim, torch.device(device)
        if evaluator is None or (evaluator.block_dim != p and not preset.subspace):
            evaluator = DeltaEvaluator(instance, p, device=device)
        evaluator.x = None  # fresh incumbent
        self.evaluator = evaluator
        num_blk = num_blocks(num_blocks(n, preset.group_size) if preset.subspace else n, p)
        per_block = population(preset.polytope, p, 1, preset.num_probe)
        active = num_blk if preset.blocks_per_step is None else min(num_blk, preset.blocks_per_step)
        self.worst_step = active * per_block + 1
        self.steps = max(0, (self.budget - 1) // (active * (per_block - 1) + 1))
        if preset.subspace:
            space: Any = FlipGroups(evaluator, preset, active, p, max(self.steps, 1))
        else:
            space = Blocks(n, p, None if active == num_blk else active)
        unit = _cost_unit(instance)
        box = (
            None
            if preset.box is None
            else resolve("projection", "clip", bounds=(-preset.box, preset.box))
        )
        self.engine = Engine(
            preset.rule(max(self.steps, 1)),
            space,
            shaping(None if unit == 1.0 else unit),
            projection=box,
        )
        gen = torch.Generator(device=device).manual_seed(self.seed)
        z = preset.init_scale * torch.randn(n, generator=gen, dtype=torch.float32, device=device)
        self.state = self.engine.start(z, gen)
        self.cost = evaluator.set_assignment(z > 0)
        self.state.evaluations = 1
        Engine.record(self.state, z > 0, self.cost)
        self.history = [(1, self.state.best, self.cost)]
        self.shard = Shard()  # under torchrun: candidates split over ranks
        self.config = {"num_vars": n, "budget_evals": self.budget, "preset": asdict(preset)}

    @property
    def finished(self) -> bool:
        """The budget cannot pay for another step (schedules run over ``steps``)."""
        return self.state.evaluations + self.worst_step > self.budget

    def step(self) -> dict[str, float]:
        """Ask, score the candidates exactly, tell, clip, score and keep the new incumbent."""
        state, evaluator = self.state, self.evaluator
        z, asked = state.x, self.engine.ask(state)
        if isinstance(asked, BlockCandidates):
            counted = int(evaluator.flips(z, asked).any(dim=1).sum())
            score = partial(evaluator.costs, z)
        else:
            counted, score = asked.counted, lambda c: evaluator.flip_costs(c.var, c.cand, c.num)
        losses = self.shard.score(score, asked, state=(state, evaluator.x))  # its rows a rank
        self.engine.tell(state, losses, counted=counted + 1)  # + 1: the new incumbent
        assignment = state.x > 0
        self.cost = evaluator.set_assignment(assignment)
        Engine.record(state, assignment, self.cost)
        self.history.append((state.evaluations, state.best, self.cost))
        step = state.iteration - 1
        return {
            "step": step,
            "evaluations": state.evaluations,
            "cost": self.cost,
            "best": state.best,
        }

    def check_own_state(self, saved: dict[str, Any], history: list[Any]) -> dict[str, Any]:
        if not all(isinstance(h, tuple | list) and len(h) == 3 for h in history):
            raise ValueError("history in state must hold (evaluations, best, cost) rows")
        return {"history": [tuple(h) for h in history]}

    def resumed(self) -> None:
        """The evaluator's incumbent is rebuilt from ``theta``: bit-exact when clause weights
        are integers (plain CNF, integer WCNF), whose float64 sums are exact."""
        self.evaluator.x = None
        self.cost = self.evaluator.set_assignment(self.state.x > 0)

    def result(self) -> MaxSATResult:
        state = self.state
        assert state.best_x is not None
        return MaxSATResult(
            method="polystep",
            best_cost=state.best,
            best_assignment=state.best_x.cpu().numpy(),
            incumbent_cost=self.cost,
            incumbent_assignment=(state.x > 0).cpu().numpy(),
            evaluations=state.evaluations,
            steps=len(self.history) - 1,
            wall_s=self.seconds,
            history=list(self.history),
            config={"preset": asdict(self.preset), "seed": self.seed, "budget_evals": self.budget},
        )


@dataclass
class FlipCandidates:
    """A flip-group step's candidates: variable ``var[j]`` flips in candidate ``cand[j]`` (of
    ``num``); ``counted`` candidates flip something."""

    var: torch.Tensor
    cand: torch.Tensor
    num: int
    counted: int


@dataclass(frozen=True)
class FlipGroups(Direct):
    """The subspace space of MAX-SAT: coordinate ``(b, j)`` of particle ``b`` moves ``group``
    fresh random variables, each toward its flip (``theta_i -= sign(theta_i) * u_bj``), so a
    probe far outside the box flips the whole group or none of it."""

    evaluator: DeltaEvaluator
    preset: MaxSATPreset
    num_particles: int
    particle_dim: int
    total_steps: int

    def propose(self, rule: StepRule, state: EngineState) -> Asked:
        z, gen, active, p = state.x, state.generator, self.num_particles, self.particle_dim
        n, device = z.shape[0], z.device
        group = self.preset.group_at(state.iteration, self.total_steps)
        need = active * p * group
        perm = torch.randperm(n, generator=gen, device=device)
        if need > n:
            perm = torch.cat([perm, torch.full((need - n,), n, dtype=perm.dtype, device=device)])
        members = perm[:need].reshape(active, p, group)
        valid = members < n
        safe = torch.where(valid, members, torch.zeros_like(members))
        x = self.evaluator.x
        toward = torch.where(x[safe], -1.0, 1.0).to(z.dtype)
        origin = torch.zeros(active, p, dtype=z.dtype, device=device)
        proposal = rule.propose(origin, state.iteration, gen)
        offsets = proposal.probes.reshape(active, -1, p)  # (active, V*K, p)
        num = offsets.shape[0] * offsets.shape[1]
        moved_theta = z[safe][:, None] + toward[:, None] * offsets[..., None]
        flip = ((moved_theta > 0) != x[safe][:, None]) & valid[:, None]
        cand = torch.arange(num, device=device).reshape(active, -1, 1, 1).expand_as(flip)
        var = safe[:, None].expand_as(flip)
        counted = int(flip.reshape(num, -1).any(dim=1).sum())
        candidates = FlipCandidates(var[flip], cand[flip], num, counted)
        return Asked(origin, proposal, candidates, context=(safe, valid, toward))

    def write(self, state: EngineState, asked: Asked, moved: torch.Tensor) -> torch.Tensor:
        safe, valid, toward = asked.context
        z = state.x.clone()
        z[safe[valid]] += (toward * moved[..., None])[valid]
        return z
