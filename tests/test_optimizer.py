"""PolyStepOptimizer: learning, closure contract, NaN safety, determinism, state, errors."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from polystep.epsilon import CosineEpsilon
from polystep.optimizer import PRESETS, PolyStepOptimizer
from polystep.subspace import FactoredSubspace, FullSpace, HybridSubspace, SparseProjection
from polystep.transform import ParamLayout


def blobs(n: int = 96, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(3, 8, generator=g) * 2
    y = torch.arange(n) % 3
    return centres[y] + torch.randn(n, 8, generator=g), y


def small_mlp(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))


def params(model: nn.Module) -> torch.Tensor:
    return ParamLayout.from_module(model).flatten(model).clone()


def test_decreases_training_loss_on_small_mlp() -> None:
    x, y = blobs()
    model, loss_fn = small_mlp(), nn.CrossEntropyLoss()
    opt = PolyStepOptimizer(model, subspace="hybrid", seed=0)
    first = opt.step_batch(x, y, loss_fn)
    for _ in range(25):
        last = opt.step_batch(x, y, loss_fn)
    assert last < 0.6 * first
    assert opt.evaluations == 26 * 2 * opt.subspace.dim  # orthoplex: 2 per coordinate


def test_auto_subspace_follows_model_size() -> None:
    assert isinstance(PolyStepOptimizer(nn.Linear(4, 3)).subspace, FullSpace)
    default = PolyStepOptimizer(nn.Linear(100, 50)).subspace
    assert isinstance(default, FactoredSubspace) and default.redraw_every == 1
    snn = PolyStepOptimizer(nn.Linear(100, 50), preset="snn").subspace
    assert isinstance(snn, FactoredSubspace) and snn.redraw_every == 5
    opt = PolyStepOptimizer(nn.Linear(100, 50), subspace="sparse", seed=4)
    assert isinstance(opt.subspace, SparseProjection)
    assert opt.subspace.seed == 4  # the optimizer's seed seeds a seedless subspace


def test_closure_path_matches_batch_path() -> None:
    x, y = blobs(48)
    loss_fn = nn.CrossEntropyLoss()
    a, b = small_mlp().double(), small_mlp().double()
    opt_a = PolyStepOptimizer(a, seed=3)
    opt_b = PolyStepOptimizer(b, seed=3)
    xd = x.double()
    for _ in range(2):
        la = opt_a.step_batch(xd, y, loss_fn)
        lb = opt_b.step(lambda: loss_fn(b(xd), y))
        assert math.isclose(la, lb, rel_tol=1e-12)
    assert torch.allclose(params(a), params(b), atol=1e-10)


def test_closure_must_be_callable() -> None:
    with pytest.raises(ValueError, match="closure"):
        PolyStepOptimizer(small_mlp()).step()


@pytest.mark.parametrize("mode", ["some", "all"])
def test_non_finite_losses_never_corrupt_parameters(mode: str) -> None:
    x, y = blobs(48)
    model, loss_fn = small_mlp(), nn.CrossEntropyLoss()
    opt = PolyStepOptimizer(model, subspace="full", seed=0)
    before = params(model)
    calls = [0]

    def closure() -> float:
        calls[0] += 1
        bad = (mode == "all" and calls[0] > 1) or (mode == "some" and calls[0] % 3 == 0)
        return (
            float("nan")
            if bad and calls[0] % 2
            else float("inf")
            if bad
            else float(loss_fn(model(x), y))
        )

    opt.step(closure)
    after = params(model)
    assert torch.isfinite(after).all()
    if mode == "all":
        assert torch.allclose(after, before, atol=1e-6)  # uniform weights: no move
    else:
        assert not torch.equal(after, before)


def test_determinism_by_seed() -> None:
    x, y = blobs(48)
    runs = []
    for seed in (5, 5, 6):
        model = small_mlp()
        opt = PolyStepOptimizer(model, seed=seed)
        for _ in range(3):
            opt.step_batch(x, y, nn.CrossEntropyLoss())
        runs.append(params(model))
    assert torch.equal(runs[0], runs[1])
    assert not torch.equal(runs[0], runs[2])


def test_state_dict_restores_the_exact_trajectory() -> None:
    x, y = blobs(48)
    loss_fn = nn.CrossEntropyLoss()
    schedule = CosineEpsilon(init=0.2, target=0.05, total_steps=6)

    def make(model: nn.Module) -> PolyStepOptimizer:
        sub = HybridSubspace.from_layout(ParamLayout.from_module(model), rank=2, redraw_every=2)
        return PolyStepOptimizer(model, subspace=sub, epsilon=schedule, seed=1)

    ref_model = small_mlp()
    ref = make(ref_model)
    for _ in range(6):
        ref.step_batch(x, y, loss_fn)
    model = small_mlp()
    opt = make(model)
    for _ in range(3):
        opt.step_batch(x, y, loss_fn)
    saved_model, saved_opt = model.state_dict(), opt.state_dict()
    fresh_model = small_mlp(seed=9)
    fresh_model.load_state_dict(saved_model)
    fresh = make(fresh_model)
    fresh.load_state_dict(saved_opt)
    for _ in range(3):
        fresh.step_batch(x, y, loss_fn)
    assert torch.equal(params(fresh_model), params(ref_model))
    assert fresh.iteration == 6 and fresh.subspace.draw == 3


def test_bad_arguments_are_named() -> None:
    model = small_mlp()
    with pytest.raises(ValueError, match="model must be"):
        PolyStepOptimizer(model.parameters())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="preset"):
        PolyStepOptimizer(model, preset="fastest")
    with pytest.raises(ValueError, match="solver"):
        PolyStepOptimizer(model, solver="adam")
    with pytest.raises(ValueError, match="epsilon"):
        PolyStepOptimizer(model, epsilon=-1.0)
    with pytest.raises(ValueError, match="step_radius"):
        PolyStepOptimizer(model, step_radius=0.0)
    with pytest.raises(ValueError, match="subspace"):
        PolyStepOptimizer(model, subspace="tiny")
    with pytest.raises(ValueError, match="evaluator"):
        PolyStepOptimizer(model, evaluator="gpu")
    with pytest.raises(ValueError, match="seed"):
        PolyStepOptimizer(model, seed=1.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="loss_fn"):
        PolyStepOptimizer(model).step_batch(torch.zeros(2, 8), torch.zeros(2).long())
    with pytest.raises(TypeError):
        PolyStepOptimizer(model, 0.1)  # type: ignore[misc]


def test_presets_exist_and_constructor_is_short() -> None:
    import inspect

    assert {"default", "snn", "quantized"} <= set(PRESETS)
    assert len(inspect.signature(PolyStepOptimizer.__init__).parameters) - 1 <= 12
    for name in PRESETS:
        PolyStepOptimizer(small_mlp(), preset=name)


def test_row_scaling_normalises_each_particle_and_penalises_non_finite() -> None:
    from polystep.parts import shape_rows

    losses = torch.tensor([1.0, 3.0, 100.0, 300.0, 5.0, 5.0, 2.0, float("nan")]).double()
    out = shape_rows(losses.reshape(4, 2))
    assert torch.allclose(out[0], out[1])  # scale-free per particle
    assert torch.equal(out[2], torch.zeros(2, dtype=torch.float64))  # equal costs: no preference
    assert out[3, 0] == 0 and out[3, 1] == 2.0 * out.amax(dim=1)[:3].max() + 1.0  # penalised
    x, y = blobs(48)
    model = small_mlp()
    opt = PolyStepOptimizer(model, scale_cost="row", seed=0)
    first = opt.step_batch(x, y, nn.CrossEntropyLoss())
    for _ in range(10):
        last = opt.step_batch(x, y, nn.CrossEntropyLoss())
    assert last < first and torch.isfinite(params(model)).all()


def test_losses_of_the_wrong_length_are_refused_and_the_step_can_be_retried() -> None:
    x, y = blobs(48)
    loss_fn = nn.CrossEntropyLoss()
    model, twin = small_mlp(), small_mlp()
    opt, ref = PolyStepOptimizer(model, seed=2), PolyStepOptimizer(twin, seed=2)
    score = opt.candidate_losses
    opt.candidate_losses = lambda *a: score(*a)[:-1]  # type: ignore[method-assign]
    with pytest.raises(ValueError, match="losses must have"):
        opt.step_batch(x, y, loss_fn)
    assert opt.iteration == 0 and torch.equal(params(model), params(twin))
    del opt.candidate_losses  # back to the method: the same step as a fresh optimizer's
    opt.step_batch(x, y, loss_fn)
    ref.step_batch(x, y, loss_fn)
    assert torch.equal(params(model), params(twin)) and opt.iteration == 1
