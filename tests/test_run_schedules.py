"""Schedules over the run: a ``Cosine``/``Linear`` with neither ``decay`` nor ``total_steps``
runs from ``init`` to ``target`` over the run; ``train()`` finds the horizon, elsewhere the
caller gives it (``PolyStepOptimizer.set_horizon``); without one a step raises."""

import pytest
import torch
from torch import nn

from polystep.optimizer import PolyStepOptimizer
from polystep.presets import PRESETS, preset_settings
from polystep.schedules import Constant, Cosine, Linear, as_schedule, for_run, from_state, over_run
from polystep.training import TrainConfig, run_steps, set_run_horizon, train


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3)).double()


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.randn(16, 4, generator=g, dtype=torch.float64), torch.arange(16) % 3


def _params(model: nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in model.parameters()])


@pytest.mark.parametrize("kind", [Cosine, Linear])
def test_over_the_run_round_trips_and_equals_total_steps_once_the_horizon_is_known(kind):
    run = kind(init=0.2, target=0.05)
    assert over_run(run) and not over_run(kind(init=0.2, target=0.05, total_steps=9))
    assert not over_run(Constant(value=0.2))
    assert from_state(run.state_dict()) == run
    assert run.state_dict()["decay"] is None and run.state_dict()["total_steps"] is None
    fixed, explicit = for_run(run, steps=9), kind(init=0.2, target=0.05, total_steps=9)
    assert [fixed(t) for t in range(12)] == [explicit(t) for t in range(12)]
    assert for_run(run, fraction=0.0)(5) == run.at_fraction(0.0) == explicit(0)
    assert for_run(run, fraction=2.0)(0) == pytest.approx(0.05)  # clipped at the run's end
    assert for_run(Constant(value=0.3), steps=9) == Constant(value=0.3)  # others unchanged


def test_over_the_run_never_falls_back_to_a_constant():
    with pytest.raises(ValueError, match=r"over the whole run.*set_horizon"):
        Cosine(init=0.2, target=0.05)(0)
    with pytest.raises(ValueError, match="at most one of decay= or total_steps="):
        Cosine(init=0.2, target=0.05, decay=0.01, total_steps=5)
    with pytest.raises(ValueError, match="exactly one of steps= or fraction="):
        for_run(Cosine(init=0.2, target=0.05))
    with pytest.raises(ValueError, match="steps must be"):
        for_run(Cosine(init=0.2, target=0.05), steps=0)


def test_a_schedule_state_dict_is_a_schedule_and_a_bad_one_names_its_parameter():
    state = Cosine(init=0.2, target=0.05).state_dict()
    assert as_schedule(state, "step_radius") == Cosine(init=0.2, target=0.05)
    with pytest.raises(ValueError, match="step_radius holds an invalid schedule state"):
        as_schedule({"type": "Wobble"}, "step_radius")


def test_a_step_without_a_horizon_raises_and_changes_nothing():
    model = _model()
    opt = PolyStepOptimizer(model, step_radius=Cosine(init=0.2, target=0.05), seed=0)
    opt.progress = False
    assert opt.over_run == ["step_radius"]
    assert opt.param_groups[0]["step_radius"] == pytest.approx(0.2)  # the start is known
    before, x_y = _params(model), _batch()
    with pytest.raises(ValueError, match=r"step_radius: schedule over the run.*set_horizon"):
        opt.step_batch(*x_y, nn.CrossEntropyLoss())
    with pytest.raises(ValueError, match="set_horizon"):
        opt.step(lambda: float(nn.CrossEntropyLoss()(model(x_y[0]), x_y[1])))
    assert torch.equal(_params(model), before) and opt.iteration == 0
    opt.param_groups[0]["lr"] = 0.1  # a key the group owns needs no horizon
    assert opt.over_run == []
    opt.step_batch(*x_y, nn.CrossEntropyLoss())


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({}, "exactly one of steps= or progress="),
        ({"steps": 3, "progress": lambda: 0.5}, "exactly one"),
        ({"steps": 0}, "steps must be an int >= 1"),
        ({"steps": True}, "steps must be an int >= 1"),
        ({"progress": 0.5}, "progress must be a callable"),
    ],
)
def test_set_horizon_refuses_bad_input(kwargs, message):
    opt = PolyStepOptimizer(_model(), seed=0)
    with pytest.raises(ValueError, match=message):
        opt.set_horizon(**kwargs)


def _steps(opt: PolyStepOptimizer, n: int) -> list[float]:
    x, y = _batch()
    radii = []
    for _ in range(n):
        opt.step_batch(x, y, nn.CrossEntropyLoss())
        radii.append(opt.param_groups[0]["step_radius"])
    return radii


def test_set_horizon_steps_is_bit_identical_to_total_steps_and_resumes_from_a_state_dict():
    run, fixed = _model(), _model()
    a = PolyStepOptimizer(run, step_radius=Cosine(init=0.2, target=0.05), seed=4)
    b = PolyStepOptimizer(fixed, step_radius=Cosine(init=0.2, target=0.05, total_steps=6), seed=4)
    a.set_horizon(steps=6)
    a.progress = b.progress = False
    assert _steps(a, 3) == _steps(b, 3)
    saved, weights = a.state_dict(), run.state_dict()
    assert saved["state"]["rule"]["step_radius"] == Cosine(init=0.2, target=0.05).state_dict()
    again = _model()
    again.load_state_dict(weights)
    c = PolyStepOptimizer(again, step_radius=Cosine(init=0.2, target=0.05), seed=4)
    c.progress = False
    c.load_state_dict(saved)
    c.set_horizon(steps=6)
    assert _steps(c, 3) == _steps(b, 3)
    assert c.param_groups[0]["step_radius"] == pytest.approx(0.05)
    assert torch.equal(_params(again), _params(fixed))


def test_progress_horizon_takes_the_value_at_the_fraction_read_as_each_step_starts():
    opt = PolyStepOptimizer(_model(), epsilon=Linear(init=0.3, target=0.1), seed=0)
    opt.progress = False
    used = [0.0]
    config = TrainConfig(epochs=None, max_seconds=10.0)
    set_run_horizon(opt, config, None, 99, lambda: used[0])
    used[0] = 5.0  # half of max_seconds
    assert opt.step_rule().epsilon(123) == pytest.approx(0.2)
    used[0] = 20.0
    assert opt.step_rule().epsilon(0) == pytest.approx(0.1)


def test_run_steps_is_the_smallest_step_bound():
    def cfg(**kw):
        return TrainConfig(**{"epochs": None, **kw})

    assert run_steps(cfg(max_steps=7), 5, 10) == 7
    assert run_steps(cfg(epochs=3), 5, 10) == 15
    assert run_steps(cfg(epochs=3, max_steps=7), 5, 10) == 7
    assert run_steps(cfg(max_evaluations=1_000), None, 99) == 10  # 1000 // 99
    assert run_steps(cfg(max_evaluations=50), None, 99) == 1
    assert run_steps(cfg(epochs=1, max_evaluations=1_000), 4, 99) == 4
    assert run_steps(cfg(max_seconds=5.0), None, 99) is None
    assert run_steps(cfg(max_seconds=5.0, max_steps=3), None, 99) == 3
    with pytest.raises(ValueError, match="loader has no len"):
        run_steps(cfg(epochs=2), None, 99)


def _loader() -> list[tuple[torch.Tensor, torch.Tensor]]:
    x, y = _batch()
    return [(x[:8], y[:8]), (x[8:], y[8:])]


def test_train_sets_the_horizon_from_its_limits_and_reaches_the_target():
    model = _model()
    opt = PolyStepOptimizer(model, step_radius=Cosine(init=0.2, target=0.05), seed=0)
    train(model, _loader(), nn.CrossEntropyLoss(), opt, TrainConfig(epochs=3, progress=False))
    assert opt.iteration == 6 and opt.param_groups[0]["step_radius"] == pytest.approx(0.05)


def test_train_over_a_loader_without_length_needs_another_bound():
    model = _model()
    opt = PolyStepOptimizer(model, step_radius=Cosine(init=0.2, target=0.05), seed=0)
    with pytest.raises(ValueError, match="loader has no len"):
        train(model, iter(_loader()), nn.CrossEntropyLoss(), opt, TrainConfig(epochs=1))


def test_train_bounded_by_seconds_only_stays_between_init_and_target():
    model = _model()
    opt = PolyStepOptimizer(model, epsilon=Cosine(init=0.3, target=0.1), seed=0)
    config = TrainConfig(epochs=None, max_seconds=0.5, progress=False, restore_best=False)
    train(model, _loader(), nn.CrossEntropyLoss(), opt, config)
    assert opt.iteration > 0 and 0.1 <= opt.param_groups[0]["epsilon"] <= 0.3


def test_a_preset_dict_with_a_bad_schedule_state_names_the_key():
    bad = {**PRESETS["snn"], "epsilon": {"type": "CosineEpsilon", "init": -1.0, "target": 0.1}}
    with pytest.raises(ValueError, match="preset epsilon holds an invalid schedule state"):
        preset_settings(bad)
    assert preset_settings("snn") == PRESETS["snn"] and preset_settings("snn") is not PRESETS["snn"]
