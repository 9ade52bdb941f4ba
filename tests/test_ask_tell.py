import pytest
import torch

from polystep import Ackley, PolyStepES, Rastrigin, Sphere, minimize


def run(es: PolyStepES, objective, steps: int) -> None:
    for _ in range(steps):
        es.tell(objective(es.ask()))


def test_ask_shape_and_popsize():
    es = PolyStepES(5, num_particles=3, num_probe=2, polytope="simplex")
    assert es.popsize == 3 * 6 * 2
    assert es.ask().shape == (36, 5)


def test_minimize_sphere_and_ackley():
    x0 = torch.full((10,), 2.0)
    res = minimize(Sphere(dim=10), x0, budget=10_000, seed=0)
    assert res.fun < 1e-4
    assert res.evaluations <= 10_000
    for seed in range(3):
        x0 = torch.randn(10, generator=torch.Generator().manual_seed(seed))
        res = minimize(Ackley(dim=10), x0, budget=20_000, seed=seed, num_particles=4)
        assert res.fun < 1e-2


def test_asked_points_lie_at_step_radius_unless_probe_radius_is_given():
    # As the paper's PolyStepES: ask() returns x +- step_radius along rotated axes.
    es = PolyStepES(5, step_radius=0.3)
    assert torch.allclose(es.ask().norm(dim=1), torch.full((10,), 0.3), atol=1e-6)
    es = PolyStepES(5, step_radius=0.3, probe_radius=1.0)  # the one probe at half of it
    assert torch.allclose(es.ask().norm(dim=1), torch.full((10,), 0.5), atol=1e-6)


def test_improves_mean_and_tracks_best():
    es = PolyStepES(6, x0=torch.ones(6) * 3, step_radius=0.5, probe_radius=1.0, seed=1)
    start = float(Sphere(dim=6)(es.mean[None]))
    run(es, Sphere(dim=6), 100)
    assert float(Sphere(dim=6)(es.mean[None])) < 0.1 * start
    assert es.best_fitness == pytest.approx(float(Sphere(dim=6)(es.best_x[None])), rel=1e-5)


def test_bounds_and_repair_are_respected():
    seen = []

    def objective(x: torch.Tensor) -> torch.Tensor:
        seen.append(x)
        return Rastrigin(dim=4)(x)

    es = PolyStepES(
        4,
        num_particles=2,
        x0=torch.full((4,), 0.9),
        bounds=(-1.0, 1.0),
        step_radius=2.0,
        probe_radius=4.0,
        repair=lambda x: x.round(decimals=1),
    )
    run(es, objective, 20)
    points = torch.cat(seen)
    assert points.abs().max() <= 1.0
    torch.testing.assert_close(points, points.round(decimals=1))
    assert es.positions.abs().max() <= 1.0


def test_state_dict_round_trip():
    es = PolyStepES(4, num_particles=2, seed=5, x0=torch.ones(4))
    run(es, Sphere(dim=4), 3)
    saved = es.state_dict()
    run(es, Sphere(dim=4), 4)
    other = PolyStepES(4, num_particles=2, seed=99, x0=torch.zeros(4))
    other.load_state_dict(saved)
    run(other, Sphere(dim=4), 4)
    assert torch.equal(other.positions, es.positions)
    assert other.best_fitness == es.best_fitness


def test_non_finite_fitness_never_corrupts():
    es = PolyStepES(3, num_particles=2, x0=torch.ones(3))
    for step in range(10):
        x = es.ask()
        f = Sphere(dim=3)(x)
        f[step % 4] = float("nan")
        f[-1] = -float("inf")
        es.tell(f)
    assert torch.isfinite(es.positions).all()
    assert es.best_fitness == pytest.approx(float(Sphere(dim=3)(es.best_x[None])))


def test_protocol_errors():
    es = PolyStepES(2)
    with pytest.raises(RuntimeError, match="before ask"):
        es.tell(torch.zeros(4))
    es.ask()
    with pytest.raises(RuntimeError, match="twice"):
        es.ask()
    with pytest.raises(RuntimeError, match="state_dict"):
        es.state_dict()
    with pytest.raises(ValueError, match="fitness must have 4"):
        es.tell(torch.zeros(5))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"dim": 0}, "dim"),
        ({"num_particles": 0}, "num_particles"),
        ({"epsilon": -1.0}, "epsilon"),
        ({"step_radius": 0.0}, "step_radius"),
        ({"bounds": (1.0, -1.0)}, "bounds"),
        ({"bounds": 3.0}, "bounds"),
        ({"x0": torch.zeros(3)}, "x0"),
        ({"dtype": torch.int32}, "dtype"),
        ({"repair": 3}, "repair"),
        ({"solver": "newton"}, "solver"),
    ],
)
def test_constructor_validation(kwargs, match):
    args = {"dim": 2, **kwargs}
    dim = args.pop("dim")
    with pytest.raises(ValueError, match=match):
        PolyStepES(dim, **args)


def test_minimize_validation():
    with pytest.raises(ValueError, match="budget"):
        minimize(Sphere(dim=2), torch.zeros(2), budget=2)
    with pytest.raises(ValueError, match="x0"):
        minimize(Sphere(dim=2), torch.zeros(2, 2), budget=100)


@pytest.mark.bad_input(
    "PolyStepES.load_state_dict with a state of another size or a broken generator",
    "ValueError naming the field; nothing is changed",
)
def test_states_that_do_not_fit_change_nothing():
    # Moved from test_hardening_numerics: the checkpoint keys are the engine's (``x``) and a bad
    # generator is a ValueError naming it (it was torch's RuntimeError).
    es = PolyStepES(3, num_particles=2, seed=1)
    es.ask()
    es.tell(torch.arange(es.popsize, dtype=torch.float32))
    good, before = es.state_dict(), es.state_dict()
    with pytest.raises(ValueError, match="generator"):
        es.load_state_dict(
            {**good, "x": good["x"] + 1, "generator": torch.ones(3, dtype=torch.uint8)}
        )
    assert torch.equal(es.positions, before["x"])


def test_checkpoints_written_before_the_engine_still_load():
    es = PolyStepES(3, num_particles=2, seed=4, x0=torch.ones(3))
    run(es, Sphere(dim=3), 3)
    new = es.state_dict()
    old = {k: v for k, v in new.items() if k not in ("format", "x", "best", "draw")}
    old.update(positions=new["x"], best_fitness=new["best"])
    other = PolyStepES(3, num_particles=2, seed=0)
    other.load_state_dict(old)
    run(es, Sphere(dim=3), 2)
    run(other, Sphere(dim=3), 2)
    assert torch.equal(other.positions, es.positions) and other.best == es.best
