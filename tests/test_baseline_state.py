"""The vector baselines' state_dict()/load_state_dict(): a loaded copy continues the same
trajectory bit for bit (through a checkpoint file, so the state is plain data), a population
asked but not told is asked again, and a state of another method, shape or setting is refused by
name with nothing changed. The data stream of ModuleObjective resumes at the same batch."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from torch.utils.data import TensorDataset

from polystep.baselines import CMAES, SPSA, ModuleObjective, OpenAIES
from polystep.checkpoint import load_checkpoint, save_checkpoint
from polystep.data import TensorBatches

DIM = 12
MAKERS = {
    "openai_es": lambda **kw: OpenAIES(DIM, popsize=6, x0=torch.ones(DIM), **kw),
    "spsa": lambda **kw: SPSA(DIM, num_directions=3, x0=torch.ones(DIM), **kw),
    "cmaes": lambda **kw: CMAES(DIM, popsize=6, x0=torch.ones(DIM), diagonal=False, **kw),
    "cmaes_diagonal": lambda **kw: CMAES(DIM, popsize=6, x0=torch.ones(DIM), diagonal=True, **kw),
}


def bumpy(x: torch.Tensor) -> torch.Tensor:
    return (x**2).sum(dim=1) + 0.3 * torch.sin(7 * x).sum(dim=1)


def generations(es: Any, n: int) -> list[torch.Tensor]:
    asked = []
    for _ in range(n):
        asked.append(es.ask())
        es.tell(bumpy(asked[-1]))
    return asked


def through_a_file(state: dict[str, Any], tmp_path: Path) -> dict[str, Any]:
    save_checkpoint(tmp_path / "state.ckpt", {"state": state})
    return load_checkpoint(tmp_path / "state.ckpt")["state"]


@pytest.mark.parametrize("name", sorted(MAKERS))
def test_a_loaded_baseline_continues_the_same_trajectory(name: str, tmp_path: Path) -> None:
    original = MAKERS[name](seed=3)
    generations(original, 6)
    state = through_a_file(original.state_dict(), tmp_path)
    later = generations(original, 8)
    copy = MAKERS[name](seed=99)  # another seed: the state carries the sampler's
    copy.load_state_dict(state)
    assert all(torch.equal(a, b) for a, b in zip(later, generations(copy, 8), strict=True))
    assert torch.equal(copy.mean, original.mean)
    assert torch.equal(copy.best_x, original.best_x)
    assert (copy.best_fitness, copy.evaluations) == (original.best_fitness, original.evaluations)


@pytest.mark.parametrize("name", sorted(MAKERS))
def test_a_population_asked_but_not_told_is_asked_again_after_loading(name: str) -> None:
    es = MAKERS[name](seed=1)
    generations(es, 2)
    pending = es.ask()
    copy = MAKERS[name](seed=1)
    copy.load_state_dict(es.state_dict())
    assert torch.equal(copy.ask(), pending)


@pytest.mark.bad_input(
    "`load_state_dict` of OpenAI-ES, SPSA or CMA-ES with a state of another method, dimension or "
    "setting",
    "ValueError naming the method or the setting and both values; the baseline is unchanged",
)
@pytest.mark.parametrize(
    ("name", "other", "parameter"),
    [
        ("openai_es", lambda: SPSA(DIM), "method"),
        ("openai_es", lambda: OpenAIES(DIM + 1, popsize=6), "dim"),
        ("openai_es", lambda: OpenAIES(DIM, popsize=8), "popsize"),
        ("openai_es", lambda: OpenAIES(DIM, popsize=6, sigma=0.5), "sigma"),
        ("spsa", lambda: OpenAIES(DIM), "method"),
        ("spsa", lambda: SPSA(DIM + 1, num_directions=3), "dim"),
        ("spsa", lambda: SPSA(DIM, num_directions=2), "num_directions"),
        ("cmaes", lambda: CMAES(DIM + 1, popsize=6, diagonal=False), "dim"),
        ("cmaes", lambda: CMAES(DIM, popsize=8, diagonal=False), "popsize"),
        ("cmaes", lambda: CMAES(DIM, popsize=6, diagonal=True), "diagonal"),
        ("cmaes", lambda: SPSA(DIM), "method"),
    ],
)
def test_a_state_of_another_method_shape_or_setting_is_refused_by_name(
    name: str, other: Any, parameter: str
) -> None:
    state = MAKERS[name](seed=0).state_dict()
    target = other()
    mean = target.mean.clone()
    with pytest.raises(ValueError, match=rf"load_state_dict: the state (is of |has ){parameter}"):
        target.load_state_dict(state)
    assert torch.equal(target.mean, mean)


def test_a_malformed_state_names_the_entry() -> None:
    state = MAKERS["openai_es"](seed=0).state_dict()
    with pytest.raises(ValueError, match="the state's mean has shape"):
        OpenAIES(DIM, popsize=6).load_state_dict({**state, "mean": torch.zeros(DIM + 1)})
    with pytest.raises(ValueError, match="the state's rng is not a cpu generator state"):
        OpenAIES(DIM, popsize=6).load_state_dict(
            {**state, "rng": torch.zeros(3, dtype=torch.uint8)}
        )
    with pytest.raises(ValueError, match="the state must have the keys"):
        SPSA(DIM).load_state_dict({**SPSA(DIM).state_dict(), "extra": 1})


def test_a_cmaes_replay_that_misses_the_stored_mean_is_refused_and_changes_nothing() -> None:
    es = MAKERS["cmaes"](seed=2)
    generations(es, 3)
    state = es.state_dict()
    state["mean"] = state["mean"] + 1e-12  # what another pycma version could lead to
    target = MAKERS["cmaes"](seed=5)
    generations(target, 1)
    before = target.state_dict()
    with pytest.raises(ValueError, match="did not reach its mean and sigma"):
        target.load_state_dict(state)
    after = target.state_dict()
    assert torch.equal(after["told"], before["told"]) and torch.equal(after["mean"], before["mean"])


def test_the_stream_of_a_module_objective_resumes_at_the_same_batch() -> None:
    x = torch.arange(40.0).reshape(20, 2)
    data = TensorDataset(x, torch.arange(20) % 2)
    model = torch.nn.Linear(2, 2)

    def objective(seed: int) -> ModuleObjective:
        stream = TensorBatches(data, 6, shuffle=True, seed=seed)
        return ModuleObjective(model, torch.nn.CrossEntropyLoss(), stream)

    first = objective(7)
    fresh = objective(7).state_dict()
    for _ in range(5):  # into the second epoch (4 batches an epoch)
        first.next_batch()
    state = first.state_dict()
    later = [first.next_batch()[0] for _ in range(9)]
    copy = objective(8)
    copy.load_state_dict(state)
    assert all(torch.equal(a, copy.next_batch()[0]) for a in later)
    assert copy.batches_drawn == first.batches_drawn == 14
    again = objective(7)
    again.load_state_dict(fresh)  # before the first batch: the stream starts at its beginning
    assert torch.equal(again.next_batch()[0], objective(7).next_batch()[0])
    with pytest.raises(ValueError, match="fewer than batch_in_epoch=9 batches"):
        objective(7).load_state_dict({**state, "batch_in_epoch": 9})
