"""Silent output neurons of a spiking net brought back by their bias, with forward passes only.

A hard-LIF output neuron that spikes on no image loses its whole class: the spike counts tie
at 0 and argmax picks the lowest class. Once it is silent on a whole batch, no probe of a step
changes the batch loss through it, so the search has nothing to follow back. (A full-budget
SNN probe that collapsed from 88 % to 78.7 % validation had exactly one such neuron:
``benchmarks/output_silence.py``.) :func:`raise_silent_outputs` lifts the output layer's bias
of each neuron that spikes on fewer than ``share`` of a batch just far enough (bisection) that it
does; :class:`ReviveSilentOutputs` does that after every training step on a held batch and
charges the forward passes it spends to the run's budget.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from polystep.nn.spiking import SpikingMLP

MAX_DOUBLINGS = 40  # the bias shift doubles from 1 until every neuron spikes; 2**40 is plenty
ITERATIONS = 20  # bisection steps of the shift
MAX_PASSES = 2 + MAX_DOUBLINGS + ITERATIONS  # prefix, first check, doublings, bisection


def _check(model: nn.Module, share: float) -> None:
    if not isinstance(model, SpikingMLP):
        raise TypeError(f"model must be a polystep.nn.SpikingMLP, got {type(model).__name__}")
    if isinstance(share, bool) or not isinstance(share, (int, float)) or not 0 < share <= 1:
        raise ValueError(f"share must be a float in (0, 1], got {share!r}")


@torch.no_grad()
def raise_silent_outputs(model: SpikingMLP, x: torch.Tensor, share: float) -> int:
    """Raise the output ``Linear``'s bias of each neuron that spikes on fewer than ``share`` of
    the inputs ``x`` ``(B, F)``, by the smallest shift (to 2^-20 of the bracket) after which it
    does; other neurons keep theirs. Returns the forward passes spent: one of the layers before
    the output layer, and one of the output layer per trial shift (2 when none is silent)."""
    _check(model, share)
    layers = list(model.children())  # (slicing a SpikingMLP would build a new one)
    prefix, head = nn.Sequential(*layers[:-3]), nn.Sequential(*layers[-3:])
    hidden, bias = prefix(x), model[-3].bias
    start, passes = bias.clone(), 1

    def spiking(shift: torch.Tensor) -> torch.Tensor:  # (C,) bool: spikes on >= share of x
        nonlocal passes
        passes += 1
        bias.copy_(start + shift)
        return (head(hidden) > 0).float().mean(dim=0) >= share

    there = spiking(torch.zeros_like(start))
    if bool(there.all()):
        bias.copy_(start)
        return passes
    low, high = torch.zeros_like(start), torch.ones_like(start)
    for _ in range(MAX_DOUBLINGS):
        reached = spiking(high)
        if bool(reached.all()):
            break
        high = torch.where(reached, high, 2 * high)
    else:
        bias.copy_(start)
        raise RuntimeError("an output neuron did not spike at any bias shift up to 2**40")
    for _ in range(ITERATIONS):
        middle = (low + high) / 2
        ok = spiking(middle)
        low, high = torch.where(ok, low, middle), torch.where(ok, middle, high)
    bias.copy_(start + torch.where(there, torch.zeros_like(high), high))
    return passes


class ReviveSilentOutputs:
    """``train()`` callback: after every step, :func:`raise_silent_outputs` on ``inputs``
    ``(B, F)`` (a held batch of training inputs), its forward passes charged to the run's
    budget as full passes of that batch. Where the budget left is under the most a revival can
    spend (:data:`MAX_PASSES`), it does nothing, as a step that would not fit is not started.
    Deterministic (every rank of a distributed run does the same). Give it before the
    selection callbacks, so they see the revived model."""

    def __init__(self, model: SpikingMLP, inputs: torch.Tensor, share: float = 0.02) -> None:
        _check(model, share)
        if not isinstance(inputs, torch.Tensor) or inputs.dim() != 2 or len(inputs) == 0:
            raise ValueError("inputs must be a non-empty (B, F) tensor of training inputs")
        self.model, self.inputs, self.share = model, inputs, float(share)
        self.passes = 0  # spent so far (this call of train())

    def on_step_end(self, state: Any, metrics: dict[str, Any]) -> bool:
        budget = state.budget
        if budget is not None and budget.remaining_evaluations < MAX_PASSES:
            return False
        spent = raise_silent_outputs(self.model, self.inputs, self.share)
        if budget is not None:
            budget.charge_passes(spent)  # not a step of the run's count
        state.evaluations += spent
        self.passes += spent
        return False
