"""User errors in the model or loss propagate; only vmap incompatibilities fall back; a failed
step leaves the optimizer exactly as it was (weights AND random generator)."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from polystep import PolyStepOptimizer
from polystep.evaluate import VmapEvaluator, per_candidate_loss
from polystep.evaluate.base import vmap_incompatibility


def blobs(n: int = 48) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    y = torch.arange(n) % 3
    return torch.randn(n, 6, generator=g) + y[:, None], y


def mlp() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 3))


def weights(model: nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.parameters()]


class FlakyLoss:
    """Cross-entropy that raises ``error`` on call number ``fail_on`` (1-based), once."""

    def __init__(self, fail_on: int, error: Exception) -> None:
        self.calls, self.fail_on, self.error = 0, fail_on, error

    def __call__(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.calls == self.fail_on:
            raise self.error
        return nn.functional.cross_entropy(out, y)


@pytest.mark.parametrize("error", [RuntimeError("flaky loss"), ValueError("flaky loss")])
@pytest.mark.bad_input(
    "loss_fn raises inside the vmap evaluator",
    "the error propagates (hint: evaluator='reference'); no silent one-by-one re-run",
)
def test_loss_raising_once_inside_vmap_propagates_without_fallback(error: Exception) -> None:
    x, y = blobs()
    model = mlp()
    opt = PolyStepOptimizer(model, subspace="full", evaluator="vmap", seed=0)
    loss = FlakyLoss(fail_on=2, error=error)  # call 1: the incumbent; call 2: inside vmap
    before = weights(model)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "fell back" warning either
        with pytest.raises(type(error), match="flaky loss"):
            opt.step_batch(x, y, loss)
    evaluator = opt.evaluator(loss)
    assert isinstance(evaluator, VmapEvaluator) and evaluator.fallback_reason is None
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), before, strict=True))
    assert opt.iteration == 0 and opt.evaluations == 0


class NeedsItem(nn.Module):
    """Not vmap-safe (``.item()`` inside forward), correct when run one call at a time."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.lin(x)
        return out * (1.0 + 0.0 * out.sum().item())


@pytest.mark.bad_input(
    "a model that torch.vmap cannot batch",
    "one RuntimeWarning naming the reason, then the per-candidate evaluator",
)
def test_vmap_incompatibility_still_falls_back_once_with_the_reason() -> None:
    x, y = blobs()
    model = NeedsItem()
    opt = PolyStepOptimizer(model, subspace="full", evaluator="vmap", seed=0)
    loss = nn.CrossEntropyLoss()
    with pytest.warns(RuntimeWarning, match=r"fell back.*vmap.*item"):
        opt.step_batch(x, y, loss)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        opt.step_batch(x, y, loss)  # said once
    assert "item" in opt.evaluator(loss).fallback_reason


def test_per_candidate_loss_propagates_user_errors_and_falls_back_only_for_vmap() -> None:
    outputs, targets = torch.randn(4, 5, 3), torch.randint(0, 3, (5,))

    def broken(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        raise KeyError("user bug")

    with pytest.raises(KeyError, match="user bug"):
        per_candidate_loss(broken, outputs, targets)

    def with_item(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return nn.functional.cross_entropy(out, y) * (1.0 + 0.0 * out.sum().item())

    with pytest.warns(RuntimeWarning, match="vmap"):
        got = per_candidate_loss(with_item, outputs, targets)
    expected = torch.stack([nn.functional.cross_entropy(o, targets) for o in outputs])
    torch.testing.assert_close(got, expected)


def test_vmap_incompatibility_is_recognised_only_for_vmap_errors() -> None:
    assert vmap_incompatibility(ValueError("vmap")) is None
    assert vmap_incompatibility(RuntimeError("mat1 and mat2 shapes cannot be multiplied")) is None
    try:
        torch.vmap(lambda v: v * 2 if bool(v.sum() > 0) else v)(torch.randn(3, 2))
    except RuntimeError as exc:
        assert "vmap" in vmap_incompatibility(exc)
    else:  # pragma: no cover - torch would have to start supporting this
        pytest.fail("vmap accepted data-dependent control flow")


@pytest.mark.parametrize("path", ["closure", "step_batch"])
@pytest.mark.bad_input(
    "a closure or step_batch that raises mid-step",
    "weights and the generator are restored: the next good step equals a fresh optimizer's",
)
def test_a_step_that_raises_rewinds_the_generator(path: str) -> None:
    """After the exception, the next good step equals the first step of a fresh optimizer."""
    x, y = blobs()
    failing, fresh = mlp(), mlp()
    opt = PolyStepOptimizer(failing, subspace="full", evaluator="vmap", seed=4)
    ref = PolyStepOptimizer(fresh, subspace="full", evaluator="vmap", seed=4)
    loss = nn.CrossEntropyLoss()
    if path == "closure":
        calls = [0]

        def closure() -> float:
            calls[0] += 1
            if calls[0] == 3:
                raise RuntimeError("closure failed mid-step")
            return float(loss(failing(x), y))

        with pytest.raises(RuntimeError, match="closure failed"):
            opt.step(closure)
    else:
        with pytest.raises(RuntimeError, match="flaky"):
            opt.step_batch(x, y, FlakyLoss(fail_on=2, error=RuntimeError("flaky")))
    assert all(torch.equal(p, q) for p, q in zip(failing.parameters(), weights(fresh), strict=True))
    opt.step_batch(x, y, loss)
    ref.step_batch(x, y, loss)
    assert all(
        torch.equal(p, q) for p, q in zip(failing.parameters(), fresh.parameters(), strict=True)
    )
    assert not all(
        torch.equal(p, q) for p, q in zip(fresh.parameters(), weights(mlp()), strict=True)
    )
    assert opt.iteration == ref.iteration == 1
