"""Baselines: budget accounting, OpenAI-ES, SPSA, CMA-ES, Adam on smooth twins."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from polystep.ask_tell import PolyStepES
from polystep.baselines import (
    CMAES,
    SPSA,
    Budget,
    BudgetExceeded,
    CountedObjective,
    ModuleObjective,
    OpenAIES,
    accuracy,
    centered_ranks,
    make_baseline,
    make_nn_baseline,
    run_ask_tell,
)
from polystep.data import load_digits_splits, make_loaders
from polystep.deadline import StepBudget
from polystep.nn import mlp, smooth_twin, spiking_mlp
from polystep.training import TrainConfig, train

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


@pytest.mark.parametrize("make", [OpenAIES, SPSA, CMAES, PolyStepES], ids=lambda c: c.__name__)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.int64])
def test_every_search_refuses_a_dtype_other_than_float32_or_float64(
    make: type, dtype: torch.dtype
) -> None:
    with pytest.raises(ValueError, match=r"dtype must be torch\.float32 or torch\.float64"):
        make(4, dtype=dtype)


def test_openai_es_tell_checks() -> None:
    es = OpenAIES(3, popsize=4)
    with pytest.raises(RuntimeError, match="ask"):
        es.tell(torch.zeros(4))
    es.ask()
    with pytest.raises(ValueError, match="fitness"):
        es.tell(torch.zeros(3))


# --------------------------------------------------------------------------- SPSA / CMA-ES


def _make(name: str, dim: int, **kw: object) -> object:
    if name == "openai_es":
        return OpenAIES(dim, popsize=20, seed=1, **kw)
    if name == "spsa":
        return SPSA(dim, seed=1, **kw)
    return CMAES(dim, seed=1, popsize=10, **kw)


@pytest.mark.parametrize("name", ["openai_es", "spsa", "cmaes"])
def test_each_baseline_improves_quadratic_and_never_exceeds_budget(name: str) -> None:
    dim = 8
    opt = _make(name, dim)
    start = float(quadratic(torch.zeros(1, dim))[0])
    budget = Budget(max_evals=1013)
    seen: list[dict] = []
    result = opt.run(quadratic, budget, callback=seen.append)
    pop = opt.popsize
    assert result.evaluations == budget.evaluations == (1013 // pop) * pop <= 1013
    assert opt.evaluations == result.evaluations
    assert len(seen) == 1013 // pop and seen[-1]["evaluations"] == result.evaluations
    assert result.fitness < 0.1 * start
    assert float(quadratic(opt.mean[None])[0]) < 0.1 * start
    assert result.x.shape == (dim,)


def test_spsa_gains_and_step_direction() -> None:
    opt = SPSA(3, a=0.5, c=0.2, stability=0.0, seed=0, dtype=torch.float64)
    assert opt.gains(0) == pytest.approx((0.5, 0.2))
    x = opt.ask()
    assert x.shape == (2, 3)
    assert torch.allclose((x[0] - x[1]).abs(), torch.full((3,), 0.4, dtype=torch.float64))
    opt.tell(torch.tensor([1.0, 0.0]))
    delta = (x[0] - x[1]) / 0.4
    assert torch.allclose(opt.mean, -0.5 * (1.0 / 0.4) * delta)
    with pytest.raises(ValueError, match="num_directions"):
        SPSA(3, num_directions=0)


def test_spsa_non_finite_pairs_are_ignored() -> None:
    opt = SPSA(4, num_directions=2, seed=0)
    opt.ask()
    opt.tell(torch.tensor([float("nan"), 1.0, 0.0, 0.0]))
    assert torch.isfinite(opt.mean).all()


def test_cmaes_diagonal_switch_and_checks() -> None:
    assert CMAES(20).diagonal is False
    assert CMAES(20, diagonal_above=10).diagonal is True
    big = CMAES(1500, popsize=4)
    assert big.diagonal is True and big.ask().shape == (4, 1500)
    es = CMAES(5, popsize=6, dtype=torch.float64)
    x = es.ask()
    es.tell(torch.tensor([float("inf"), 1.0, 2.0, 3.0, float("nan"), 0.5]))
    assert es.best_fitness == 0.5 and torch.equal(es.best_x, x[5])
    with pytest.raises(ValueError, match="dim"):
        CMAES(1)
    with pytest.raises(ValueError, match="sigma0"):
        CMAES(4, sigma0=0.0)


def test_cmaes_seeded() -> None:
    a, b = CMAES(6, seed=3), CMAES(6, seed=3)
    xa, xb = a.ask(), b.ask()  # interleaved: each instance owns its generator
    assert torch.equal(xa, xb)
    a.tell(quadratic(xa))
    b.tell(quadratic(xb))
    assert torch.equal(a.ask(), b.ask())
    assert not torch.equal(CMAES(6, seed=4).ask(), xa)


# --------------------------------------------------------------------------- models


def _digits_stream(batch_size: int = 128) -> tuple[object, object]:
    s = load_digits_splits(val_fraction=0.1, seed=0)
    return make_loaders(s, batch_size, seed=0), s


def test_module_objective_matches_direct_forward_and_loop() -> None:
    torch.manual_seed(0)
    model = spiking_mlp((64, 12, 10), num_steps=4)
    loaders, _ = _digits_stream(32)
    obj = ModuleObjective(model, nn.CrossEntropyLoss(), loaders.train, chunk_size=3)
    assert obj.dim == sum(p.numel() for p in model.parameters())
    X = obj.x0[None] + 0.3 * torch.randn(5, obj.dim)
    losses = obj(X)
    x, y = obj.batch
    twin = ModuleObjective(model, nn.CrossEntropyLoss(), resample=False, vectorize=False)
    twin.set_batch(x, y)
    assert torch.allclose(losses, twin(X), atol=1e-5)
    with torch.no_grad():
        direct = nn.CrossEntropyLoss()(obj.load(X[2], spiking_mlp((64, 12, 10), num_steps=4))(x), y)
    assert torch.allclose(losses[2], direct, atol=1e-5)
    for _ in range(15):  # stream wraps around into a new epoch
        obj.next_batch()
    assert obj.batches_drawn == 16


SMOKE_SETTINGS = {
    "openai_es": lambda d, x0: OpenAIES(d, popsize=20, sigma=0.05, learning_rate=0.03, x0=x0),
    "spsa": lambda d, x0: SPSA(d, a=1.0, c=0.05, num_directions=10, x0=x0),
    "cmaes": lambda d, x0: CMAES(d, popsize=20, sigma0=0.05, x0=x0),
}


@pytest.mark.parametrize("name", sorted(SMOKE_SETTINGS))
def test_each_baseline_improves_digits_smoke_task(name: str) -> None:
    torch.manual_seed(0)
    model = mlp((64, 16, 10))
    loaders, splits = _digits_stream(256)
    obj = ModuleObjective(model, nn.CrossEntropyLoss(), loaders.train)
    fixed = ModuleObjective(model, nn.CrossEntropyLoss(), resample=False)
    fixed.set_batch(*splits.val.tensors)
    start = float(fixed(obj.x0[None])[0])
    opt = SMOKE_SETTINGS[name](obj.dim, obj.x0)
    budget = Budget(max_evals=1210)
    opt.run(obj, budget)
    assert budget.evaluations == 1200 and obj.batches_drawn == 60
    end = float(fixed(opt.mean[None])[0])
    assert end < start - 0.3, (start, end)


def test_adam_on_smooth_twin_through_train_respects_budget_and_learns() -> None:
    torch.manual_seed(0)
    hard = spiking_mlp((64, 32, 10), num_steps=4)
    twin = smooth_twin(hard)
    loaders, _ = _digits_stream(64)
    before = accuracy(twin, loaders.val)
    adam = torch.optim.Adam(twin.parameters(), lr=2e-2)
    config = TrainConfig(epochs=None, max_evaluations=70, progress=False)
    history = train(twin, loaders.train, nn.CrossEntropyLoss(), adam, config)
    assert history[-1]["step"] == history[-1]["evaluations"] == 70
    assert history[-1]["epoch"] == 3  # 21 batches per epoch: step 70 is in the fourth
    after = accuracy(twin, loaders.val)
    assert after > max(before + 0.3, 0.6), (before, after)
    hard.load_state_dict(twin.state_dict())
    assert 0.0 <= accuracy(hard, loaders.val) <= 1.0


def test_wall_clock_budget_stops_run() -> None:
    now = [0.0]

    def objective(x: torch.Tensor) -> torch.Tensor:
        now[0] += 1.0  # each generation takes one fake second
        return quadratic(x)

    budget = Budget(max_seconds=5.0, clock=lambda: now[0])
    result = run_ask_tell(OpenAIES(3, popsize=4), objective, budget)
    assert len(result.history) == 5 and result.evaluations == 20
    both = Budget(max_evals=12, max_seconds=100.0, clock=lambda: now[0])
    assert run_ask_tell(OpenAIES(3, popsize=4), objective, both).evaluations == 12


def test_one_budget_never_starts_a_generation_it_cannot_finish() -> None:
    now = [0.0]

    def objective(x: torch.Tensor) -> torch.Tensor:
        now[0] += 3.0  # each generation takes three fake seconds
        return quadratic(x)

    budget = Budget(max_seconds=10.0, clock=lambda: now[0])
    assert isinstance(budget, StepBudget)  # the budget of train() and the bench
    result = run_ask_tell(OpenAIES(3, popsize=4), objective, budget)
    # Generations start at 0, 3 and 6 s; the one that would start at 9 s would end at 12 s.
    assert len(result.history) == budget.steps == 3 and now[0] == 9.0
    recent = list(budget.recent)
    assert not budget.exhausted() and list(budget.recent) == recent  # asking times nothing


def test_module_objective_names_an_empty_stream() -> None:
    objective = ModuleObjective(nn.Linear(2, 1), nn.MSELoss(), [])
    with pytest.raises(ValueError, match="yielded no batch"):
        objective(torch.zeros(1, 3))


def test_openai_es_linear_lr_decay() -> None:
    es = OpenAIES(2, popsize=2, learning_rate=0.1, lr_decay=4)
    rates = []
    for _ in range(5):
        rates.append(es.current_learning_rate)
        es.ask()
        es.tell(torch.tensor([1.0, 0.0]))
    assert rates == pytest.approx([0.1, 0.075, 0.05, 0.025, 0.0])
    before = es.mean.clone()
    es.ask()
    es.tell(torch.tensor([1.0, 0.0]))
    assert torch.equal(es.mean, before)


def test_make_baseline_registry() -> None:
    assert isinstance(make_baseline("spsa", 4, a=0.2), SPSA)
    assert make_baseline("openai_es", 4, popsize=6).popsize == 6
    with pytest.raises(ValueError, match="name"):
        make_baseline("nelder_mead", 4)
    es = make_nn_baseline("openai_es", 4, seed=1, sigma=0.5)
    assert es.popsize == 50 and es.sigma == 0.5
    assert make_nn_baseline("cmaes", 4).popsize == 50
    with pytest.raises(ValueError, match="name"):
        make_nn_baseline("adam", 4)
