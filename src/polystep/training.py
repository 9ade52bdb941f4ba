"""``train()``: the one training loop, for :class:`~polystep.optimizer.PolyStepOptimizer` and
for any gradient ``torch.optim.Optimizer``.

Batches are ``(inputs, targets)`` pairs (or a bare input tensor, with ``targets=None``), moved to
the model's device. A PolyStepOptimizer takes each batch with ``step_batch`` (forward passes
only); any other torch optimizer takes ``loss.backward()`` then ``step()``. Validation runs every
``val_every`` steps and at the end of every epoch; with ``restore_best`` the weights with the best
validation metric are restored at the end (selection never looks at any test data: pass none
here). Callbacks see every step and validation, so a caller can run its own selection as one
(the benchmark's :class:`~polystep.bench.selection.Selector` does).

Budgets (:mod:`polystep.deadline`): ``max_evaluations`` counts forward passes on training
batches (a PolyStep step: its candidates, as ``optimizer.evaluations`` counts them, plus the one
pass that scores the current weights; a gradient step: 1, its backward pass not counted), and a
step starts only if all of its passes fit. ``max_seconds`` counts training seconds: wall seconds
minus the time spent validating, in callbacks and writing checkpoints; a step starts only if its
estimated time (the longest of the last 10 steps) would end within the budget. Both budgets are
totals of the run: a resumed call spends only what the earlier calls left.
Schedules over the run (a ``Cosine``/``Linear`` with neither ``decay`` nor ``total_steps``) get
their horizon here (:func:`run_steps`, :meth:`PolyStepOptimizer.set_horizon`): the run's step
count when epochs, ``max_steps`` or ``max_evaluations`` bound it (the smallest), else the
fraction of ``max_seconds`` used. Both derive from the run's totals, so a resumed call continues
the same schedule.
Checkpoints (:mod:`polystep.checkpoint`: plain data, SHA-256 verified, atomic) hold the model,
the optimizer and the loop state, including the random states the data loader draws its
shuffles from, so ``resume=path`` continues the exact same trajectory. They also hold the state
of every callback that defines ``state_dict()`` and ``load_state_dict(state)`` (plain data, see
:func:`~polystep.checkpoint.check_plain`), restored on resume in the same order, so a
callback's own bookkeeping (a selection, a curve) continues too. A checkpoint is checked
against the model, the optimizer and the callbacks' layout in full before any is touched.
"""

from __future__ import annotations

import copy
import csv
import io
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from polystep.checkpoint import (
    CheckpointError,
    atomic_write,
    load_checkpoint,
    save_checkpoint,
)
from polystep.deadline import StepBudget, TrainingClock
from polystep.distributed import is_writer, report
from polystep.evaluate.base import LossFn, evaluation_mode
from polystep.optimizer import PolyStepOptimizer
from polystep.validation import check_positive_int

SELECT_ON = ("accuracy", "loss")


@dataclass
class TrainConfig:
    """Loop settings.

    Attributes:
        epochs: passes over the training loader (None: no limit; then ``max_steps``,
            ``max_evaluations`` or ``max_seconds`` must end the run).
        max_steps: stop after this many optimizer steps in total (None: no limit).
        max_evaluations: forward passes on training batches in total, resumed runs included
            (None: no limit); a step that would exceed it is not started.
        max_seconds: training seconds in total, resumed runs included, validation,
            callbacks and checkpoint writes excluded (None: no limit); a step that would end
            past it is not started.
        val_every: validate every this many steps (None: at epoch ends only).
        select_on: ``"accuracy"`` (classification) or ``"loss"``: the validation metric that
            picks the best weights (accuracy falls back to loss when outputs are not logits).
        restore_best: load the best weights at the end: with a validation loader the best on
            validation; without one, the paper package's rule: the weights of lowest loss on the
            run's first training batch, scored (in eval mode, outside the budgets) after every
            step.
        callbacks: objects with any of ``on_train_begin``, ``on_step_end``,
            ``on_validation_end``, ``on_train_end`` (a True return from the middle two stops).
            One that also defines ``state_dict()`` (plain data) and ``load_state_dict(state)``
            has its state saved in every checkpoint and loaded on resume, before
            ``on_train_begin``; a resume needs the same callbacks, in the same order.
        checkpoint_path: where checkpoints go (None: no checkpoints).
        checkpoint_every: steps between checkpoints; with neither this nor
            ``checkpoint_every_seconds``, a checkpoint at every epoch end.
        checkpoint_every_seconds: wall seconds between checkpoints: one is written after the
            first step that ends at least this long after the previous write (or the start of
            the call). Give at most one of the two; either also writes one when the run ends.
        resume: a checkpoint to continue from (True: ``checkpoint_path`` if it exists).
        metrics_csv: write the metrics history here as CSV after every validation.
        progress: show a tqdm bar with loss and forward passes per second.
    """

    epochs: int | None = 10
    max_steps: int | None = None
    max_evaluations: int | None = None
    max_seconds: float | None = None
    val_every: int | None = None
    select_on: str = "accuracy"
    restore_best: bool = True
    callbacks: list[Any] = field(default_factory=list)
    checkpoint_path: str | Path | None = None
    checkpoint_every: int | None = None
    checkpoint_every_seconds: float | None = None
    resume: str | Path | bool | None = None
    metrics_csv: str | Path | None = None
    progress: bool = True

    def __post_init__(self) -> None:
        for name in ("epochs", "max_steps", "max_evaluations", "val_every", "checkpoint_every"):
            value = getattr(self, name)
            if value is not None:
                check_positive_int(name, value)
        for name in ("max_seconds", "checkpoint_every_seconds"):
            value = getattr(self, name)
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int | float) or not value > 0
            ):
                raise ValueError(f"{name} must be None or > 0 seconds, got {value!r}")
        if self.checkpoint_every is not None and self.checkpoint_every_seconds is not None:
            raise ValueError(
                "give at most one of checkpoint_every (steps) and checkpoint_every_seconds, "
                f"got {self.checkpoint_every!r} and {self.checkpoint_every_seconds!r}"
            )
        limits = (self.epochs, self.max_steps, self.max_evaluations, self.max_seconds)
        if all(limit is None for limit in limits):
            raise ValueError(
                "epochs=None needs another limit: give max_steps, max_evaluations or max_seconds"
            )
        if self.select_on not in SELECT_ON:
            raise ValueError(f"select_on must be one of {SELECT_ON}, got {self.select_on!r}")


@dataclass
class TrainState:
    """Loop position and selection state (saved in checkpoints, except ``stop`` and ``budget``:
    the budget of the current call, which callbacks may read)."""

    step: int = 0
    evaluations: int = 0
    seconds: float = 0.0  # training seconds of the run, earlier (resumed) calls included
    epoch: int = 0
    batch_in_epoch: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    best_metric: float | None = None
    best_state: dict[str, torch.Tensor] | None = None
    keep_batch: tuple[Any, Any] | None = None  # restore_best without validation: (x, y)
    epoch_rng: dict[str, Any] = field(default_factory=dict)
    recent_seconds: list[float] = field(default_factory=list)  # the deadline's last step times
    stop: bool = False
    budget: StepBudget | None = None


# -- callbacks ---------------------------------------------------------------------------------
class LoggingCallback:
    """Print step metrics every ``every`` steps and every validation row."""

    def __init__(self, every: int = 10, printer: Any = print) -> None:
        check_positive_int("every", every)
        self.every = every
        self.printer = printer

    def on_step_end(self, state: TrainState, metrics: dict[str, Any]) -> None:
        if metrics["step"] % self.every == 0:
            self.printer(f"step {metrics['step']}  loss {metrics['loss']:.4f}")

    def on_validation_end(self, state: TrainState, row: dict[str, Any]) -> None:
        shown = ", ".join(
            f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items()
        )
        self.printer(f"validation: {shown}")


class EarlyStoppingCallback:
    """Stop when ``monitor`` has not improved by ``min_delta`` for ``patience`` validations.

    ``monitor`` is ``"val_loss"``, ``"val_accuracy"`` or ``"train_loss"`` (a validation-row key).
    """

    def __init__(self, patience: int = 5, min_delta: float = 1e-4, monitor: str = "val_loss"):
        check_positive_int("patience", patience)
        if not min_delta >= 0:
            raise ValueError(f"min_delta must be >= 0, got {min_delta!r}")
        self.patience, self.min_delta, self.monitor = patience, float(min_delta), monitor
        self.best: float | None = None
        self.bad = 0

    def on_validation_end(self, state: TrainState, row: dict[str, Any]) -> bool:
        value = row.get(self.monitor)
        if value is None or not math.isfinite(value):
            return False
        score = value if self.monitor.endswith("accuracy") else -value
        if self.best is None or score > self.best + self.min_delta:
            self.best, self.bad = score, 0
            return False
        self.bad += 1
        return self.bad >= self.patience


def _fire(callbacks: list[Any], hook: str, *args: Any) -> bool:
    stop = False
    for cb in callbacks:
        fn = getattr(cb, hook, None)
        if fn is not None and fn(*args):
            stop = True
    return stop


# -- helpers -----------------------------------------------------------------------------------
def split_batch(batch: Any, device: torch.device) -> tuple[Any, Any]:
    """``(inputs, targets)`` on ``device`` from a pair, or ``(tensor, None)``."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device), None
    if isinstance(batch, list | tuple) and len(batch) == 2:
        x, y = batch
        return x.to(device), (y.to(device) if isinstance(y, torch.Tensor) else y)
    raise ValueError("batches must be (inputs, targets) pairs or input tensors")


@torch.no_grad()
def evaluate_loader(model: nn.Module, loader: Iterable, loss_fn: LossFn) -> dict[str, float]:
    """Mean loss (and accuracy for class logits) of ``model`` over ``loader``."""
    device = next(model.parameters()).device
    total = loss_sum = correct = 0.0
    has_acc = True
    with evaluation_mode(model):
        for batch in loader:
            x, y = split_batch(batch, device)
            out = model(x)
            n = out.shape[0]
            loss_sum += float(loss_fn(out, y) if y is not None else loss_fn(out)) * n
            total += n
            if (
                has_acc
                and y is not None
                and out.ndim == 2
                and y.ndim == 1
                and not y.is_floating_point()
            ):
                correct += float((out.argmax(dim=1) == y).sum())
            else:
                has_acc = False
    if not total:
        raise ValueError("loader yielded no batches: there is nothing to evaluate")
    result = {"loss": loss_sum / total}
    if has_acc:
        result["accuracy"] = correct / total
    return result


def _loader_generators(loader: Any) -> list[torch.Generator]:
    gens = [
        getattr(loader, "generator", None),
        getattr(getattr(loader, "sampler", None), "generator", None),
    ]
    out: list[torch.Generator] = []
    for g in gens:
        if isinstance(g, torch.Generator) and all(g is not h for h in out):
            out.append(g)
    return out


def _capture_rng(loader: Any) -> dict[str, Any]:
    return {
        "torch": torch.get_rng_state(),
        "loader": [g.get_state() for g in _loader_generators(loader)],
    }


def _restore_rng(loader: Any, rng: dict[str, Any]) -> None:
    torch.set_rng_state(rng["torch"])
    for g, s in zip(_loader_generators(loader), rng["loader"], strict=False):
        g.set_state(s)


def loader_length(loader: Iterable) -> int | None:
    """``len(loader)``, or None when it has none (an iterator, an IterableDataset's loader)."""
    try:
        return len(loader)  # type: ignore[arg-type]
    except TypeError:
        return None


def check_not_empty(name: str, loader: Iterable) -> None:
    """Raise a ValueError naming ``name`` when ``loader`` has a length and it is 0."""
    if loader_length(loader) == 0:
        raise ValueError(
            f"{name} is empty: it yields no batches (a DataLoader with drop_last=True and fewer "
            "samples than batch_size is empty too)"
        )


def check_model_state(model: nn.Module, state: Any, source: str) -> None:
    """Raise a CheckpointError unless ``state`` has exactly ``model``'s keys and shapes."""
    mine = model.state_dict()
    if not isinstance(state, dict):
        raise CheckpointError(f"{source} has no model state dict")
    missing = [k for k in mine if k not in state]
    unexpected = [k for k in state if k not in mine]
    if missing or unexpected:
        raise CheckpointError(
            f"{source} is for another model: missing {missing[:5]}, unexpected {unexpected[:5]}"
        )
    for key, value in mine.items():
        theirs = state[key]
        if not isinstance(theirs, torch.Tensor) or theirs.shape != value.shape:
            shape = tuple(theirs.shape) if isinstance(theirs, torch.Tensor) else type(theirs)
            raise CheckpointError(
                f"{source} has {key!r} of shape {shape}, the model's has shape {tuple(value.shape)}"
            )


RUNTIME_KEYS = frozenset({"stop", "budget"})
TRAIN_STATE_KEYS = frozenset(TrainState.__dataclass_fields__) - RUNTIME_KEYS
# Loop keys that older checkpoints lack, and what they load as.
ADDED_KEYS: dict[str, Any] = {
    "evaluations": None,
    "keep_batch": None,
    "seconds": 0.0,
    "recent_seconds": [],
}
CHECKPOINT_KEYS = frozenset({"model", "optimizer", "train"})
CALLBACKS_KEY = "callbacks"  # absent from checkpoints written before callbacks had state


def is_stateful(callback: Any) -> bool:
    """Whether ``callback`` has state that checkpoints keep: ``state_dict`` and
    ``load_state_dict`` methods."""
    return all(
        callable(getattr(callback, name, None)) for name in ("state_dict", "load_state_dict")
    )


def callback_states(callbacks: list[Any]) -> list[dict[str, Any] | None]:
    """One entry per callback: its ``state_dict()`` (a dict), or None for a stateless one."""
    states: list[dict[str, Any] | None] = []
    for cb in callbacks:
        state = cb.state_dict() if is_stateful(cb) else None
        if is_stateful(cb) and not isinstance(state, dict):
            raise TypeError(
                f"{type(cb).__name__}.state_dict() must return a dict, got {type(state).__name__}"
            )
        states.append(state)
    return states


def _check_callbacks(source: str, saved: Any, callbacks: list[Any]) -> None:
    """Raise a CheckpointError unless ``saved`` has a dict exactly where ``callbacks`` has a
    stateful callback."""
    mine = [i for i, cb in enumerate(callbacks) if is_stateful(cb)]
    if isinstance(saved, list) and all(s is None or isinstance(s, dict) for s in saved):
        theirs = [i for i, s in enumerate(saved) if s is not None]
        if len(saved) == len(callbacks) and theirs == mine:
            return
        raise CheckpointError(
            f"{source} was written with {len(saved)} callbacks, stateful at positions {theirs}; "
            f"this run has {len(callbacks)}, stateful at {mine}: resume with the same callbacks "
            "in the same order"
        )
    raise CheckpointError(f"{source} has no valid callback states (a list of dicts and None)")


def resume_from(
    path: str | Path, model: nn.Module, optimizer: Any, callbacks: list[Any] | None = None
) -> TrainState:
    """Load the checkpoint at ``path`` into ``model``, ``optimizer`` and the stateful
    ``callbacks`` (see :func:`is_stateful`); returns the loop state.

    Everything is verified first (file digest, keys, model shapes, optimizer layout, subspace,
    format version, which callbacks have a state): on any mismatch a CheckpointError names the
    file and nothing is changed. The callbacks are loaded last; a ``load_state_dict`` that raises
    a ValueError is reported as a CheckpointError too. A checkpoint written before callbacks had
    state leaves them as they are.
    """
    source = f"checkpoint {str(path)!r}"
    callbacks = callbacks or []
    ckpt = load_checkpoint(path)
    if not isinstance(ckpt, dict) or set(ckpt) - {CALLBACKS_KEY} != CHECKPOINT_KEYS:
        keys = sorted(ckpt) if isinstance(ckpt, dict) else type(ckpt).__name__
        raise CheckpointError(f"{source} is not a train() checkpoint (keys: {keys})")
    if CALLBACKS_KEY in ckpt:
        _check_callbacks(source, ckpt[CALLBACKS_KEY], callbacks)
    check_model_state(model, ckpt["model"], source)
    loop = ckpt["train"]
    if isinstance(loop, dict) and TRAIN_STATE_KEYS - set(loop) <= set(ADDED_KEYS):
        loop = {**ADDED_KEYS, **loop}  # written before these keys existed
    if not isinstance(loop, dict) or set(loop) != TRAIN_STATE_KEYS:
        raise CheckpointError(
            f"{source} has no valid loop state (expected {sorted(TRAIN_STATE_KEYS)})"
        )
    for key in ("step", "epoch", "batch_in_epoch", "evaluations"):
        if key == "evaluations" and loop[key] is None:
            continue
        if isinstance(loop[key], bool) or not isinstance(loop[key], int) or loop[key] < 0:
            raise CheckpointError(f"{source} has loop {key} {loop[key]!r}, expected an int >= 0")
    recent = loop["recent_seconds"]
    times = [loop["seconds"], *recent] if type(recent) is list else [None]
    if not all(type(t) in (int, float) and 0 <= t < math.inf for t in times):
        raise CheckpointError(
            f"{source} has loop seconds {loop['seconds']!r} and recent_seconds "
            f"{loop['recent_seconds']!r}, expected numbers >= 0"
        )
    try:
        optimizer.load_state_dict(ckpt["optimizer"])  # checks all of it before changing any
    except ValueError as exc:
        raise CheckpointError(f"{source} does not fit this optimizer: {exc}") from exc
    model.load_state_dict(ckpt["model"])
    for cb, saved in zip(callbacks, ckpt.get(CALLBACKS_KEY, []), strict=False):
        if saved is not None:
            try:
                cb.load_state_dict(saved)
            except ValueError as exc:
                name = type(cb).__name__
                raise CheckpointError(f"{source} does not fit callback {name}: {exc}") from exc
    state = TrainState(**{**loop, "seconds": float(loop["seconds"])})
    if state.evaluations is None:
        state.evaluations = getattr(optimizer, "evaluations", 0) + state.step
    return state


def forward_passes_per_step(optimizer: torch.optim.Optimizer) -> int:
    """Forward passes one step costs: a PolyStep step scores its candidates (as
    ``optimizer.evaluations`` counts them) and the current weights once; a gradient step runs
    one forward pass (its backward pass is not counted)."""
    return optimizer.engine().popsize + 1 if isinstance(optimizer, PolyStepOptimizer) else 1


def run_steps(
    config: TrainConfig, batches_per_epoch: int | None, passes_per_step: int
) -> int | None:
    """The steps a run takes at most, from its step bounds: ``max_steps``, ``epochs`` times
    ``batches_per_epoch``, and ``max_evaluations // passes_per_step`` (no step that would cross
    that budget is started; at least 1); the smallest. None when only ``max_seconds`` bounds
    the run. A ValueError when ``epochs`` bounds it over a loader without a length."""
    check_positive_int("passes_per_step", passes_per_step)
    bounds = [config.max_steps]
    if config.epochs is not None:
        if batches_per_epoch is None:
            raise ValueError(
                "a schedule over the run needs the run's length, but the loader has no len(): "
                f"epochs={config.epochs} gives no step count; pass epochs=None with max_steps, "
                "max_evaluations or max_seconds"
            )
        bounds.append(config.epochs * batches_per_epoch)
    if config.max_evaluations is not None:
        bounds.append(max(1, config.max_evaluations // passes_per_step))
    return min((n for n in bounds if n is not None), default=None)


def set_run_horizon(
    optimizer: PolyStepOptimizer,
    config: TrainConfig,
    batches_per_epoch: int | None,
    passes_per_step: int,
    seconds_used: Callable[[], float],
) -> None:
    """Give ``optimizer`` the run's horizon (when it has a schedule over the run): the run's
    steps (:func:`run_steps`), or with only ``max_seconds`` the fraction
    ``seconds_used() / max_seconds``."""
    if not optimizer.over_run:
        return
    steps = run_steps(config, batches_per_epoch, passes_per_step)
    if steps is not None:
        optimizer.set_horizon(steps=steps)
        return
    assert config.max_seconds is not None  # TrainConfig refuses a run without any limit
    limit = float(config.max_seconds)
    optimizer.set_horizon(progress=lambda: seconds_used() / limit)


def gradient_step(
    model: nn.Module, optimizer: torch.optim.Optimizer, x: Any, y: Any, loss_fn: LossFn
) -> float:
    """One ``backward()`` + ``step()`` on one batch; returns the loss. A NaN/Inf loss takes no
    step, so it never reaches the parameters."""
    model.train()
    optimizer.zero_grad(set_to_none=True)
    out = model(x)
    loss = loss_fn(out, y) if y is not None else loss_fn(out)
    if bool(torch.isfinite(loss)):
        loss.backward()
        optimizer.step()
    return float(loss.detach())


def write_csv(path: str | Path, rows: list[dict[str, Any]]) -> None:
    """All ``rows`` as CSV (columns: the union of keys, in first-seen order), atomically."""
    keys: list[str] = []
    for row in rows:
        keys.extend(k for k in row if k not in keys)
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=keys)
    writer.writeheader()
    writer.writerows(rows)
    atomic_write(Path(path), text.getvalue().encode())


# -- the loop ----------------------------------------------------------------------------------
def check_optimizer(model: nn.Module, optimizer: Any) -> bool:
    """Raise a ValueError unless ``optimizer`` can train ``model``; True for PolyStep (forward
    passes only), False for a gradient optimizer."""
    if isinstance(optimizer, PolyStepOptimizer):
        if optimizer.model is not model:
            raise ValueError(
                "optimizer was built for another model: train(model, ...) needs the very module "
                "passed to PolyStepOptimizer(model), or it would train one model and validate "
                "another"
            )
        return True
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise ValueError(
            "optimizer must be a PolyStepOptimizer or a torch.optim.Optimizer, got "
            f"{type(optimizer).__name__}"
        )
    mine = {id(p) for p in model.parameters()}
    if any(id(p) not in mine for group in optimizer.param_groups for p in group["params"]):
        raise ValueError(
            "optimizer was built for another model: it holds parameters that are not "
            "model.parameters(), so train() would step one model and validate another"
        )
    return False


def train(
    model: nn.Module,
    loader: Iterable,
    loss_fn: LossFn,
    optimizer: torch.optim.Optimizer,
    config: TrainConfig | None = None,
    *,
    val_loader: Iterable | None = None,
) -> list[dict[str, Any]]:
    """Train ``model`` on ``loader`` with ``optimizer``; returns the metrics history.

    ``optimizer`` is a :class:`~polystep.optimizer.PolyStepOptimizer` (``step_batch``: forward
    passes only) or any gradient ``torch.optim.Optimizer`` (``loss.backward()`` + ``step()``;
    optimizers that need a closure, such as LBFGS, are not supported). One history row per
    validation (or per epoch without a validation loader): ``step``, ``epoch``, ``time`` (wall
    seconds of this call), ``seconds`` (training seconds of the run, resumed calls included, as
    ``max_seconds`` counts them), ``train_loss`` (mean of the step losses since the previous
    row), ``evaluations`` (forward passes of the run, as ``max_evaluations`` counts them),
    ``evals_per_s`` and, with ``val_loader``, ``val_loss``/``val_accuracy``. Callbacks'
    ``on_step_end`` metrics carry ``step``, ``epoch``, ``loss``, ``evaluations``, ``seconds`` and
    ``evals_per_s``. With ``resume``, the stateful callbacks (see :class:`TrainConfig`) are
    loaded from the checkpoint before ``on_train_begin``.
    """
    cfg = config or TrainConfig()
    forward_only = check_optimizer(model, optimizer)
    device = next(model.parameters()).device
    resume = cfg.checkpoint_path if cfg.resume is True else cfg.resume
    if resume and not Path(resume).exists() and cfg.resume is not True:
        raise ValueError(f"resume checkpoint {str(resume)!r} does not exist")
    check_not_empty("loader", loader)
    if val_loader is not None:
        check_not_empty("val_loader", val_loader)
    state = TrainState()
    if resume and Path(resume).exists():
        state = resume_from(resume, model, optimizer, cfg.callbacks)
    has_val = val_loader is not None
    clock = TrainingClock()
    # Both budgets are run totals: a resumed call gets what the earlier calls left.
    left = None if cfg.max_evaluations is None else max(cfg.max_evaluations - state.evaluations, 0)
    seconds0 = state.seconds
    seconds_left = None if cfg.max_seconds is None else cfg.max_seconds - seconds0
    if seconds_left is not None and seconds_left <= 0:  # the earlier calls spent it all
        left, seconds_left = 0, None
    budget = state.budget = StepBudget(left, seconds_left, clock=clock)
    budget.recent.extend(state.recent_seconds)  # a resumed call estimates its first step too
    cost = forward_passes_per_step(optimizer)  # then what the last step cost
    per_epoch = loader_length(loader)
    if forward_only:  # schedules over the run: their horizon, from the run's totals
        set_run_horizon(optimizer, cfg, per_epoch, cost, lambda: seconds0 + budget.elapsed)
    start = last_write = time.perf_counter()
    # A resumed run that already reached max_steps takes no further step.
    stop = cfg.max_steps is not None and state.step >= cfg.max_steps
    evals0, losses = state.evaluations, []
    bounds = (cfg.max_steps, cfg.epochs * per_epoch if per_epoch and cfg.epochs else None)
    total = min((n for n in bounds if n is not None), default=None)  # the bar's length
    if cfg.max_seconds is not None or cfg.max_evaluations is not None:
        total = None  # a budget ends the run; a step count would be a wrong bar length
    bar = None
    if cfg.progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, initial=state.step, desc="polystep", dynamic_ncols=True)

    def fire(hook: str, *args: Any) -> bool:
        with clock.excluded():
            return _fire(cfg.callbacks, hook, *args)

    def checkpoint() -> None:
        """The one place a checkpoint is written."""
        nonlocal last_write
        if cfg.checkpoint_path is not None and is_writer():  # under torchrun: rank 0 only
            with clock.excluded():
                state.recent_seconds = list(budget.recent)
                payload = {
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "train": {k: v for k, v in state.__dict__.items() if k not in RUNTIME_KEYS},
                    CALLBACKS_KEY: callback_states(cfg.callbacks),
                }
                save_checkpoint(cfg.checkpoint_path, payload)
        last_write = time.perf_counter()

    def keep_if_best() -> None:
        """restore_best without validation: keep the weights of lowest first-batch loss."""
        with clock.excluded(), evaluation_mode(model):
            value = float(loss_fn(model(state.keep_batch[0]), state.keep_batch[1]))
        if math.isfinite(value) and (state.best_metric is None or -value > state.best_metric):
            state.best_metric = -value
            state.best_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}

    def validate() -> None:
        nonlocal losses, stop
        with clock.excluded():
            elapsed = time.perf_counter() - start
            row: dict[str, Any] = {
                "step": state.step,
                "epoch": state.epoch,
                "time": round(elapsed, 3),
                "train_loss": sum(losses) / len(losses) if losses else float("nan"),
                "evaluations": state.evaluations,
                "evals_per_s": (state.evaluations - evals0) / max(elapsed, 1e-9),
                "seconds": round(seconds0 + budget.elapsed, 3),
                **report(optimizer),  # under torchrun: world size, per-rank rates, bytes
            }
            losses = []
            if has_val:
                metrics = evaluate_loader(model, val_loader, loss_fn)
                row.update({f"val_{k}": v for k, v in metrics.items()})
                use_acc = cfg.select_on == "accuracy" and "accuracy" in metrics
                score = metrics["accuracy"] if use_acc else -metrics["loss"]
                better = state.best_metric is None or score > state.best_metric
                if math.isfinite(score) and better:
                    state.best_metric = score
                    state.best_state = {
                        k: v.detach().cpu().clone() for k, v in model.state_dict().items()
                    }
                    row["best"] = True
            state.history.append(row)
            if cfg.metrics_csv is not None and is_writer():  # under torchrun: rank 0 only
                write_csv(cfg.metrics_csv, state.history)
            if bar is not None and has_val and "val_accuracy" in row:
                shown = f"loss {row['train_loss']:.3f} val_acc {row['val_accuracy']:.3f}"
                bar.set_postfix_str(shown)
        stop = fire("on_validation_end", state, row) or stop

    fire("on_train_begin", state)
    budget.start()
    while (cfg.epochs is None or state.epoch < cfg.epochs) and not stop:
        if state.batch_in_epoch == 0:
            state.epoch_rng = _capture_rng(loader)
        else:
            _restore_rng(loader, state.epoch_rng)
        yielded = False
        for index, batch in enumerate(loader):
            yielded = True
            if index < state.batch_in_epoch:
                continue  # replaying a resumed epoch up to where it stopped
            if not budget.allows(cost):
                stop = True  # out of forward passes, or this step would end past max_seconds
                break
            x, y = split_batch(batch, device)
            if cfg.restore_best and not has_val and state.step == 0:  # the paper's selection
                state.keep_batch = tuple(
                    t.detach().clone() if isinstance(t, torch.Tensor) else t for t in (x, y)
                )
            if forward_only:
                before = optimizer.evaluations
                loss = optimizer.step_batch(x, y, loss_fn)
                cost = optimizer.evaluations - before + 1
            else:
                loss = gradient_step(model, optimizer, x, y, loss_fn)
            budget.charge(cost)
            state.evaluations += cost
            state.seconds = seconds0 + budget.elapsed
            state.step += 1
            state.batch_in_epoch = index + 1
            losses.append(loss)
            rate = (state.evaluations - evals0) / max(time.perf_counter() - start, 1e-9)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{loss:.3f}", evals_s=f"{rate:,.0f}", refresh=False)
            metrics = {
                "step": state.step,
                "epoch": state.epoch,
                "loss": loss,
                "evaluations": state.evaluations,
                "seconds": state.seconds,
                "evals_per_s": rate,
            }
            if state.keep_batch is not None:
                keep_if_best()
            stop = fire("on_step_end", state, metrics)
            if cfg.val_every and state.step % cfg.val_every == 0:
                validate()
            if cfg.checkpoint_every and state.step % cfg.checkpoint_every == 0:
                checkpoint()
            every_seconds = cfg.checkpoint_every_seconds
            if every_seconds and time.perf_counter() - last_write >= every_seconds:
                checkpoint()
            if stop or (cfg.max_steps is not None and state.step >= cfg.max_steps):
                stop = True
                break
        else:
            if not yielded:
                raise ValueError(f"loader yielded no batches in epoch {state.epoch}")
            state.epoch += 1
            state.batch_in_epoch = 0
            if not (cfg.val_every and state.step % cfg.val_every == 0):
                validate()
            if not (cfg.checkpoint_every or cfg.checkpoint_every_seconds):
                checkpoint()
            continue
        break
    state.seconds = seconds0 + budget.elapsed
    if losses or not state.history or state.history[-1]["step"] != state.step:
        validate()
    if cfg.checkpoint_every or cfg.checkpoint_every_seconds or stop:
        checkpoint()
    if bar is not None:
        bar.close()
    if cfg.restore_best and state.best_state is not None:
        model.load_state_dict(copy.deepcopy(state.best_state))
    fire("on_train_end", state)
    return state.history
