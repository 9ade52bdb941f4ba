"""The paper's README network snippet, at reduced size: its arguments mean what they mean there."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from polystep import PolyStepOptimizer, TrainConfig, train
from polystep import optimizer as optimizer_module
from polystep.data import load_digits_splits
from polystep.epsilon import Constant, CosineEpsilon
from polystep.hybrid_subspace import HybridSubspace
from polystep.transform import ParamLayout


def readme_optimizer(model: nn.Module, **extra: object) -> PolyStepOptimizer:
    """The README snippet's optimizer, argument for argument."""
    layout = ParamLayout.from_module(model)
    subspace = HybridSubspace.from_layout(layout, rank=8)
    return PolyStepOptimizer(
        model,
        subspace=subspace,
        solver="softmax",
        epsilon=CosineEpsilon(init=10.0, target=0.1, decay=0.02),
        step_radius=CosineEpsilon(init=5.0, target=1.0, decay=0.008),
        probe_radius=CosineEpsilon(init=10.0, target=2.0, decay=0.016),
        **extra,  # type: ignore[arg-type]
    )


def test_readme_snippet_learns_digits() -> None:
    # Same shape of run as the README on MNIST (standardised inputs, shuffled after
    # torch.manual_seed(0), 5 epochs of ~11 batches), on the bundled 8x8 digits.
    splits = load_digits_splits(val_fraction=0.1, seed=0, normalize="standard")
    torch.manual_seed(0)
    loader = DataLoader(TensorDataset(*splits.train.tensors), batch_size=128, shuffle=True)
    model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
    optimizer = readme_optimizer(model)
    train(model, loader, nn.CrossEntropyLoss(), optimizer, TrainConfig(epochs=5, progress=False))
    x_test, y_test = splits.test.tensors
    with torch.no_grad():
        accuracy = float((model(x_test).argmax(1) == y_test).float().mean())
    assert optimizer.iteration == 5 * len(loader)
    assert accuracy >= 0.7, accuracy  # chance is 0.1; a space of single-unit moves gets ~0.25


def test_explicit_epsilon_is_in_raw_loss_units_on_the_simplex() -> None:
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))
    raw = readme_optimizer(model)
    assert raw.rule.scale_cost is None and not raw.row_scaled
    assert raw.rule.polytope == "simplex"  # the paper package's default polytope
    preset = PolyStepOptimizer(model)  # the preset's epsilon keeps the preset's choices
    assert preset.row_scaled and preset.rule.polytope == "orthoplex"
    chosen = readme_optimizer(model, scale_cost="mean", polytope="orthoplex")  # explicit wins
    assert chosen.rule.scale_cost == "mean" and chosen.rule.polytope == "orthoplex"


def test_keep_best_restores_the_lowest_loss_on_the_first_training_batch() -> None:
    from polystep.keep_best import KeepBestOnBatch, first_batch

    splits = load_digits_splits(val_fraction=0.1, seed=0, normalize="standard")
    torch.manual_seed(1)
    loader = DataLoader(TensorDataset(*splits.train.tensors), batch_size=128, shuffle=True)
    batch = first_batch(loader)
    assert torch.equal(next(iter(loader))[0], batch[0])  # the global generator was restored
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 10))
    optimizer = readme_optimizer(model)
    keep = KeepBestOnBatch(model, nn.CrossEntropyLoss(), batch, optimizer)
    seen: list[float] = []

    class Spy:
        def on_step_end(self, state: object, metrics: dict) -> None:
            seen.append(keep.loss())

    config = TrainConfig(epochs=1, progress=False, callbacks=[keep, Spy()])
    train(model, loader, nn.CrossEntropyLoss(), optimizer, config)
    assert keep.best_loss == min(seen) and keep.best_step == 1 + seen.index(min(seen))
    assert keep.loss() == pytest.approx(min(seen))  # the kept weights are the model's now
    assert float(optimizer.z.abs().sum()) == 0.0  # re-anchored at the restored weights
    with pytest.raises(ValueError, match="batch"):
        KeepBestOnBatch(model, nn.CrossEntropyLoss(), batch[0])


def test_float_radius_with_epsilon_warns_once_with_the_translation(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(optimizer_module, "_WARNED", set())
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))
    schedule = CosineEpsilon(init=0.5, target=0.1, decay=0.01)
    with pytest.warns(UserWarning, match="multiplies a float step_radius by epsilon") as record:
        PolyStepOptimizer(model, epsilon=schedule, step_radius=2.0)
    meant = CosineEpsilon(init=1.0, target=0.2, decay=0.02)
    assert f"step_radius={meant!r}" in str(record[0].message)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        PolyStepOptimizer(model, epsilon=schedule, step_radius=2.0)  # once per argument
        PolyStepOptimizer(model, step_radius=2.0)  # our convention alone: no warning
        readme_optimizer(model)  # schedules mean the same in both packages
    with pytest.warns(UserWarning, match=r"probe_radius=Constant\(value=0\.2\)"):
        PolyStepOptimizer(model, epsilon=0.1, probe_radius=2.0)
    assert Constant(value=0.2) == Constant(value=0.1 * 2.0)
