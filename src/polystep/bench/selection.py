"""Validation-only model selection and the learning curve of one benchmark run.

:class:`Selector` sees the validation split only. Every ``eval_every`` forward passes (also every
``eval_every_seconds`` training seconds when given, and at the start and the end) it scores the
model on validation, appends a curve point and keeps a CPU copy of the best weights. It keeps
no clock: the loop that drives it passes its training seconds (``train()``'s, whose clock already
leaves validation out), so validation is excluded the same way for every method. For
:func:`~polystep.training.train` it runs as a callback (:meth:`Selector.callback`). The test
split is touched once, after training, by :meth:`Selector.finish`, which scores the selected and
the last weights; ``selected_step`` 0 says the selected model is the untrained one.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from polystep.baselines.adam import accuracy
from polystep.deadline import StepBudget
from polystep.training import TrainState

Batch = tuple[torch.Tensor, torch.Tensor]


class Selector:
    """Tracks validation accuracy against forward passes and keeps the best weights."""

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

    @property
    def train_seconds(self) -> float:
        """Training seconds at the last curve point (0 before any)."""
        return self.curve[-1]["seconds"] if self.curve else 0.0

    def due(self, evaluations: int, seconds: float) -> bool:
        """Whether the next validation point (in forward passes or seconds) is reached."""
        by_time = self.eval_every_seconds is not None and seconds >= self._next_second
        return by_time or evaluations >= self._next

    def observe(
        self,
        model: nn.Module,
        evaluations: int,
        step: int,
        seconds: float,
        *,
        force: bool = False,
    ) -> None:
        """Score ``model`` (after ``step`` steps, ``evaluations`` forward passes and ``seconds``
        training seconds; step 0 is the initial model) on validation when due or forced."""
        if not (force or self.due(evaluations, seconds)):
            return
        val = accuracy(model, self.val_batches)
        self.curve.append(
            {"evaluations": float(evaluations), "step": step, "seconds": seconds, "val_acc": val}
        )
        if val > self.best_val:
            self.best_val = val
            self.best_evaluations = evaluations
            self.best_step = step
            self.best_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        self._next = (evaluations // self.eval_every + 1) * self.eval_every
        if self.eval_every_seconds is not None:
            self._next_second = seconds + self.eval_every_seconds

    def callback(self, model: nn.Module, trained: nn.Module | None = None) -> SelectionCallback:
        """This selector as a :func:`~polystep.training.train` callback scoring ``model``."""
        return SelectionCallback(self, model, trained)

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


class SelectionCallback:
    """A :class:`Selector` driven by ``train()``: scores ``model`` before the first step (the
    untrained model), after every step where a point is due, and after the last step.

    ``trained``: the module ``train()`` trains when it is not ``model`` (a smooth twin); its
    weights are copied into ``model`` before each score, so the hard model is what is selected.
    When ``train()`` ends, ``budget`` and ``steps`` hold what it spent.
    """

    def __init__(self, selector: Selector, model: nn.Module, trained: nn.Module | None) -> None:
        self.selector, self.model, self.trained = selector, model, trained
        self.budget: StepBudget | None = None
        self.steps = 0

    def _observe(self, evaluations: int, step: int, seconds: float, force: bool) -> None:
        if not (force or self.selector.due(evaluations, seconds)):
            return
        if self.trained is not None:
            self.model.load_state_dict(self.trained.state_dict())
        self.selector.observe(self.model, evaluations, step, seconds, force=True)

    def on_train_begin(self, state: TrainState) -> None:
        self._observe(state.evaluations, state.step, 0.0, force=True)

    def on_step_end(self, state: TrainState, metrics: dict[str, Any]) -> None:
        self._observe(metrics["evaluations"], metrics["step"], metrics["seconds"], force=False)

    def on_train_end(self, state: TrainState) -> None:
        self.budget, self.steps = state.budget, state.step
        seconds = state.budget.elapsed if state.budget is not None else 0.0
        self._observe(state.evaluations, state.step, seconds, force=True)
