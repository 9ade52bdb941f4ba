"""Adam on a smooth twin, under the same :class:`~polystep.baselines.budget.Budget`.

One training step on one batch is charged as one forward pass (the backward pass is not counted;
it costs about two forward passes, which a wall-second budget captures). Train the twin made by
:func:`polystep.nn.smooth_twin`; copy its weights into the hard model with ``load_state_dict``
to score the hard network as well.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import torch
from torch import nn

from polystep.baselines.budget import Budget
from polystep.baselines.module_objective import Batch, LossFn


@dataclass
class AdamResult:
    """Steps taken, forward passes charged, wall seconds, and per-step history."""

    steps: int
    evaluations: int
    seconds: float
    history: list[dict[str, float]] = field(default_factory=list)


def train_adam(
    model: nn.Module,
    batches: Iterable[Batch],
    loss_fn: LossFn,
    budget: Budget,
    *,
    lr: float = 1e-3,
    weight_decay: float = 0.0,
    max_epochs: int | None = None,
    callback: Callable[[dict[str, float], nn.Module], bool | None] | None = None,
) -> AdamResult:
    """Train ``model`` with Adam until ``budget`` (or ``max_epochs``) runs out.

    Args:
        model: a differentiable module (usually a smooth twin); trained in place.
        batches: iterable of ``(x, y)``; re-iterated epoch after epoch.
        loss_fn: ``(output, target) -> scalar``.
        budget: one forward pass per step; a step runs only if it fits.
        lr, weight_decay: Adam settings.
        max_epochs: optional cap on passes over ``batches``.
        callback: called after every step with the step record and the model; returning True
            stops training (e.g. early stopping on validation).
    """
    if not lr > 0:
        raise ValueError(f"lr must be > 0, got {lr!r}")
    if max_epochs is not None and (
        isinstance(max_epochs, bool) or not isinstance(max_epochs, int) or max_epochs < 1
    ):
        raise ValueError(f"max_epochs must be None or a positive int, got {max_epochs!r}")
    optimizer = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    budget.start()
    history: list[dict[str, float]] = []
    steps, epoch, stop = 0, 0, False
    model.train()
    while not stop and (max_epochs is None or epoch < max_epochs):
        seen = 0
        for x, y in batches:
            seen += 1
            if not budget.allows(1):
                stop = True
                break
            budget.charge(1)
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(model(x), y)
            loss.backward()
            optimizer.step()
            steps += 1
            record = {
                "step": float(steps),
                "epoch": float(epoch),
                "evaluations": float(budget.evaluations),
                "seconds": budget.elapsed,
                "loss": float(loss.detach()),
            }
            history.append(record)
            if callback is not None and callback(record, model):
                stop = True
                break
        if seen == 0:
            raise ValueError("batches yielded nothing")
        epoch += 1
    return AdamResult(
        steps=steps, evaluations=budget.evaluations, seconds=budget.elapsed, history=history
    )


@torch.no_grad()
def accuracy(model: nn.Module, batches: Iterable[Batch]) -> float:
    """Top-1 accuracy of ``model`` over ``batches`` (ties: lowest class, as ``argmax``)."""
    was_training = model.training
    model.eval()
    correct = total = 0
    for x, y in batches:
        correct += int((model(x).argmax(dim=-1) == y).sum())
        total += int(y.numel())
    model.train(was_training)
    return correct / max(total, 1)
