import subprocess
import sys

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from polystep import Ackley, Levy, PolyStep, Rastrigin, Rosenbrock, Sphere
from polystep.step import Duals, StepRule


def start(seed: int, n: int = 100, dim: int = 10, dtype=torch.float32) -> torch.Tensor:
    return torch.randn(n, dim, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def test_seed_snippet_runs_unchanged():
    code = (
        "import torch\n"
        "from polystep import PolyStep, Ackley\n"
        "solver = PolyStep.create(Ackley(dim=10), epsilon=0.5, max_iteration=50)\n"
        "state = solver.run(torch.randn(100, 10))\n"
        'print(f"Best cost: {min(state.costs):.4f}")\n'
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    value = float(out.stdout.strip().split(":")[1])
    assert value < 0.1


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_converges_on_sphere_and_ackley(seed):
    sphere = PolyStep.create(Sphere(dim=10), epsilon=0.5, max_iterations=60, seed=seed)
    assert min(sphere.run(start(seed)).costs) < 1e-6
    ackley = PolyStep.create(Ackley(dim=10), epsilon=0.5, max_iterations=50, seed=seed)
    assert min(ackley.run(start(seed)).costs) < 1e-2


def test_costs_are_objective_values_of_particles():
    solver = PolyStep.create(Sphere(dim=3), max_iterations=5)
    state = solver.run(start(0, n=4, dim=3))
    assert len(state.costs) == 5
    assert state.costs[-1] == pytest.approx(float(Sphere(dim=3)(state.positions).min()))
    assert state.best_cost <= min(state.costs)
    assert state.evaluations == 4 + 5 * (4 * 6 + 4)


def test_determinism_same_seed_identical_different_seed_differs():
    a = PolyStep.create(Rastrigin(dim=5), max_iterations=10, seed=7).run(start(0, dim=5))
    b = PolyStep.create(Rastrigin(dim=5), max_iterations=10, seed=7).run(start(0, dim=5))
    c = PolyStep.create(Rastrigin(dim=5), max_iterations=10, seed=8).run(start(0, dim=5))
    assert torch.equal(a.positions, b.positions)
    assert a.costs == b.costs
    assert not torch.equal(a.positions, c.positions)


@pytest.mark.parametrize("solver_name", ["softmax", "sinkhorn", "greedy"])
def test_state_dict_round_trip_continues_same_trajectory(solver_name):
    solver = PolyStep.create(Levy(dim=4), max_iterations=12, solver=solver_name, seed=3)
    full = solver.run(start(1, n=6, dim=4))
    state = solver.init_state(start(1, n=6, dim=4))
    for _ in range(5):
        solver.step(state)
    saved = state.state_dict()
    fresh = solver.init_state(start(9, n=6, dim=4))
    fresh.load_state_dict(saved)
    while fresh.iteration < 12:
        solver.step(fresh)
    assert torch.equal(fresh.positions, full.positions)
    assert fresh.costs == full.costs


def test_non_finite_costs_never_produce_nan_positions():
    def nasty(x: torch.Tensor) -> torch.Tensor:
        values = (x * x).sum(1)
        values[::3] = float("nan")
        values[1::5] = float("inf")
        values[2::7] = -float("inf")
        return values

    solver = PolyStep.create(nasty, dim=4, max_iterations=20)
    state = solver.run(start(2, n=8, dim=4))
    assert torch.isfinite(state.positions).all()


def test_all_nan_objective_leaves_particles_still():
    solver = PolyStep.create(lambda x: torch.full((x.shape[0],), float("nan")), dim=3)
    x = start(0, n=5, dim=3)
    state = solver.init_state(x)
    solver.step(state)
    torch.testing.assert_close(state.positions, x)


def test_chunked_evaluation_matches_unchunked():
    sizes = []

    def spy(x: torch.Tensor) -> torch.Tensor:
        sizes.append(x.shape[0])
        return Rosenbrock(dim=3)(x)

    a = PolyStep.create(spy, dim=3, max_iterations=3, chunk_size=7).run(start(0, n=5, dim=3))
    assert max(sizes) <= 7
    b = PolyStep.create(Rosenbrock(dim=3), max_iterations=3).run(start(0, n=5, dim=3))
    assert torch.equal(a.positions, b.positions)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"epsilon": 0.0}, "epsilon"),
        ({"epsilon": "hot"}, "epsilon"),
        ({"step_radius": -1.0}, "step_radius"),
        ({"probe_radius": float("nan")}, "probe_radius"),
        ({"polytope": "ball"}, "polytope"),
        ({"num_probe": 0}, "num_probe"),
        ({"solver": "adam"}, "solver"),
        ({"scale_cost": "median"}, "scale_cost"),
        ({"max_iterations": 0}, "max_iterations"),
        ({"chunk_size": 0}, "chunk_size"),
        ({"dim": -2}, "dim"),
    ],
)
def test_every_argument_validated(kwargs, match):
    with pytest.raises(ValueError, match=match):
        PolyStep.create(Sphere(dim=2), **kwargs)


def test_unknown_keyword_and_bad_start():
    with pytest.raises(TypeError, match="unexpected"):
        PolyStep.create(Sphere(dim=2), max_iters=3)
    solver = PolyStep.create(Sphere(dim=2))
    with pytest.raises(ValueError, match=r"shape \(N, 2\)"):
        solver.init_state(torch.zeros(3, 4))
    with pytest.raises(ValueError, match="floating-point"):
        solver.init_state(torch.zeros(3, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="dim must be given"):
        PolyStep.create(lambda x: x.sum(1))


@settings(max_examples=25, deadline=None)
@given(
    n=st.integers(1, 5),
    dim=st.integers(1, 6),
    dtype=st.sampled_from([torch.float32, torch.float64]),
    polytope=st.sampled_from(["orthoplex", "simplex", "cube"]),
    num_probe=st.integers(1, 3),
    solver_name=st.sampled_from(["softmax", "sinkhorn", "greedy"]),
)
def test_shapes_and_dtypes_are_preserved(n, dim, dtype, polytope, num_probe, solver_name):
    solver = PolyStep.create(
        Sphere(dim=dim),
        max_iterations=2,
        polytope=polytope,
        num_probe=num_probe,
        solver=solver_name,
    )
    state = solver.run(start(0, n=n, dim=dim, dtype=dtype))
    assert state.positions.shape == (n, dim)
    assert state.positions.dtype == dtype
    assert torch.isfinite(state.positions).all()


def test_step_rule_move_is_bounded_by_step_radius():
    rule = StepRule.build(epsilon=0.1, step_radius=0.3, probe_radius=1.0)
    x = torch.zeros(10, 4, dtype=torch.float64)
    g = torch.Generator().manual_seed(0)
    proposal = rule.propose(x, 0, g)
    losses = torch.rand(proposal.probes.shape[:3], generator=g, dtype=torch.float64)
    moved, _ = rule.update(x, proposal, losses, 0, Duals())
    assert (moved.norm(dim=1) <= 0.3 + 1e-12).all()


def test_states_that_do_not_fit_change_nothing():
    # Moved from test_hardening_numerics (engine keys; a named ValueError, was RuntimeError).
    solver = PolyStep.create(lambda x: (x**2).sum(1), dim=3, max_iterations=2)
    state = solver.init_state(torch.ones(2, 3))
    saved = state.state_dict()
    bad = {**saved, "x": torch.zeros(2, 3), "generator": torch.ones(3, dtype=torch.uint8)}
    with pytest.raises(ValueError, match="generator"):
        state.load_state_dict(bad)
    assert torch.equal(state.positions, torch.ones(2, 3))
    with pytest.raises(ValueError, match="costs"):
        state.load_state_dict({**saved, "costs": None})


def test_checkpoints_written_before_the_engine_still_load():
    solver = PolyStep.create(Sphere(dim=2), max_iterations=4, seed=2)
    state = solver.run(start(0, n=3, dim=2))
    new = state.state_dict()
    old = {k: v for k, v in new.items() if k not in ("format", "x", "best", "draw")}
    old.update(positions=new["x"], best_cost=new["best"])
    fresh = solver.init_state(start(5, n=3, dim=2))
    fresh.load_state_dict(old)
    assert torch.equal(fresh.positions, state.positions) and fresh.best == state.best
