"""The paper's README network snippet, at reduced size: its arguments mean what they mean there."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from bench_scripts import load_script
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


@pytest.mark.parametrize("restore_best", [True, False])
def test_train_without_validation_keeps_the_lowest_loss_on_the_first_training_batch(
    restore_best: bool,
) -> None:
    """The paper package's restore_best rule: no val_loader, so the weights of lowest loss on
    the run's first training batch (scored after every step) are the model's at the end."""
    splits = load_digits_splits(val_fraction=0.1, seed=0, normalize="standard")
    loader = DataLoader(TensorDataset(*splits.train.tensors), batch_size=128, shuffle=True)
    torch.manual_seed(1)
    x0, y0 = next(iter(loader))
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 10))
    optimizer = readme_optimizer(model)
    loss_fn = nn.CrossEntropyLoss()
    losses: list[float] = []
    weights: list[torch.Tensor] = []

    class Spy:
        def on_step_end(self, state: object, metrics: dict) -> None:
            with torch.no_grad():
                losses.append(float(loss_fn(model(x0), y0)))
            weights.append(torch.cat([p.detach().flatten().clone() for p in model.parameters()]))

    torch.manual_seed(1)  # train() sees x0 first
    config = TrainConfig(epochs=2, progress=False, restore_best=restore_best, callbacks=[Spy()])
    train(model, loader, loss_fn, optimizer, config)
    final = torch.cat([p.detach().flatten() for p in model.parameters()])
    kept = losses.index(min(losses)) if restore_best else len(losses) - 1
    assert torch.equal(final, weights[kept])


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


def test_report_pools_the_draws_of_each_package_with_the_standard_error() -> None:
    script = load_script("seed_examples")
    runs = [
        {"example": "nn", "tag": script.DRAWS_TAG, "seed": 0, "commit": "c0"}
        | {"ours": {"test_accuracy": 0.80}, "theirs": {"test_accuracy": 0.82}},
        {"example": "nn", "tag": "other", "seed": 0, "commit": "c0"}  # not the defaults' tag
        | {"ours": {"test_accuracy": 0.10}, "theirs": {"test_accuracy": 0.10}},
    ]
    probe = {"seed": 0, "commit": "c1"}
    records = [
        probe
        | {"probe": "draw_seed_1", "variant": {"optimizer": {"seed": 1}}}
        | {"ours": {"test_accuracy": 0.82}},
        probe
        | {"probe": "theirs_draw_seed_0", "variant": {"optimizer": {"seed": 0}}}
        | {"ours": {"test_accuracy": 0.78}},
    ]
    text = "\n".join(script.draw_lines(runs, records))
    assert "| ours | seed=1 | 0 | 0.82 | c1 |" in text
    assert "| theirs | seed=0 | 0 | 0.78 | c1 |" in text
    assert "- ours: 2 runs, mean 0.8100, sd 0.0141" in text
    assert "- theirs: 2 runs, mean 0.8000, sd 0.0283" in text
    # Welch: sqrt(0.0002 / 2 + 0.0008 / 2) = 0.0224
    assert "- ours - theirs: +0.0100 (standard error 0.0224)" in text
    assert script.draw_lines(runs, []) == []  # no draw probe, no table


def test_proxy_report_pairs_ours_with_theirs_on_the_same_seeds() -> None:
    script = load_script("seed_examples_proxy")

    def row(side: str, tag: str, seed: int, acc: float, restore: bool | None = None) -> dict:
        space = {"package": side, "space": "hybrid", "restore_best": restore}
        return space | {"tag": tag, "seed": seed, "test_accuracy": acc, "commit": f"c{seed}"}

    rows = [
        row("theirs", "new", 0, 0.90),
        row("theirs", "new", 1, 0.80),
        row("theirs", "", 2, 0.50),  # an untagged run of theirs serves a seed the tag lacks
        row("theirs", "new", 2, 0.70, restore=False),  # not their default: never paired
        row("ours", "new", 0, 0.92),
        row("ours", "new", 1, 0.84),
        row("ours", "new", 2, 0.56),
        row("ours", "new", 3, 0.99),  # no run of theirs at seed 3: left out
        row("ours", "", 2, 0.10),
    ]
    lines = script.paired_lines(rows)
    # differences +0.02, +0.04, +0.06: mean +0.04, sd 0.02, standard error 0.02 / sqrt(3)
    assert lines == [
        "- ours `hybrid` (runs new, commits c0, c1, c2, c3) - theirs, paired over 3 seeds: "
        "+0.0400 (standard error 0.0115); ours mean 0.7733, theirs 0.7333"
    ]  # the untagged tag has one shared seed: no line


def test_draws_count_our_torch_seed_runs_and_their_repeats_once() -> None:
    script = load_script("seed_examples")
    both = {"ours": {"test_accuracy": 0.80}, "theirs": {"test_accuracy": 0.82}}
    runs = [
        {"example": "nn", "tag": script.DRAWS_TAG, "seed": 0, "commit": "c0"} | both,
        {"example": "nn", "tag": script.TORCH_SEED_TAG, "seed": 0, "commit": "c2"}
        | {"ours": {"test_accuracy": 0.84}, "theirs": {"test_accuracy": 0.82}},
    ]
    records = [
        {"seed": 0, "commit": "c1", "probe": "draw_seed_1"}
        | {"variant": {"optimizer": {"seed": 1}}, "ours": {"test_accuracy": 0.82}},
    ]
    text = "\n".join(script.draw_lines(runs, records))
    assert "| ours | default (seed=None: torch's generator) | 0 | 0.84 | c2 |" in text
    assert "- ours: 3 runs, mean 0.8200" in text
    assert "- theirs: 1 runs, mean 0.8200" in text  # their repeat is not counted twice
