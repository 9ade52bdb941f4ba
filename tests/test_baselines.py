"""Baselines: budget accounting, OpenAI-ES, SPSA, CMA-ES, Adam on smooth twins."""

from __future__ import annotations

import pytest
import torch

from polystep.baselines import Budget, BudgetExceeded, CountedObjective, OpenAIES, centered_ranks

torch.set_num_threads(1)


def quadratic(x: torch.Tensor) -> torch.Tensor:
    """Shifted, mildly ill-conditioned quadratic; minimum 0 at x = 1."""
    scales = torch.linspace(1.0, 4.0, x.shape[1], dtype=x.dtype)
    return ((x - 1.0) ** 2 * scales).sum(dim=1)


# --------------------------------------------------------------------------- budget


def test_budget_charges_exactly_and_refuses_overdraft() -> None:
    b = Budget(max_evals=10)
    b.charge(4)
    b.charge(6)
    assert b.evaluations == 10 and b.exhausted()
    with pytest.raises(BudgetExceeded):
        b.charge(1)
    assert b.evaluations == 10


def test_budget_wall_clock_with_fake_clock() -> None:
    now = [0.0]
    b = Budget(max_seconds=2.0, clock=lambda: now[0]).start()
    assert b.allows(10**9)
    now[0] = 2.5
    assert b.time_up() and not b.allows(1)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [({}, "max_evals"), ({"max_evals": 0}, "max_evals"), ({"max_seconds": -1.0}, "max_seconds")],
)
def test_budget_bad_arguments(kwargs: dict, name: str) -> None:
    with pytest.raises(ValueError, match=name):
        Budget(**kwargs)


def test_counted_objective_tracks_best() -> None:
    b = Budget(max_evals=5)
    f = CountedObjective(quadratic, b)
    x = torch.tensor([[0.0, 0.0], [1.0, 1.0], [2.0, 0.0]])
    f(x)
    assert b.evaluations == 3 and f.best_fitness == 0.0
    assert torch.equal(f.best_x, torch.tensor([1.0, 1.0]))
    with pytest.raises(BudgetExceeded):
        f(x)


# --------------------------------------------------------------------------- OpenAI-ES


def test_centered_ranks() -> None:
    r = centered_ranks(torch.tensor([3.0, float("nan"), 1.0, 2.0]))
    assert r.tolist() == pytest.approx([1 / 6, 0.5, -0.5, -1 / 6])


@pytest.mark.parametrize("update", ["adam", "sgd"])
def test_openai_es_improves_quadratic_within_exact_budget(update: str) -> None:
    dim = 10
    lr = 0.05 if update == "adam" else 0.01
    es = OpenAIES(dim, popsize=20, sigma=0.1, learning_rate=lr, seed=1, update=update)
    start = float(quadratic(es.mean[None])[0])
    budget = Budget(max_evals=2010)
    result = es.run(quadratic, budget)
    assert budget.evaluations == 2000 == result.evaluations == es.evaluations
    assert result.fitness < 0.05 * start
    assert float(quadratic(es.mean[None])[0]) < 0.05 * start
    assert es.best_fitness == pytest.approx(result.fitness)


def test_openai_es_ask_tell_api_and_determinism() -> None:
    a = OpenAIES(5, popsize=6, seed=3, dtype=torch.float64)
    b = OpenAIES(5, popsize=6, seed=3, dtype=torch.float64)
    for _ in range(3):
        xa, xb = a.ask(), b.ask()
        assert xa.shape == (6, 5) and xa.dtype == torch.float64
        assert torch.equal(xa, xb)
        assert torch.allclose(xa[:3] + xa[3:], 2 * a.mean[None])  # antithetic pairs
        a.tell(quadratic(xa))
        b.tell(quadratic(xb))
    assert torch.equal(a.mean, b.mean) and a.evaluations == 18 and a.generation == 3
    state = a.state_dict()
    xa = a.ask()
    b.load_state_dict(state)
    assert torch.equal(xa, b.ask())


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"popsize": 5}, "popsize"),
        ({"sigma": 0.0}, "sigma"),
        ({"update": "rmsprop"}, "update"),
        ({"x0": torch.zeros(3)}, "x0"),
        ({"dtype": torch.int32}, "dtype"),
    ],
)
def test_openai_es_bad_arguments(kwargs: dict, name: str) -> None:
    with pytest.raises(ValueError, match=name):
        OpenAIES(4, **kwargs)


def test_openai_es_tell_checks() -> None:
    es = OpenAIES(3, popsize=4)
    with pytest.raises(RuntimeError, match="ask"):
        es.tell(torch.zeros(4))
    es.ask()
    with pytest.raises(ValueError, match="fitness"):
        es.tell(torch.zeros(3))
