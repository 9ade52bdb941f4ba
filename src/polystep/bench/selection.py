"""Validation-only model selection and the learning curve of one benchmark run.

:class:`Selector` sees the validation split only. Every ``eval_every`` forward passes (and once at
the end) it scores the current model on validation, appends a curve point and keeps a CPU copy of
the best weights. The test split is touched once, after training, by :meth:`Selector.finish`,
which scores the selected and the last weights.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from polystep.baselines.adam import accuracy

Batch = tuple[torch.Tensor, torch.Tensor]


class Selector:
    """Tracks validation accuracy against forward passes and keeps the best weights.

    Validation runs every ``eval_every`` forward passes, and also every ``eval_every_seconds`` of
    training time when given (for wall-second budgets).
    """

    def __init__(
        self,
        val_batches: Iterable[Batch],
        eval_every: int,
        eval_every_seconds: float | None = None,
    ) -> None:
        if eval_every < 1:
            raise ValueError(f"eval_every must be >= 1, got {eval_every!r}")
        if eval_every_seconds is not None and not eval_every_seconds > 0:
            raise ValueError(f"eval_every_seconds must be > 0, got {eval_every_seconds!r}")
        self.val_batches = val_batches
        self.eval_every = eval_every
        self.eval_every_seconds = eval_every_seconds
        self.curve: list[dict[str, float]] = []
        self.best_val = -1.0
        self.best_state: dict[str, torch.Tensor] | None = None
        self.best_evaluations = 0
        self.best_step = 0
        self._next = 0
        self._next_second = 0.0
        self._start = time.perf_counter()
        self._eval_seconds = 0.0

    @property
    def eval_seconds(self) -> float:
        """Wall seconds spent on validation so far."""
        return self._eval_seconds

    @property
    def train_seconds(self) -> float:
        """Wall seconds since creation, minus the time spent on validation."""
        return time.perf_counter() - self._start - self._eval_seconds

    def observe(
        self, model: nn.Module, evaluations: int, step: int, *, force: bool = False
    ) -> None:
        """Score ``model`` (after ``step`` steps: 0 is the initial model) on validation when the
        next checkpoint (passes or seconds) is due."""
        by_time = self.eval_every_seconds is not None and self.train_seconds >= self._next_second
        if not (force or by_time or evaluations >= self._next):
            return
        started = time.perf_counter()
        val = accuracy(model, self.val_batches)
        self._eval_seconds += time.perf_counter() - started
        self.curve.append(
            {
                "evaluations": float(evaluations),
                "step": step,
                "seconds": self.train_seconds,
                "val_acc": val,
            }
        )
        if val > self.best_val:
            self.best_val = val
            self.best_evaluations = evaluations
            self.best_step = step
            self.best_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        self._next = (evaluations // self.eval_every + 1) * self.eval_every
        if self.eval_every_seconds is not None:
            self._next_second = self.train_seconds + self.eval_every_seconds

    def finish(self, model: nn.Module, test_batches: Iterable[Batch]) -> dict[str, Any]:
        """Test accuracy of the last iterate and of the validation-selected weights, and the step
        they were selected at (``selected_step`` 0: the initial, untrained model)."""
        last = accuracy(model, test_batches)
        selected_model = copy.deepcopy(model)
        if self.best_state is not None:
            selected_model.load_state_dict(self.best_state)
        selected = accuracy(selected_model, test_batches)
        return {
            "test_acc_selected": selected,
            "test_acc_last": last,
            "val_acc_selected": self.best_val,
            "selected_at_evaluations": self.best_evaluations,
            "selected_step": self.best_step,
            "curve": self.curve,
        }
