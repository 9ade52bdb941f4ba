"""Keep the weights of lowest loss on one fixed TRAINING batch (the paper package's default).

The authors' ``train(..., TrainConfig(restore_best=True))`` (their default) scores the weights
after every step on a frozen copy of the first training batch, keeps the lowest-loss weights
and loads them at the end. Our ``train()`` restores the best weights only on a validation
loader; :class:`KeepBestOnBatch` is the paper's rule as a :func:`~polystep.training.train`
callback. The selection looks at training data only, never at a test split.

    batch = first_batch(loader)  # the batch train() will see first; the shuffle is unchanged
    keep = KeepBestOnBatch(model, loss_fn, batch, optimizer)
    train(model, loader, loss_fn, optimizer, TrainConfig(epochs=5, callbacks=[keep]))
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn


def first_batch(loader: Iterable) -> Any:
    """The first batch ``loader`` yields, leaving torch's global generator as it was, so that
    the next ``iter(loader)`` (a shuffling DataLoader draws its order from that generator)
    yields this very batch first."""
    state = torch.get_rng_state()
    try:
        return next(iter(loader))
    finally:
        torch.set_rng_state(state)


class KeepBestOnBatch:
    """After every step score ``model`` on ``batch`` (an ``(inputs, targets)`` pair); at the
    end of training load the lowest-loss weights (only if some step was scored) and re-anchor
    ``optimizer`` (its search coordinates restart at 0 around the restored weights).

    Attributes: ``best_loss`` (inf before any step), ``best_step`` (None before any step).
    """

    def __init__(
        self,
        model: nn.Module,
        loss_fn: Callable[[Any, Any], torch.Tensor],
        batch: Any,
        optimizer: Any = None,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise ValueError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if not callable(loss_fn):
            raise ValueError("loss_fn must be callable: loss_fn(outputs, targets) -> scalar")
        if not (isinstance(batch, list | tuple) and len(batch) == 2):
            raise ValueError("batch must be an (inputs, targets) pair, as a DataLoader yields")
        device = next(model.parameters()).device
        self.model = model
        self.loss_fn = loss_fn
        self.batch = tuple(t.detach().clone().to(device) for t in batch)
        self.optimizer = optimizer
        self.best_loss = math.inf
        self.best_step: int | None = None
        self._best: dict[str, torch.Tensor] | None = None

    @torch.no_grad()
    def loss(self) -> float:
        """The model's loss on the kept batch, in eval mode (the training mode is restored)."""
        was_training = self.model.training
        self.model.eval()
        try:
            return float(self.loss_fn(self.model(self.batch[0]), self.batch[1]))
        finally:
            self.model.train(was_training)

    def on_step_end(self, state: Any, metrics: dict[str, Any]) -> bool:
        value = self.loss()
        if math.isfinite(value) and value < self.best_loss:
            self.best_loss, self.best_step = value, metrics.get("step")
            self._best = {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()}
        return False

    def on_train_end(self, state: Any) -> None:
        if self._best is None:
            return
        self.model.load_state_dict(self._best)
        z = getattr(self.optimizer, "z", None)
        if isinstance(z, torch.Tensor):
            z.zero_()
