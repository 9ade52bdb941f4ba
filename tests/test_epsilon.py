import math

import pytest

from polystep.epsilon import (
    Constant,
    CosineEpsilon,
    LinearEpsilon,
    PowerDecay,
    as_schedule,
    from_state,
)


def test_keyword_only_prevents_swapped_arguments():
    with pytest.raises(TypeError):
        CosineEpsilon(1.0, 0.1)  # type: ignore[misc]
    with pytest.raises(TypeError):
        LinearEpsilon(1.0, 0.1)  # type: ignore[misc]


def test_cosine_endpoints_and_midpoint():
    s = CosineEpsilon(init=10.0, target=0.1, total_steps=100)
    assert s(0) == pytest.approx(10.0)
    assert s(50) == pytest.approx(0.1 + 9.9 / 2)
    assert s(100) == pytest.approx(0.1)
    assert s(10_000) == pytest.approx(0.1)


def test_decay_sets_the_period():
    s = CosineEpsilon(init=10.0, target=0.1, decay=0.02)
    assert s(math.ceil(9.9 / 0.02)) == pytest.approx(0.1)
    lin = LinearEpsilon(init=1.0, target=0.5, decay=0.1)
    assert lin(0) == pytest.approx(1.0)
    assert lin(2) == pytest.approx(0.8)
    assert lin(99) == pytest.approx(0.5)


def test_increasing_schedule_is_allowed():
    s = LinearEpsilon(init=0.1, target=1.0, total_steps=10)
    assert s(5) == pytest.approx(0.55)


def test_power_decay():
    s = PowerDecay(init=1.0, gamma=0.5)
    assert s(0) == 1.0
    assert s(3) == pytest.approx(0.25)
    assert PowerDecay(init=1.0, gamma=0.1, target=0.2)(10**6) == 0.2


@pytest.mark.parametrize(
    ("factory", "match"),
    [
        (lambda: CosineEpsilon(init=-1.0, target=0.1, decay=0.1), "init"),
        (lambda: CosineEpsilon(init=1.0, target=0.0, decay=0.1), "target"),
        (lambda: CosineEpsilon(init=1.0, target=0.1)(3), "over the whole run"),
        (lambda: CosineEpsilon(init=1.0, target=0.1, decay=0.1, total_steps=5), "at most one"),
        (lambda: LinearEpsilon(init=1.0, target=0.1, total_steps=0), "total_steps"),
        (lambda: LinearEpsilon(init=1.0, target=0.1, decay=-1.0), "decay"),
        (lambda: PowerDecay(init=1.0, gamma=0.7), "gamma"),
        (lambda: Constant(value=float("nan")), "value"),
        (lambda: as_schedule("fast", "epsilon"), "epsilon"),
        (lambda: as_schedule(0.0, "step_radius"), "step_radius"),
    ],
)
def test_bad_arguments_are_named(factory, match):
    with pytest.raises(ValueError, match=match):
        factory()


def test_state_round_trip():
    for s in [
        Constant(value=0.3),
        CosineEpsilon(init=2.0, target=0.5, decay=0.01),
        LinearEpsilon(init=2.0, target=0.5, total_steps=7),
        PowerDecay(init=3.0, gamma=0.2, target=0.1),
    ]:
        assert from_state(s.state_dict()) == s
    with pytest.raises(ValueError, match="schedule type"):
        from_state({"type": "Nope"})


@pytest.mark.parametrize(
    "schedule",
    [
        Constant(value=0.3),
        CosineEpsilon(init=10.0, target=0.1, decay=0.02),
        LinearEpsilon(init=1.0, target=0.5, total_steps=7),
        PowerDecay(init=2.0, gamma=0.2, target=0.1),
    ],
)
def test_scaled_is_the_same_kind_and_equal_at_every_step(schedule) -> None:
    from polystep.epsilon import scaled

    out = scaled(schedule, 2.5)
    assert type(out) is type(schedule)
    for t in (0, 1, 3, 7, 50, 495, 600, 10**6):
        assert out(t) == pytest.approx(2.5 * schedule(t))
    with pytest.raises(ValueError, match="factor"):
        scaled(schedule, 0.0)
