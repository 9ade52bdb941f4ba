"""Validation-only model selection and the learning curve of one benchmark run.

:class:`Selector` sees the validation split only. Every ``eval_every`` forward passes (also every
``eval_every_seconds`` training seconds when given, and at the start and the end) it scores the
model on validation, appends a curve point and keeps a CPU copy of the best weights. It keeps
no clock: the loop that drives it passes its training seconds (``train()``'s, whose clock already
leaves validation out), so validation is excluded the same way for every method. For
:func:`~polystep.training.train` it runs as a callback (:meth:`Selector.callback`). The test
split is touched once, after training, by :meth:`Selector.finish`, which scores the selected and
the last weights; ``selected_step`` 0 says the selected model is the untrained one.
Both keep their state in ``train()``'s checkpoints (``state_dict``/``load_state_dict``, plain
data with the best weights as CPU tensors), so a resumed run continues the same curve and
selection.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from polystep.baselines.adam import accuracy
from polystep.deadline import StepBudget
from polystep.training import TrainState

Batch = tuple[torch.Tensor, torch.Tensor]
SELECTOR_KEYS = frozenset(
    {"eval_every", "eval_every_seconds", "curve", "best_val", "best_state", "best_evaluations"}
    | {"best_step", "next", "next_second"}
)


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

    def state_dict(self) -> dict[str, Any]:
        """The curve, the best weights and the schedule of the next point (plain data)."""
        return {
            "eval_every": self.eval_every,
            "eval_every_seconds": self.eval_every_seconds,
            "curve": [dict(point) for point in self.curve],
            "best_val": self.best_val,
            "best_state": self.best_state,
            "best_evaluations": self.best_evaluations,
            "best_step": self.best_step,
            "next": self._next,
            "next_second": self._next_second,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from :meth:`state_dict`'s ``state``; a ValueError, and nothing changed, when
        it was written under another schedule or is malformed."""
        if not isinstance(state, dict) or set(state) != SELECTOR_KEYS:
            raise ValueError(f"not a Selector state (keys: {sorted(SELECTOR_KEYS)})")
        schedule = (state["eval_every"], state["eval_every_seconds"])
        if schedule != (self.eval_every, self.eval_every_seconds):
            raise ValueError(
                f"the state validates every {schedule} (forward passes, seconds), this "
                f"selector every {(self.eval_every, self.eval_every_seconds)}"
            )
        curve, best = state["curve"], state["best_state"]
        if not (isinstance(curve, list) and all(isinstance(p, dict) for p in curve)):
            raise ValueError("the state's curve is not a list of points")
        if best is not None and not (
            isinstance(best, dict) and all(isinstance(v, torch.Tensor) for v in best.values())
        ):
            raise ValueError("the state's best_state is not a dict of tensors")
        numbers = ("best_val", "best_evaluations", "best_step", "next", "next_second")
        if any(type(state[k]) not in (int, float) or not math.isfinite(state[k]) for k in numbers):
            raise ValueError(f"the state's {', '.join(numbers)} must be finite numbers")
        self.curve = [dict(point) for point in curve]
        self.best_val = float(state["best_val"])
        self.best_state = best
        self.best_evaluations, self.best_step = state["best_evaluations"], state["best_step"]
        self._next, self._next_second = state["next"], float(state["next_second"])

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
    When ``train()`` ends, ``spent`` holds what the run spent (resumed calls included):
    ``evaluations``, ``budget_seconds_used`` (training seconds) and ``longest_step_seconds``;
    ``steps`` its step count. A resumed run (:meth:`load_state_dict`) does not score its start:
    the restored curve already goes on past it.
    """

    def __init__(self, selector: Selector, model: nn.Module, trained: nn.Module | None) -> None:
        self.selector, self.model, self.trained = selector, model, trained
        self.spent: dict[str, Any] | None = None
        self.steps = 0
        self.resumed = False
        self._longest_before = 0.0  # the longest step of the earlier calls of a resumed run
        self._budget: StepBudget | None = None

    def _longest_step(self) -> float:
        now = self._budget.longest_step if self._budget is not None else 0.0
        return max(self._longest_before, now)

    def state_dict(self) -> dict[str, Any]:
        """The selector's state and the longest step so far (plain data)."""
        return {"selector": self.selector.state_dict(), "longest_step": self._longest_step()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue a run from :meth:`state_dict`'s ``state`` (ValueError when it does not fit)."""
        if not isinstance(state, dict) or set(state) != {"selector", "longest_step"}:
            raise ValueError("not a SelectionCallback state (keys: selector, longest_step)")
        if type(state["longest_step"]) not in (int, float):
            raise ValueError(f"longest_step must be a number, got {state['longest_step']!r}")
        self.selector.load_state_dict(state["selector"])
        self._longest_before = float(state["longest_step"])
        self.resumed = True

    def _observe(self, evaluations: int, step: int, seconds: float, force: bool) -> None:
        if not (force or self.selector.due(evaluations, seconds)):
            return
        if self.trained is not None:
            self.model.load_state_dict(self.trained.state_dict())
        self.selector.observe(self.model, evaluations, step, seconds, force=True)

    def on_train_begin(self, state: TrainState) -> None:
        self._budget = state.budget
        if not self.resumed:
            self._observe(state.evaluations, state.step, state.seconds, force=True)

    def on_step_end(self, state: TrainState, metrics: dict[str, Any]) -> None:
        self._observe(metrics["evaluations"], metrics["step"], metrics["seconds"], force=False)

    def on_train_end(self, state: TrainState) -> None:
        self.steps = state.step
        self.spent = {
            "evaluations": state.evaluations,
            "budget_seconds_used": state.seconds,
            "longest_step_seconds": self._longest_step(),
        }
        self._observe(state.evaluations, state.step, state.seconds, force=True)
