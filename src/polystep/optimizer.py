"""``PolyStepOptimizer``: train any ``nn.Module`` with forward passes only.

The optimizer searches coordinates ``z`` of a subspace (see :mod:`polystep.subspace`) around the
model's weights. One step is an engine ask/tell (:mod:`polystep.engine`) over blocks of ``z``:
it draws block candidates, scores them, and moves every block at once; the move
``M(dz)`` is added to the parameters in place. The model's parameters are always the incumbent.

Two ways to supply losses:

* ``step_batch(inputs, targets, loss_fn)``: the fast path. Candidates are scored by an evaluator
  (layered, captured, vmap or reference, chosen by ``evaluator=``) on this one batch.
* ``step(closure)``: the ``torch.optim`` way, for anything else. Contract: ``closure()`` takes no
  argument, runs the model AS IT CURRENTLY IS on the SAME data every time it is called within one
  ``step`` (common random numbers), and returns its loss as a float or a 0-d tensor. It must not
  call ``backward`` and must not change the parameters. The optimizer calls it once for the
  incumbent, then once per candidate after writing that candidate's weights into the parameters
  (under ``torch.no_grad``), and restores the weights exactly afterwards. NaN and Inf losses are
  allowed: such candidates get a penalty and can never move the weights to NaN.

Both return the incumbent's loss on the batch BEFORE the move (a float).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import replace
from functools import partial
from typing import Any

import torch
from torch import nn

from polystep.blocks import BlockCandidates, num_blocks
from polystep.distributed import Shard
from polystep.engine import Engine, EngineState, shaping
from polystep.epsilon import Constant, Schedule, for_run, over_run, scaled
from polystep.evaluate import EVALUATORS, Evaluator, make_evaluator
from polystep.evaluate.base import LossFn, local_coords, segment_groups
from polystep.optimizer_state import (
    GROUP_KEYS,
    ParamGroup,
    restore,
    save,
)
from polystep.presets import (  # noqa: F401  (also imported from here, their old home)
    FULL_MAX_PARAMS,
    LARGE_MIN_PARAMS,
    PRESETS,
    build_subspace,
    preset_settings,
    resolve_blocks_per_step,
)
from polystep.progress import ProgressFn, step_progress
from polystep.spaces import Blocks, BlockSubset
from polystep.step import Duals, StepRule
from polystep.subspace import Subspace
from polystep.transform import ParamLayout

Tick = Callable[[int], None]
Scorer = Callable[[BlockCandidates, Tick], torch.Tensor]  # candidates (N) -> losses (N,)


_WARNED: set[str] = set()


def warn_radius_convention(epsilon: Schedule, radii: dict[str, object]) -> None:
    """Warn once per argument when a float radius comes with an explicit ``epsilon``.

    The paper's package reads a float radius as a multiple of epsilon; polystep reads every
    radius as a distance (schedule objects mean the same in both). The warning gives the exact
    schedule that reproduces the paper's meaning.
    """
    for name, value in radii.items():
        plain = isinstance(value, int | float) and not isinstance(value, bool)
        if not plain or name in _WARNED or not (math.isfinite(value) and value > 0):
            continue
        _WARNED.add(name)
        warnings.warn(
            f"{name}={value!r} is a distance in search coordinates in polystep; the paper's "
            f"package multiplies a float {name} by epsilon. For that meaning pass "
            f"{name}={scaled(epsilon, float(value))!r}.",
            UserWarning,
            stacklevel=3,
        )


class PolyStepOptimizer(torch.optim.Optimizer):
    """Forward-only optimizer (see the module docstring for the closure contract).

    Args:
        model: the ``nn.Module`` to train (its parameters are updated in place).
        subspace: a :class:`~polystep.subspace.Subspace`, or ``"auto"`` (default: full space up
            to 2k parameters, then the preset's space: factored rank 8 for every preset),
            ``"full"``,
            ``"hybrid"``, ``"factored"`` or ``"sparse"``.
        solver: ``"softmax"`` (default), ``"sinkhorn"`` or ``"greedy"``.
        epsilon, step_radius, probe_radius: floats or schedules (indexed by step); None takes
            the preset's value. A ``Cosine``/``Linear`` schedule with neither ``decay`` nor
            ``total_steps`` runs over the run: ``train()`` sets its horizon, elsewhere call
            :meth:`set_horizon` before the first step. Radii are distances in search
            coordinates (a float radius given with an explicit epsilon warns once with its
            translation from the paper's package, where it would be a multiple of epsilon).
        preset: ``"default"``, ``"snn"`` or ``"quantized"``: radii, epsilon, cost scaling,
            polytope, probes, rank and redraw interval tuned per task family
            (:mod:`polystep.presets`); or a dict with the same keys (e.g. a tuning trial's).
        polytope, scale_cost: override the preset's. ``polytope`` None is the preset's when
            epsilon is the preset's, and ``"simplex"`` (the paper package's default) when you
            pass epsilon. ``scale_cost`` is None (raw loss units),
            ``"mean"`` (divide by the step's mean cost spread), ``"max"``, a float, or
            ``"row"`` (each particle's costs divided by their own mean spread). By default
            it is the preset's when epsilon is the preset's, and None when you pass epsilon:
            an explicit epsilon is a temperature in loss units, as in the paper's package.
        evaluator: ``"auto"`` (layered where the model is a layer chain, else captured where
            its forward can be captured, else vmap), ``"layered"``, ``"captured"``, ``"vmap"``,
            ``"reference"`` or ``"streamed"`` (spiking nets one time step at a time, in
            memory-bounded chunks: memory flat in T, slower); used by :meth:`step_batch`.
        chunk_size: candidates per evaluator call (None: sized to memory).
        seed: seed of the rotations (and of the subspace when it has none). None (default):
            the next value torch's global generator would draw, so ``torch.manual_seed``
            governs it; the global generator is left as it was (data order and everything
            else drawn later stay what they would be without polystep). Two optimizers built
            with nothing drawn in between get the same draws: pass ``seed`` to tell them apart.
            The seed used reads back as :attr:`seed`.

    Settable attributes (checked when set):
        blocks_per_step: blocks (particles) searched per step, drawn at random without
            replacement; the others stay. Set ``"auto"`` (the initial rule): every block
            below 10M parameters, the preset's ``large_blocks_per_step`` (512) from there;
            None: every block; an int: that many (all when there are fewer). Reads back as
            the resolved int or None.
        progress: True (initially): a tqdm bar over a step's candidates on stderr, shown only
            once the step has run 5 s; a callable: called ``(done, total)`` as candidate
            chunks finish (chunk by chunk in the layered evaluator, once per call in the
            others); False: nothing.

    ``param_groups``: one group (all of the model's parameters; :meth:`add_param_group` is
    refused) holding the step's knobs as floats: ``"epsilon"``, ``"step_radius"`` (also as
    ``"lr"``, the same value, so every ``torch.optim.lr_scheduler`` drives the step radius) and
    ``"probe_radius"``. Each holds the value the NEXT step uses. Rule: the schedules given to
    the constructor (or the preset's constants) own every key by default and write it after
    each step; once anything else writes a key (``group["epsilon"] = 0.01``, a torch
    scheduler writing ``"lr"``), the group owns that key for the rest of the run: every later
    step uses the group's value and the schedule no longer writes it. Writes are checked at
    once (finite, > 0). Ownership is saved by :meth:`state_dict`, so resume is exact.

    :meth:`state_dict` has torch's shape: ``{"format": 2, "state": {...}, "param_groups":
    [{...}]}``; ``"state"`` holds the run's state (one for the whole model, not one per
    parameter: the search coordinates, generator, duals, counters, subspace and schedules).
    :meth:`load_state_dict` also reads format 1 (the flat dict written before format 2).
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        subspace: Subspace | str = "auto",
        solver: str = "softmax",
        epsilon: float | Schedule | None = None,
        step_radius: float | Schedule | None = None,
        probe_radius: float | Schedule | None = None,
        preset: str | dict[str, Any] = "default",
        polytope: str | None = None,
        scale_cost: str | float | None = "preset",
        evaluator: str = "auto",
        chunk_size: int | None = None,
        seed: int | None = None,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise ValueError(
                f"model must be a torch.nn.Module (not its parameters), got {type(model).__name__}"
            )
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise ValueError(f"seed must be an int or None, got {seed!r}")
        if seed is None:  # torch's global generator decides, and does not move
            with torch.random.fork_rng(devices=[]):
                seed = int(torch.randint(2**62, (1,)))
        if evaluator != "auto" and evaluator not in EVALUATORS:
            raise ValueError(
                f"evaluator must be 'auto' or one of {sorted(EVALUATORS)}, got {evaluator!r}"
            )
        cfg = self.settings = preset_settings(preset)
        if isinstance(scale_cost, str) and scale_cost == "preset":
            scale_cost = cfg["scale_cost"] if epsilon is None else None
        self.row_scaled = scale_cost == "row"
        self.model = model
        self.preset = preset if isinstance(preset, str) else "custom"
        self.layout = ParamLayout.from_module(model)
        params = list(self.layout.parameters(model).values())
        self.rule = StepRule.build(
            epsilon=cfg["epsilon"] if epsilon is None else epsilon,
            step_radius=cfg["step_radius"] if step_radius is None else step_radius,
            probe_radius=cfg["probe_radius"] if probe_radius is None else probe_radius,
            # an explicit epsilon is a paper-style call: the paper package's simplex default
            polytope=polytope or (cfg["polytope"] if epsilon is None else "simplex"),
            num_probe=cfg["num_probe"],
            solver=solver,
            scale_cost=None if self.row_scaled else scale_cost,
        )
        self._horizon: int | Callable[[], float] | None = None
        first = self.schedule_values(0)
        super().__init__([ParamGroup(params=params, **first)], first)
        if epsilon is not None:
            warn_radius_convention(
                self.rule.epsilon, {"step_radius": step_radius, "probe_radius": probe_radius}
            )
        self.subspace = build_subspace(subspace, self.layout, cfg, seed)
        self.subspace.to(params[0].device, params[0].dtype)
        self.evaluator_kind = evaluator
        self.chunk_size = chunk_size
        self.blocks_per_step = "auto"
        self.progress = True
        self.seed = seed
        self._evaluators: dict[int, Evaluator] = {}
        self.shaping = shaping(scale_cost, "scale_cost")  # "row": the engine's row shaping
        self.skipped_steps = 0
        z = torch.zeros(self.subspace.dim, dtype=params[0].dtype, device=params[0].device)
        self.search = EngineState(x=z, generator=torch.Generator().manual_seed(seed))
        self.shard = Shard()  # under torchrun: this rank scores its slice (polystep.distributed)

    # -- public API ---------------------------------------------------------------------------
    def evaluator(self, loss_fn: LossFn) -> Evaluator:
        """The evaluator used by :meth:`step_batch` for ``loss_fn`` (built once, then cached)."""
        key = id(loss_fn)
        if key not in self._evaluators:
            self._evaluators[key] = make_evaluator(
                self.evaluator_kind,
                self.model,
                loss_fn,
                self.subspace,
                chunk_size=self.chunk_size,
            )
        return self._evaluators[key]

    def step_batch(self, inputs: Any, targets: Any = None, loss_fn: LossFn | None = None) -> float:
        """One step on one batch: scores every candidate with the evaluator. Returns the loss."""
        if loss_fn is None or not callable(loss_fn):
            raise ValueError("loss_fn must be given: loss_fn(outputs, targets) -> scalar loss")
        ev = self.evaluator(loss_fn)
        batch = (inputs, targets)
        center = float(ev.loss(batch))

        def score(cands: BlockCandidates, tick: Tick) -> torch.Tensor:
            if not hasattr(ev, "progress"):
                return ev.evaluate(cands, batch)
            ev.progress = tick  # the layered evaluator ticks chunk by chunk
            try:
                return ev.evaluate(cands, batch)
            finally:
                ev.progress = None

        self._step(score)
        self._opt_called = True  # what torch's step wrapper records, for lr_scheduler's check
        return center

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> float:  # type: ignore[override]
        """One step driven by ``closure`` (contract in the module docstring). Returns the loss."""
        if closure is None or not callable(closure):
            raise ValueError(
                "closure must be a callable returning the loss of the model as it is; "
                "use step_batch(inputs, targets, loss_fn) for the fast path"
            )
        center = float(closure())
        self._step(partial(self._closure_losses, closure))
        return center

    @property
    def blocks_per_step(self) -> int | None:
        """Blocks searched per step (None: all); set ``"auto"``, None or an int >= 1."""
        return self._blocks_per_step

    @blocks_per_step.setter
    def blocks_per_step(self, value: int | str | None) -> None:
        self._blocks_per_step = resolve_blocks_per_step(value, self.layout.numel, self.settings)

    @property
    def progress(self) -> bool | ProgressFn:
        """Progress within a step: True (a delayed tqdm bar), a callable or False."""
        return self._progress

    @progress.setter
    def progress(self, value: bool | ProgressFn) -> None:
        if not (isinstance(value, bool) or callable(value)):
            raise ValueError(f"progress must be a bool or a callable, got {value!r}")
        self._progress = value

    # The search state lives in ``search`` (an :class:`~polystep.engine.EngineState`).
    z = property(lambda self: self.search.x, doc="Search coordinates ``(D,)`` of the weights.")
    generator = property(lambda self: self.search.generator, doc="The step's random generator.")
    duals = property(lambda self: self.search.duals, doc="Sinkhorn duals carried between steps.")
    iteration = property(lambda self: self.search.iteration, doc="Steps taken.")
    evaluations = property(lambda self: self.search.evaluations, doc="Candidates scored.")

    @property
    def last_step_size(self) -> float:
        """Norm of the last move in search coordinates."""
        return float(getattr(self, "_last_move", 0.0))

    def set_horizon(
        self, steps: int | None = None, *, progress: Callable[[], float] | None = None
    ) -> None:
        """Where "over the run" ends, for the schedules given with neither ``decay`` nor
        ``total_steps`` (give exactly one):

        * ``steps``: the run's length in steps, counted from iteration 0: such a schedule runs
          as if built with ``total_steps=steps`` (deterministic);
        * ``progress``: a callable returning the fraction (0..1, clipped) of the run used,
          read as each step starts: such a schedule takes its value at that fraction (for a
          run bounded by seconds only; not deterministic).

        :func:`polystep.training.train` calls it from its limits, so a resumed run continues
        the same schedule; it is not part of :meth:`state_dict`. Without it, a step with such a
        schedule raises a ValueError.
        """
        if (steps is None) == (progress is None):
            raise ValueError(
                f"set_horizon needs exactly one of steps= or progress=, got {steps!r} and "
                f"{progress!r}"
            )
        if steps is not None:
            if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
                raise ValueError(f"steps must be an int >= 1, got {steps!r}")
            self._horizon = steps
        else:
            if not callable(progress):
                raise ValueError(f"progress must be a callable returning a float, got {progress!r}")
            self._horizon = progress
        self._refresh_group()

    @property
    def over_run(self) -> list[str]:
        """The keys (of ``epsilon``, ``step_radius``, ``probe_radius``) whose schedule runs
        over the run and that the group does not own."""
        written = self.group.written if getattr(self, "param_groups", None) else set()
        return [k for k in GROUP_KEYS if k not in written and over_run(getattr(self.rule, k))]

    def _for_run(self, schedule: Schedule) -> Schedule:
        """``schedule`` with the run's horizon applied (as it is when there is none yet)."""
        if not over_run(schedule) or self._horizon is None:
            return schedule
        if isinstance(self._horizon, int):
            return for_run(schedule, steps=self._horizon)
        fraction = float(self._horizon())
        if not math.isfinite(fraction):
            raise ValueError(
                f"the horizon's progress() must return a finite fraction, got {fraction!r}"
            )
        return for_run(schedule, fraction=fraction)

    def schedule_values(self, iteration: int) -> dict[str, float]:
        """The built-in schedules' values at ``iteration`` (what an unwritten key holds). A
        schedule over the run without a horizon yet has a known value only at iteration 0
        (its ``init``); at later iterations its key is left out."""
        values = {}
        for key in GROUP_KEYS:
            schedule = self._for_run(getattr(self.rule, key))
            if not over_run(schedule):
                values[key] = float(schedule(iteration))
            elif iteration == 0:
                values[key] = schedule.at_fraction(0.0)  # type: ignore[attr-defined]
        return values

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Refused after construction: one search covers all of the model's parameters."""
        if getattr(self, "param_groups", None):
            raise ValueError(
                "PolyStepOptimizer has one parameter group (the whole model); add_param_group "
                "is not supported"
            )
        super().add_param_group(param_group)

    @property
    def group(self) -> ParamGroup:
        """``param_groups[0]``, checked to be the optimizer's own group."""
        group = self.param_groups[0] if len(self.param_groups) == 1 else None
        if not isinstance(group, ParamGroup):
            raise ValueError(
                "param_groups must stay the optimizer's single group: write its keys "
                "(param_groups[0]['epsilon'] = ...), do not replace it"
            )
        return group

    def step_rule(self) -> StepRule:
        """The rule of the next step: the schedules, with the keys the group owns fixed to
        the group's values."""
        group = self.group
        changed: dict[str, Schedule] = {
            key: Constant(value=group[key]) for key in sorted(group.written)
        }
        for key in self.over_run:
            changed[key] = self._for_run(getattr(self.rule, key))
        return replace(self.rule, **changed) if changed else self.rule

    def _refresh_group(self) -> None:
        """Write the schedules' values for the next step into the keys they still own."""
        group = self.group
        for key, value in self.schedule_values(self.iteration).items():
            if key not in group.written:
                group.put(key, value)

    # -- internals ----------------------------------------------------------------------------
    def engine(self) -> Engine:
        """The next step as an engine configuration: :meth:`step_rule`, blocks of the search
        coordinates (a random subset of ``blocks_per_step`` of them, when that is fewer), the
        cost shaping (``"row"`` or ``scale_cost``)."""
        dim, p, k = self.subspace.dim, self.subspace.block_dim, self.blocks_per_step
        subset = k is not None and k < num_blocks(dim, p)
        space = BlockSubset(dim, p, k) if subset else Blocks(dim, p)
        return Engine(self.step_rule(), space, shaping=self.shaping)

    def candidate_losses(self, score: Scorer, cands: BlockCandidates) -> torch.Tensor:
        """Every candidate's loss ``(N,)``, from ``score``: the one place a step's candidates
        are scored (with progress reported as they are; under torchrun each rank scores its
        slice)."""
        with step_progress(self.progress, len(cands), self.iteration) as tick:
            return self.shard.score(score, cands, tick, state=(self.model, self))

    @torch.no_grad()
    def _closure_losses(
        self, closure: Callable[[], Any], cands: BlockCandidates, tick: Tick
    ) -> torch.Tensor:
        live = self.layout.parameters(self.model)
        losses = torch.empty(len(cands), dtype=torch.float64)
        for s, rows in segment_groups(self.subspace, cands):
            seg = self.subspace.segments[s]
            param = live[seg.name]
            saved = param.detach().clone()
            deltas = seg.delta(local_coords(self.subspace, s, cands, rows)).to(param)
            try:
                for row, delta in zip(rows.tolist(), deltas, strict=True):
                    param.copy_(saved + delta)
                    losses[row] = float(closure())
                    tick(1)
            finally:
                param.copy_(saved)
        return losses

    @torch.no_grad()
    def _step(self, score: Scorer) -> None:
        """Ask, score, tell; write the move into the parameters; redraw the subspace on time."""
        if self._horizon is None and self.over_run:
            raise ValueError(
                f"{', '.join(self.over_run)}: schedule over the run (neither decay= nor "
                "total_steps=), but this optimizer has no horizon: call "
                "optimizer.set_horizon(steps=N) with the run's total steps before the first "
                "step (train() does it from its limits), or give the schedule total_steps="
            )
        engine, state = self.engine(), self.search
        drawn_from = state.generator.get_state()
        z, duals = state.x, state.duals
        try:
            engine.tell(state, self.candidate_losses(score, engine.ask(state)))
        except BaseException:
            # Nothing moved (the weights are restored by the scorer; tell checks the losses
            # before it changes anything): rewind the generator too, so the next step is the
            # step this one would have been.
            state.generator.set_state(drawn_from)
            state.pending = None
            raise
        move = state.x - z
        if bool(torch.isfinite(move).all()):
            self.subspace.add_to(self.layout.parameters(self.model), move)
            self._last_move = float(move.norm())
        else:  # cannot happen with sanitised costs; kept as a hard guarantee
            state.x, state.duals = z, duals
            self.skipped_steps += 1
        every = self.subspace.redraw_every
        if every and state.iteration % every == 0:
            self.subspace.redraw()
            state.x, state.duals = torch.zeros_like(state.x), Duals()
        self._refresh_group()

    # -- checkpointing ------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:  # type: ignore[override]
        """Everything needed to continue the exact trajectory (the weights live in the model),
        in torch's shape: ``{"format", "state", "param_groups"}``.

        ``"param_groups"`` holds the group's keys (``"params"`` as indices, as torch writes
        them; a torch scheduler's ``"initial_lr"`` too) and ``"state"["group_owns"]`` the keys
        the group owns. Tensors, strings, numbers and plain containers only, so it loads with
        ``torch.load(..., weights_only=True)``.
        """
        return save(self)

    def load_state_dict(self, state: dict[str, Any]) -> None:  # type: ignore[override]
        """Restore :meth:`state_dict` output (format 2, or format 1: the flat dict of earlier
        versions, whose keys are all schedule-owned) into an identically built optimizer.

        Every field is checked first: a state that does not fit (another format version, model,
        subspace or polytope) raises a ValueError naming what differs and changes nothing.
        """
        restore(self, state)

    def __repr__(self) -> str:
        return (
            f"PolyStepOptimizer(preset={self.preset!r}, subspace={self.subspace!r}, "
            f"solver={self.rule.solver!r}, iteration={self.iteration})"
        )
