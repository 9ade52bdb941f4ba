"""Large models: the preset's space from 10M parameters, a random subset of blocks per step, and
progress within a step."""

from __future__ import annotations

import pytest
import torch
from sklearn.datasets import load_digits
from torch import nn

from polystep import PolyStepOptimizer
from polystep.optimizer import LARGE_MIN_PARAMS, PRESETS, resolve_blocks_per_step
from polystep.subspace import FactoredSubspace, FullSpace


def small_mlp(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))


def subset_optimizer(model: nn.Module, blocks: int, **kwargs: object) -> PolyStepOptimizer:
    """An optimizer searching ``blocks`` random blocks a step, progress off."""
    opt = PolyStepOptimizer(model, **kwargs)  # type: ignore[arg-type]
    opt.blocks_per_step, opt.progress = blocks, False
    return opt


def random_batch(n: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    return torch.randn(n, 64, generator=gen), torch.randint(0, 10, (n,), generator=gen)


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_auto_rule_switches_at_the_threshold(preset: str) -> None:
    large = PRESETS[preset]["large_blocks_per_step"]
    assert resolve_blocks_per_step("auto", LARGE_MIN_PARAMS - 1, PRESETS[preset]) is None
    assert resolve_blocks_per_step("auto", LARGE_MIN_PARAMS, PRESETS[preset]) == large
    assert resolve_blocks_per_step(None, LARGE_MIN_PARAMS, PRESETS[preset]) is None
    assert resolve_blocks_per_step(7, 100, PRESETS[preset]) == 7


def test_large_model_gets_the_factored_space_and_a_block_subset() -> None:
    model = nn.Linear(1000, 10_000)  # 10,010,000 parameters
    opt = PolyStepOptimizer(model)
    assert isinstance(opt.subspace, FactoredSubspace)
    assert opt.blocks_per_step == PRESETS["default"]["large_blocks_per_step"]
    assert PolyStepOptimizer(small_mlp()).blocks_per_step is None


@pytest.mark.parametrize("bad", [0, -1, 2.5, True, "all"])
def test_bad_blocks_per_step_is_named(bad: object) -> None:
    opt = PolyStepOptimizer(small_mlp())
    with pytest.raises(ValueError, match="blocks_per_step"):
        opt.blocks_per_step = bad  # type: ignore[assignment]
    assert opt.blocks_per_step is None


def test_bad_progress_is_named() -> None:
    opt = PolyStepOptimizer(small_mlp())
    with pytest.raises(ValueError, match="progress"):
        opt.progress = "yes"  # type: ignore[assignment]


def test_subset_moves_only_the_chosen_blocks() -> None:
    model = small_mlp()
    before = torch.cat([p.detach().flatten().clone() for p in model.parameters()])
    opt = subset_optimizer(model, 5, subspace="full")
    assert isinstance(opt.subspace, FullSpace)
    x, y = random_batch()
    opt.step_batch(x, y, nn.CrossEntropyLoss())
    vertices = 2 * opt.subspace.block_dim  # orthoplex, one probe
    assert opt.evaluations == 5 * vertices
    after = torch.cat([p.detach().flatten() for p in model.parameters()])
    moved = int((after != before).sum())
    assert 0 < moved <= 5 * opt.subspace.block_dim
    moved_blocks = torch.nonzero(opt.z.reshape(-1, opt.subspace.block_dim).abs().sum(1)).numel()
    assert moved_blocks == 5


def test_subset_steps_are_reproducible_and_resume_from_a_checkpoint() -> None:
    x, y = random_batch()
    loss_fn = nn.CrossEntropyLoss()
    runs = []
    for _ in range(2):
        model = small_mlp()
        opt = subset_optimizer(model, 6, seed=3)
        runs.append([opt.step_batch(x, y, loss_fn) for _ in range(4)])
    assert runs[0] == runs[1]
    model = small_mlp()
    opt = subset_optimizer(model, 6, seed=3)
    first = [opt.step_batch(x, y, loss_fn) for _ in range(2)]
    state, weights = opt.state_dict(), {k: v.clone() for k, v in model.state_dict().items()}
    resumed_model = small_mlp(seed=9)
    resumed_model.load_state_dict(weights)
    resumed = subset_optimizer(resumed_model, 6, seed=3)
    resumed.load_state_dict(state)
    rest = [resumed.step_batch(x, y, loss_fn) for _ in range(2)]
    assert first + rest == runs[0]


@pytest.mark.parametrize("evaluator", ["layered", "vmap"])
def test_progress_callback_counts_every_candidate(evaluator: str) -> None:
    calls: list[tuple[int, int]] = []
    opt = PolyStepOptimizer(small_mlp(), evaluator=evaluator, chunk_size=16)
    opt.progress = lambda done, total: calls.append((done, total))
    x, y = random_batch()
    opt.step_batch(x, y, nn.CrossEntropyLoss())
    total = opt.evaluations
    assert calls[-1] == (total, total)
    assert all(t == total for _, t in calls)
    done = [d for d, _ in calls]
    assert done == sorted(done) and len(set(done)) == len(done)
    if evaluator == "layered":  # chunk by chunk within the step
        assert len(calls) >= total // 16


def test_progress_callback_counts_closure_candidates_one_by_one() -> None:
    calls: list[tuple[int, int]] = []
    model = small_mlp()
    opt = PolyStepOptimizer(model)
    opt.progress = lambda done, total: calls.append((done, total))
    x, y = random_batch()
    opt.step(lambda: nn.functional.cross_entropy(model(x), y))
    total = opt.evaluations
    assert calls == [(k, total) for k in range(1, total + 1)]


def test_progress_bar_stays_silent_on_a_short_step(capsys: pytest.CaptureFixture[str]) -> None:
    opt = PolyStepOptimizer(small_mlp())  # progress is True at first: shown after 5 s
    x, y = random_batch()
    opt.step_batch(x, y, nn.CrossEntropyLoss())
    assert capsys.readouterr().err == ""


def test_block_subset_learns_digits() -> None:
    """A tenth of the blocks per step still learns: held-out accuracy far above chance."""
    data, labels = load_digits(return_X_y=True)
    x = torch.tensor(data / 16.0, dtype=torch.float32)
    y = torch.tensor(labels)
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    train, test = order[:1200], order[1200:]
    model = small_mlp()
    opt = subset_optimizer(model, 8)
    assert opt.subspace.dim // opt.subspace.block_dim >= 80  # 8 blocks are under a tenth
    loss_fn = nn.CrossEntropyLoss()
    gen = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(100):
        idx = train[torch.randint(0, len(train), (128,), generator=gen)]
        losses.append(opt.step_batch(x[idx], y[idx], loss_fn))
    with torch.no_grad():
        accuracy = (model(x[test]).argmax(1) == y[test]).float().mean().item()
    print(f"loss {losses[0]:.3f} -> {losses[-1]:.3f}, held-out accuracy {accuracy:.3f}")
    assert sum(losses[-10:]) / 10 < 0.6 * sum(losses[:10]) / 10
    assert accuracy > 0.5  # chance is 0.1
