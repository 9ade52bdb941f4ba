"""PolyStepOptimizer(seed=None), the default: torch's global generator decides the draws.

As in the paper's package (whose rotations come from torch's global generator), a user's
``torch.manual_seed`` fixes the optimizer's random draws; unlike it, building the optimizer
does not advance the global generator, so the data order and every later draw stay what they
would be without polystep.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from polystep import PolyStepOptimizer


def _blobs() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    y = torch.arange(48) % 3
    return torch.randn(3, 4, generator=g)[y] * 2 + torch.randn(48, 4, generator=g), y


def _model() -> nn.Module:
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))


def _after_steps(torch_seed: int, optimizer_seed: int | None = None) -> torch.Tensor:
    """The flat parameters after 3 steps of a model built after ``torch.manual_seed``."""
    x, y = _blobs()
    torch.manual_seed(torch_seed)
    model = _model()
    opt = PolyStepOptimizer(model, subspace="hybrid", seed=optimizer_seed)
    for _ in range(3):
        opt.step_batch(x, y, nn.functional.cross_entropy)
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def test_torch_manual_seed_fixes_the_default_draws() -> None:
    torch.manual_seed(11)
    first = PolyStepOptimizer(_model(), subspace="hybrid")
    torch.manual_seed(11)
    again = PolyStepOptimizer(_model(), subspace="hybrid")
    torch.manual_seed(12)
    other = PolyStepOptimizer(_model(), subspace="hybrid")
    assert isinstance(first.seed, int) and first.seed == again.seed != other.seed
    assert first.subspace.seed == first.seed  # it also seeds a seedless subspace
    assert torch.equal(_after_steps(3), _after_steps(3))


def test_the_default_draw_leaves_torch_generator_unmoved() -> None:
    model = _model()
    torch.manual_seed(5)
    expected = torch.rand(4)
    torch.manual_seed(5)
    PolyStepOptimizer(model)
    assert torch.equal(torch.rand(4), expected)


def test_the_default_equals_passing_the_seed_it_drew() -> None:
    torch.manual_seed(4)
    drawn = PolyStepOptimizer(_model()).seed
    # same model init (seed 4), the drawn seed passed explicitly: the very same run
    assert torch.equal(_after_steps(4), _after_steps(4, drawn))
    assert not torch.equal(_after_steps(4), _after_steps(4, drawn + 1))


def test_an_explicit_seed_ignores_torch_generator() -> None:
    torch.manual_seed(1)
    a = _after_steps(1, optimizer_seed=7)
    assert PolyStepOptimizer(_model(), seed=7).seed == 7
    assert torch.equal(a, _after_steps(1, optimizer_seed=7))


@pytest.mark.parametrize("bad", [True, 1.5, "0"])
def test_a_seed_that_is_not_an_int_or_none_is_refused(bad: object) -> None:
    with pytest.raises(ValueError, match="seed must be an int or None"):
        PolyStepOptimizer(_model(), seed=bad)  # type: ignore[arg-type]
