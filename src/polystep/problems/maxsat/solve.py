"""PolyStep on MAX-SAT: the preset, the driver :func:`solve_maxsat`, and the OpenAI-ES baseline.

The search vector is ``theta (n,)`` with the assignment ``1[theta > 0]``; only signs matter, so
the radii below are relative to the initial spread ``init_scale`` of ``theta``. One PolyStep step
probes every block of ``block_dim`` consecutive variables at the ``V`` vertices of its rotated
polytope (``N = P * V`` candidates, each differing from the incumbent in one block), scores them
exactly with :class:`~polystep.problems.maxsat.objective.DeltaEvaluator` (time proportional to
the clauses touched), then moves every block to its softmax barycentre
(:func:`polystep.blocks.propose_blocks` / :func:`polystep.blocks.update_blocks`).

Why the preset works: ``theta`` is clipped to a box ``[-0.2, 0.2]^n`` and the probe radius exceeds
the box diameter, so the four vertices of a randomly rotated 2-D orthoplex fall in the four sign
quadrants of the block: the probes score every assignment of the block's two variables. The softmax
barycentre then moves the block toward the cheap quadrants; a variable flips when the move crosses
zero, and variables pushed the same way step after step sit at the box edge (inertia). Decaying
``epsilon`` and both radii turns the early, noisy parallel moves into a near-greedy descent at the
end. See :class:`MaxSATPreset`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from polystep.blocks import (
    BlockCandidates,
    from_blocks,
    num_blocks,
    propose_blocks,
    to_blocks,
    update_blocks,
)
from polystep.epsilon import CosineEpsilon, PowerDecay, Schedule
from polystep.geometry import num_vertices
from polystep.problems.maxsat.io import MaxSATInstance
from polystep.problems.maxsat.objective import ClauseTensors, DeltaEvaluator, unsat_weight
from polystep.step import Duals, StepRule


@dataclass(frozen=True, kw_only=True)
class MaxSATPreset:
    """PolyStep configuration for MAX-SAT (full space, raw ``theta``, one particle per block).

    ``epsilon_*`` are in units of the mean soft-clause weight (costs are divided by it), so for
    plain CNF they count clauses. Radii are distances in ``theta`` coordinates; ``theta`` starts
    at ``init_scale * N(0, 1)``. ``epsilon`` decays with a half cosine over the run, the radii with
    :class:`~polystep.epsilon.CosineEpsilon` as well (``radius_schedule="cosine"``) or with
    :class:`~polystep.epsilon.PowerDecay` (``"power"``, floored at the final value).
    ``blocks_per_step``: probe and move only a random subset of blocks per step (None: all).
    ``box``: after each move ``theta`` is clipped to ``[-box, box]`` (None: no clipping). Only
    signs matter, so this loses nothing, and it keeps every variable within ``box`` of a flip:
    without it ``|theta|`` grows step after step, variables freeze and the run stalls (about
    98.3 % on random 3-SAT at every run length we tried, against 99.1-99.5 % with it).

    Defaults (tuned on generated validation instances, instance seeds >= 1000 and optimiser seeds
    7/8, never on the reported seeds): ``probe_radius`` (10 -> 5) exceeds the box diameter
    (0.4), so the four probes of a block are its four sign patterns; ``step_radius`` (3 -> 1)
    is several box diameters, so a block lands in the quadrant its barycentre points to whenever
    the weights are concentrated, and stays put when they are near uniform; ``epsilon``
    (0.7 -> 0.2 clauses) anneals from a noisy parallel walk to a near-greedy descent. Box
    half-widths 1 / 0.5 / 0.3 / 0.2 / 0.1 gave 99.08 / 99.41 / 99.48 / 99.50 / 99.12 % on a
    10k-variable validation instance (100 steps).
    """

    block_dim: int = 2
    polytope: str = "orthoplex"
    num_probe: int = 1
    init_scale: float = 0.5
    epsilon_init: float = 0.7
    epsilon_final: float = 0.2
    step_radius_init: float = 3.0
    step_radius_final: float = 1.0
    probe_radius_init: float = 10.0
    probe_radius_final: float = 5.0
    radius_schedule: str = "cosine"
    blocks_per_step: int | None = None
    box: float | None = 0.2

    def schedules(self, total_steps: int) -> dict[str, Schedule]:
        """The decaying epsilon / step-radius / probe-radius schedules for a run of this length."""
        total_steps = max(1, int(total_steps))

        def radius(init: float, final: float) -> Schedule:
            if self.radius_schedule == "power":
                return PowerDecay(init=init, gamma=0.1, target=final)
            if self.radius_schedule != "cosine":
                raise ValueError(
                    f"radius_schedule must be 'cosine' or 'power', got {self.radius_schedule!r}"
                )
            return CosineEpsilon(init=init, target=final, total_steps=total_steps)

        return {
            "epsilon": CosineEpsilon(
                init=self.epsilon_init, target=self.epsilon_final, total_steps=total_steps
            ),
            "step_radius": radius(self.step_radius_init, self.step_radius_final),
            "probe_radius": radius(self.probe_radius_init, self.probe_radius_final),
        }

    def rule(self, total_steps: int, cost_unit: float = 1.0) -> StepRule:
        return StepRule.build(
            **self.schedules(total_steps),
            polytope=self.polytope,
            num_probe=self.num_probe,
            solver="softmax",
            scale_cost=None if cost_unit == 1.0 else float(cost_unit),
        )


DEFAULT_PRESET = MaxSATPreset()


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
    preset: MaxSATPreset = DEFAULT_PRESET,
    device: torch.device | str = "cpu",
    max_seconds: float | None = None,
    evaluator: DeltaEvaluator | None = None,
    callback: Callable[[dict[str, float]], None] | None = None,
) -> MaxSATResult:
    """Minimise the unsatisfied weight of ``instance`` with PolyStep within ``budget_evals``
    candidate evaluations (one step costs ``N = P * V * K`` candidates + 1 for the incumbent).

    Returns the best assignment seen and the final incumbent. ``max_seconds`` stops early
    (between steps). Pass a prebuilt ``evaluator`` to reuse its index across seeds.
    """
    t0 = time.perf_counter()
    n, p = instance.num_vars, preset.block_dim
    device = torch.device(device)
    if evaluator is None or evaluator.block_dim != p:
        evaluator = DeltaEvaluator(instance, p, device=device)
    evaluator.x = None  # fresh incumbent
    num_blk = num_blocks(n, p)
    per_block = num_vertices(preset.polytope, p) * preset.num_probe
    active = num_blk if preset.blocks_per_step is None else min(num_blk, preset.blocks_per_step)
    per_step = active * per_block + 1
    steps = max(0, (int(budget_evals) - 1) // per_step)
    rule = preset.rule(max(steps, 1), _cost_unit(instance))
    gen = torch.Generator(device=device).manual_seed(int(seed))
    z = preset.init_scale * torch.randn(n, generator=gen, dtype=torch.float32, device=device)
    cost = evaluator.set_assignment(z > 0)
    evaluations = 1
    best_cost, best_x = cost, (z > 0).clone()
    history = [(evaluations, best_cost, cost)]
    duals = Duals()
    done = 0
    for it in range(steps):
        if max_seconds is not None and time.perf_counter() - t0 > max_seconds:
            break
        if active == num_blk:
            proposal, candidates = propose_blocks(rule, z, p, it, gen)
            losses = evaluator.costs(z, candidates)
            z, duals = update_blocks(rule, z, p, proposal, losses, it, duals)
        else:
            blocks = to_blocks(z, p)
            chosen = torch.randperm(num_blk, generator=gen, device=device)[:active]
            sub = blocks[chosen].reshape(-1)
            proposal, local = propose_blocks(rule, sub, p, it, gen)
            candidates = BlockCandidates(block=chosen[local.block], offset=local.offset, dim=n)
            losses = evaluator.costs(z, candidates)
            moved, duals = update_blocks(rule, sub, p, proposal, losses, it, duals)
            blocks[chosen] = moved.reshape(active, p)
            z = from_blocks(blocks, n)
        if preset.box is not None:
            z = z.clamp(-preset.box, preset.box)
        cost = evaluator.set_assignment(z > 0)
        evaluations += len(candidates) + 1
        done += 1
        if cost < best_cost:
            best_cost, best_x = cost, (z > 0).clone()
        history.append((evaluations, best_cost, cost))
        if callback is not None:
            callback({"step": it, "evaluations": evaluations, "cost": cost, "best": best_cost})
    return MaxSATResult(
        method="polystep",
        best_cost=best_cost,
        best_assignment=best_x.cpu().numpy(),
        incumbent_cost=cost,
        incumbent_assignment=(z > 0).cpu().numpy(),
        evaluations=evaluations,
        steps=done,
        wall_s=time.perf_counter() - t0,
        history=history,
        config={"preset": asdict(preset), "seed": seed, "budget_evals": int(budget_evals)},
    )


@dataclass(frozen=True, kw_only=True)
class ESConfig:
    """OpenAI-ES on ``theta`` (same encoding ``1[theta > 0]``).

    Defaults are the best of a grid (sigma 0.1/0.5/1, learning rate 0.01/0.05/0.2, start spread
    0.1/1) on a generated 1,000-variable validation instance at 50k evaluations."""

    popsize: int = 50
    sigma: float = 0.5
    learning_rate: float = 0.05
    init_scale: float = 0.1


def solve_maxsat_openai_es(
    instance: MaxSATInstance,
    *,
    budget_evals: int,
    seed: int = 0,
    config: ESConfig = ESConfig(),
    device: torch.device | str = "cpu",
    max_seconds: float | None = None,
    clauses: ClauseTensors | None = None,
) -> MaxSATResult:
    """OpenAI-ES (``polystep.baselines.openai_es.OpenAIES``) at a candidate-evaluation budget.

    Each generation evaluates ``popsize`` candidates with the batched full objective; the mean is
    also evaluated (counted) every generation so the incumbent is reported like PolyStep's."""
    from polystep.baselines.openai_es import OpenAIES

    t0 = time.perf_counter()
    device = torch.device(device)
    if clauses is None:
        clauses = ClauseTensors.from_instance(instance, device)
    n = instance.num_vars
    gen = torch.Generator(device=device).manual_seed(int(seed))
    x0 = config.init_scale * torch.randn(n, generator=gen, dtype=torch.float32, device=device)
    es = OpenAIES(
        n,
        popsize=config.popsize,
        sigma=config.sigma,
        learning_rate=config.learning_rate,
        x0=x0,
        seed=seed,
        device=device,
    )
    mean_cost = float(unsat_weight(clauses, es.mean))
    evaluations = 1
    best_cost, best_x = mean_cost, (es.mean > 0).clone()
    history = [(evaluations, best_cost, mean_cost)]
    per_gen = config.popsize + 1
    gens = max(0, (int(budget_evals) - 1) // per_gen)
    done = 0
    for _ in range(gens):
        if max_seconds is not None and time.perf_counter() - t0 > max_seconds:
            break
        population = es.ask()
        fitness = unsat_weight(clauses, population)
        es.tell(fitness)
        mean_cost = float(unsat_weight(clauses, es.mean))
        evaluations += per_gen
        done += 1
        if es.best_fitness < best_cost:
            best_cost, best_x = es.best_fitness, (es.best_x > 0).clone()
        if mean_cost < best_cost:
            best_cost, best_x = mean_cost, (es.mean > 0).clone()
        history.append((evaluations, best_cost, mean_cost))
    return MaxSATResult(
        method="openai-es",
        best_cost=best_cost,
        best_assignment=best_x.cpu().numpy(),
        incumbent_cost=mean_cost,
        incumbent_assignment=(es.mean > 0).cpu().numpy(),
        evaluations=evaluations,
        steps=done,
        wall_s=time.perf_counter() - t0,
        history=history,
        config={"es": asdict(config), "seed": seed, "budget_evals": int(budget_evals)},
    )
