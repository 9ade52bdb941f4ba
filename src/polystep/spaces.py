"""The search spaces of the engine (:mod:`polystep.engine`): what a particle is.

A space's ``propose(rule, state)`` draws one step around ``state`` and returns an
:class:`Asked` (the particles ``(P, p)`` it moves and the candidates the caller scores);
``write(state, asked, moved)`` puts the moved particles back into a new ``state.x``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Protocol

import torch

from polystep.blocks import block_candidates, from_blocks, num_blocks, to_blocks
from polystep.parts import SubspaceDraw, orthonormal
from polystep.step import Duals, Proposal, StepRule

if TYPE_CHECKING:
    from polystep.engine import EngineState


@dataclass
class Asked:
    """One step's proposal: the particles ``(P, p)`` it moves, and what the caller scores
    (``candidates``: dense points ``(N, dim)``, :class:`BlockCandidates`, or the space's own)."""

    particles: torch.Tensor
    proposal: Proposal
    candidates: Any
    context: Any = None


class Space(Protocol):
    """What the particles are: ``propose`` draws a step around ``state``; ``write`` puts the
    moved particles ``(P, p)`` back into a new ``x``."""

    num_particles: int
    particle_dim: int

    def start(self, x: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, Any]:
        """The first ``x`` and subspace draw (or None) from the caller's start ``x``."""
        ...

    def propose(self, rule: StepRule, state: EngineState) -> Asked: ...

    def write(self, state: EngineState, asked: Asked, moved: torch.Tensor) -> torch.Tensor: ...


class Direct:
    """A space searched in its own coordinates: the state starts at ``x`` itself."""

    def start(self, x: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, None]:
        return x.detach().clone(), None


@dataclass(frozen=True)
class Particles(Direct):
    """``x (P, p)``: every row a particle; the candidates are its probes ``(P * V * K, p)``."""

    num_particles: int
    particle_dim: int

    def propose(self, rule: StepRule, state: EngineState) -> Asked:
        proposal = rule.propose(state.x, state.iteration, state.generator)
        return Asked(state.x, proposal, proposal.probes.reshape(-1, self.particle_dim))

    def write(self, state: EngineState, asked: Asked, moved: torch.Tensor) -> torch.Tensor:
        return moved


@dataclass(frozen=True)
class Blocks(Direct):
    """``x (D,)`` cut into blocks of ``block_dim``; ``active`` random blocks a step (None: all).
    The candidates are :class:`~polystep.blocks.BlockCandidates`."""

    dim: int
    block_dim: int
    active: int | None = None

    @property
    def num_particles(self) -> int:
        total = num_blocks(self.dim, self.block_dim)
        return total if self.active is None else min(self.active, total)

    @property
    def particle_dim(self) -> int:
        return self.block_dim

    def choose(self, total: int, state: EngineState, device: torch.device) -> torch.Tensor:
        """The ``num_particles`` blocks (of ``total``) this step moves, in draw order."""
        chosen = torch.randperm(total, generator=state.generator, device=device)
        return chosen[: self.num_particles]

    def propose(self, rule: StepRule, state: EngineState) -> Asked:
        every = blocks = to_blocks(state.x, self.block_dim)
        chosen = None
        if self.num_particles < every.shape[0]:
            chosen = self.choose(every.shape[0], state, every.device)
            blocks = every[chosen]
        proposal = rule.propose(blocks, state.iteration, state.generator)
        candidates = block_candidates(proposal, blocks, chosen, self.dim)
        return Asked(blocks, proposal, candidates, None if chosen is None else (chosen, every))

    def write(self, state: EngineState, asked: Asked, moved: torch.Tensor) -> torch.Tensor:
        if asked.context is None:
            return from_blocks(moved, self.dim)
        chosen, every = asked.context  # every block of x, as proposed (a copy of x)
        every[chosen] = moved
        return from_blocks(every, self.dim)


@dataclass(frozen=True)
class BlockSubset(Blocks):
    """:class:`Blocks` whose ``active`` blocks a step are drawn on the CPU and sorted; the
    particles change every step, so no duals carry over (each step starts fresh)."""

    def choose(self, total: int, state: EngineState, device: torch.device) -> torch.Tensor:
        chosen = torch.randperm(total, generator=state.generator)[: self.num_particles]
        state.duals = Duals()
        return chosen.sort().values.to(device)

    def write(self, state: EngineState, asked: Asked, moved: torch.Tensor) -> torch.Tensor:
        if asked.context is not None:
            state.duals = Duals()
        return super().write(state, asked, moved)


@dataclass(frozen=True)
class Subspace:
    """``theta = base + scale * B z``: blocks of ``z (k,)``, the draw ``B (D, k)`` (orthonormal,
    redrawn every ``redraw_every`` steps after folding ``B z`` into ``base``; None: ``B = I``).
    The candidates are dense parameter vectors ``(N, D)``."""

    dim: int
    k: int
    block_dim: int
    redraw_every: int | None = 1

    def __post_init__(self) -> None:
        if self.redraw_every is None and self.k != self.dim:
            raise ValueError(f"k must equal dim ({self.dim}) without a redraw, got {self.k}")

    @property
    def num_particles(self) -> int:
        return num_blocks(self.k, self.block_dim)

    @property
    def particle_dim(self) -> int:
        return self.block_dim

    def start(
        self, theta: torch.Tensor, generator: torch.Generator
    ) -> tuple[torch.Tensor, SubspaceDraw]:
        """``z = 0`` and the first draw around ``theta (D,)`` (a basis consumes ``generator``)."""
        basis = None if self.redraw_every is None else self._basis(generator, theta.dtype)
        return theta.new_zeros(self.k), SubspaceDraw(base=theta.clone(), basis=basis)

    def _basis(self, generator: torch.Generator, dtype: torch.dtype) -> torch.Tensor:
        return orthonormal(self.dim, self.k, generator, dtype)

    def propose(self, rule: StepRule, state: EngineState) -> Asked:
        draw = state.draw
        assert draw is not None, "a Subspace state starts from Engine.start(theta, ...)"
        t, every = state.iteration, self.redraw_every
        if every is not None and t > 0 and t % every == 0:
            state.draw = replace(
                draw.fold(state.x), basis=self._basis(state.generator, draw.base.dtype)
            )
            state.x = torch.zeros_like(state.x)
        asked = Blocks(self.k, self.block_dim).propose(rule, state)
        asked.candidates = state.draw.lift(asked.candidates.dense(state.x))
        return asked

    def write(self, state: EngineState, asked: Asked, moved: torch.Tensor) -> torch.Tensor:
        return from_blocks(moved, self.k)
