"""Numerics at the edges: costs beyond the float32 range, and steps that saw no finite cost."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from polystep import PolyStepOptimizer
from polystep.ask_tell import PolyStepES
from polystep.solver import PolyStep
from polystep.transport import prepare_costs

HUGE = 3.0e38  # finite in float32; HUGE - (-HUGE) is not


def huge_costs(n: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """From -HUGE to +HUGE, evenly spaced, in a fixed shuffled order: ``(n,)``."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(n))
    return (torch.linspace(-1.0, 1.0, n, dtype=dtype) * HUGE)[order]


@pytest.mark.parametrize("scale", [None, "mean", "max", 2.0])
def test_prepare_costs_stays_finite_for_a_span_beyond_float32(scale: str | float | None) -> None:
    costs = huge_costs(12).reshape(3, 4)
    costs[0, 1] = float("nan")
    out = prepare_costs(costs, scale)
    assert torch.isfinite(out).all()
    finite = torch.isfinite(costs)
    assert out[finite].min() == 0.0 and out[~finite].min() > out[finite].max()


@pytest.mark.parametrize("solver", ["softmax", "sinkhorn", "greedy"])
@pytest.mark.bad_input(
    "float32 costs spanning more than the float32 range",
    "costs are shaped in float64; positions stay finite",
)
def test_ask_tell_positions_stay_finite_for_float32_costs_beyond_the_range(solver: str) -> None:
    es = PolyStepES(3, num_particles=2, solver=solver, x0=torch.ones(3), seed=1)
    for _ in range(3):
        points = es.ask()
        es.tell(huge_costs(points.shape[0]))
        assert torch.isfinite(es.positions).all()
    assert not torch.equal(es.positions, torch.ones(2, 3))  # it did move


def test_solver_positions_stay_finite_for_float32_costs_beyond_the_range() -> None:
    solver = PolyStep.create(lambda x: huge_costs(x.shape[0]), dim=4, max_iterations=3)
    state = solver.run(torch.zeros(3, 4))
    assert torch.isfinite(state.positions).all()


@pytest.mark.parametrize("polytope", ["orthoplex", "simplex", "cube"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_all_nan_step_leaves_es_particles_exactly_where_they_were(
    polytope: str, dtype: torch.dtype
) -> None:
    es = PolyStepES(5, num_particles=3, polytope=polytope, dtype=dtype, seed=2)
    es.ask()
    es.tell(torch.rand(es.popsize, dtype=dtype) + torch.arange(es.popsize))  # move off zero
    before = es.positions.clone()
    es.ask()
    es.tell(torch.full((es.popsize,), float("nan")))
    assert torch.equal(es.positions, before)


def test_all_nan_solver_step_leaves_particles_exactly_where_they_were() -> None:
    solver = PolyStep.create(lambda x: torch.full((x.shape[0],), float("nan")), dim=3)
    x = torch.randn(5, 3, generator=torch.Generator().manual_seed(0))
    state = solver.init_state(x)
    solver.step(state)
    assert torch.equal(state.positions, x)


@pytest.mark.bad_input(
    "one particle sees only NaN/inf costs",
    "that particle stays exactly where it was; the others move",
)
def test_a_particle_with_no_finite_cost_stays_while_the_others_move() -> None:
    es = PolyStepES(4, num_particles=2, x0=torch.ones(4), seed=3)
    points = es.ask()
    fitness = (points**2).sum(dim=1)
    fitness[: es.popsize // 2] = float("nan")  # particle 0 sees only NaN
    es.tell(fitness)
    assert torch.equal(es.positions[0], torch.ones(4))
    assert not torch.equal(es.positions[1], torch.ones(4))


@pytest.mark.bad_input(
    "a step where every loss is NaN",
    "the weights stay bit-identical",
)
def test_all_nan_optimizer_step_leaves_weights_bit_identical() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 3))
    before = [p.detach().clone() for p in model.parameters()]
    for subspace in ("full", "factored"):
        opt = PolyStepOptimizer(model, subspace=subspace, seed=0)
        for _ in range(2):
            opt.step(lambda: float("nan"))
        for p, q in zip(model.parameters(), before, strict=True):
            assert torch.equal(p, q)
