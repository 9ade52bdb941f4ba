"""The layered evaluator's incumbent forward: run once per step, reused only while it is valid."""

from __future__ import annotations

import torch
from torch import nn

from polystep.blocks import BlockCandidates, propose_blocks
from polystep.evaluate import LayeredEvaluator
from polystep.evaluate.traits import UNITWISE
from polystep.nn import spiking_mlp
from polystep.step import StepRule
from polystep.subspace import FactoredSubspace
from polystep.transform import ParamLayout


def problem(seed: int = 0) -> tuple[nn.Module, FactoredSubspace, object, tuple]:
    torch.manual_seed(seed)
    model = spiking_mlp((12, 16, 5), num_steps=6)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(3.0)  # enough current for spikes to occur
    space = FactoredSubspace.from_layout(ParamLayout.from_module(model), rank=3, seed=2)
    rule = StepRule.build(epsilon=1.0, step_radius=0.5, probe_radius=0.5)
    z = torch.zeros(space.dim, dtype=torch.float64)
    cands = propose_blocks(rule, z, space.block_dim, 0, torch.Generator().manual_seed(0))[1]
    gen = torch.Generator().manual_seed(1)
    batch = (torch.rand(9, 12, generator=gen), torch.randint(0, 5, (9,), generator=gen))
    return model, space, cands, batch


def counting(model: nn.Module) -> list[int]:
    """Calls of the model's first layer, counted by a forward hook."""
    calls = [0]
    model[0].register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    return calls


def test_loss_then_evaluate_runs_one_forward_and_scores_the_same() -> None:
    model, space, cands, batch = problem()
    fresh = LayeredEvaluator(model, nn.CrossEntropyLoss(), space).evaluate(cands, batch)
    ev = LayeredEvaluator(model, nn.CrossEntropyLoss(), space)
    ev.evaluate(cands, batch)  # probes the batch dims once
    calls = counting(model)
    center = ev.loss(batch)
    losses = ev.evaluate(cands, batch)
    assert calls[0] == 1  # the forward of loss() served evaluate()
    assert torch.equal(losses, fresh)
    ev.evaluate(cands, batch)
    assert calls[0] == 2  # kept for one call only
    with torch.no_grad():
        expected = nn.CrossEntropyLoss()(model(batch[0]), batch[1])
    assert torch.equal(center, expected)


def test_a_changed_parameter_or_batch_is_not_served_stale_activations() -> None:
    model, space, cands, batch = problem()
    ev = LayeredEvaluator(model, nn.CrossEntropyLoss(), space)
    ev.loss(batch)
    with torch.no_grad():
        model[2].weight.mul_(1.5)  # in place: bumps its version counter
    moved = ev.evaluate(cands, batch)
    expected = LayeredEvaluator(model, nn.CrossEntropyLoss(), space).evaluate(cands, batch)
    assert torch.equal(moved, expected)
    ev.loss(batch)
    other = (batch[0].flip(0), batch[1].flip(0))  # new tensors: a new forward
    expected = LayeredEvaluator(model, nn.CrossEntropyLoss(), space).evaluate(cands, other)
    assert torch.equal(ev.evaluate(cands, other), expected)
    ev.loss(batch)
    batch[0].mul_(0.5)  # the same tensor changed in place
    expected = LayeredEvaluator(model, nn.CrossEntropyLoss(), space).evaluate(cands, batch)
    assert torch.equal(ev.evaluate(cands, batch), expected)


def test_candidates_out_of_block_order_score_as_in_order() -> None:
    """Steps ask candidates in block order (segments split into ranges); another order takes
    the general grouping and gives each candidate the same loss."""
    model, space, cands, batch = problem()
    ev = LayeredEvaluator(model, nn.CrossEntropyLoss(), space)
    ordered = ev.evaluate(cands, batch)
    perm = torch.randperm(len(cands), generator=torch.Generator().manual_seed(3))
    shuffled = BlockCandidates(cands.block[perm], cands.offset[perm], cands.dim)
    assert torch.equal(ev.evaluate(shuffled, batch), ordered[perm])


class Gain(nn.Module):
    """``x * gain`` with ``gain`` a scalar buffer: a unit-wise layer that holds state."""

    polystep_traits = UNITWISE

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("gain", torch.tensor(1.5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gain


def test_buffers_are_sources_too() -> None:
    """A model with a buffer: its forward is still reused (the eval-mode restore does not count
    as a change), and a buffer changed in place between loss() and evaluate() is seen."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(12, 16), Gain(), nn.Tanh(), nn.Linear(16, 5))
    space = FactoredSubspace.from_layout(ParamLayout.from_module(model), rank=3, seed=2)
    _, _, cands, batch = problem()
    cands = BlockCandidates(cands.block % (space.dim // space.block_dim), cands.offset, space.dim)
    ev = LayeredEvaluator(model, nn.CrossEntropyLoss(), space)
    ev.evaluate(cands, batch)
    calls = counting(model)
    ev.loss(batch)
    ev.evaluate(cands, batch)
    assert calls[0] == 1
    ev.loss(batch)
    with torch.no_grad():
        model[1].gain.mul_(2.0)
    expected = LayeredEvaluator(model, nn.CrossEntropyLoss(), space).evaluate(cands, batch)
    assert torch.equal(ev.evaluate(cands, batch), expected)
