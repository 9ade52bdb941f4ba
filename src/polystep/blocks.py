"""Block-coordinate PolyStep over one search vector ``z (D,)``.

``z`` is cut into ``P = ceil(D / p)`` consecutive blocks of ``p`` coordinates (the last one
zero-padded); each block is a particle. A candidate moves exactly one block to one of its probe
points and leaves every other coordinate at the incumbent, so it is described compactly by the
block index and the ``p``-vector offset: :class:`BlockCandidates`. Evaluators that exploit this
locality (layered networks, MAX-SAT delta counts) read the compact form; small problems can ask
for the dense ``(N, D)`` matrix.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from polystep.step import Proposal, StepRule


def num_blocks(dim: int, block_dim: int) -> int:
    """``ceil(dim / block_dim)``."""
    return -(-dim // block_dim)


def to_blocks(z: torch.Tensor, block_dim: int) -> torch.Tensor:
    """``(D,) -> (P, p)``, zero-padding the tail."""
    pad = num_blocks(z.shape[0], block_dim) * block_dim - z.shape[0]
    return torch.nn.functional.pad(z, (0, pad)).reshape(-1, block_dim)


def from_blocks(blocks: torch.Tensor, dim: int) -> torch.Tensor:
    """``(P, p) -> (D,)``, dropping the padding."""
    return blocks.reshape(-1)[:dim]


@dataclass
class BlockCandidates:
    """``N = P * V * K`` candidates: block ``block[n]`` of ``z`` moved by ``offset[n]``.

    ``block`` is ``(N,)`` long, ``offset`` is ``(N, p)``; candidates are ordered particle-major,
    then vertex, then probe, matching the cost layout ``(P, V, K)`` of :meth:`StepRule.update`.
    """

    block: torch.Tensor
    offset: torch.Tensor
    dim: int

    def __len__(self) -> int:
        return int(self.block.shape[0])

    def coordinates(self) -> torch.Tensor:
        """Index into ``z`` of every offset entry: ``(N, p)``; padding entries point past ``D``."""
        block_dim = self.offset.shape[1]
        return self.block[:, None] * block_dim + torch.arange(block_dim, device=self.block.device)

    def dense(self, z: torch.Tensor) -> torch.Tensor:
        """Every candidate as a full vector: ``(D,) -> (N, D)``."""
        padded_dim = num_blocks(self.dim, self.offset.shape[1]) * self.offset.shape[1]
        out = torch.nn.functional.pad(z, (0, padded_dim - self.dim)).repeat(len(self), 1)
        rows = torch.arange(len(self), device=z.device)[:, None]
        out[rows, self.coordinates()] += self.offset.to(out.dtype)
        return out[:, : self.dim]


def propose_blocks(
    rule: StepRule, z: torch.Tensor, block_dim: int, iteration: int, generator: torch.Generator
) -> tuple[Proposal, BlockCandidates]:
    """Draw one step's candidates around ``z (D,)``; returns the proposal and its candidates."""
    blocks = to_blocks(z, block_dim)
    proposal = rule.propose(blocks, iteration, generator)
    return proposal, block_candidates(proposal, blocks, None, z.shape[0])


def block_candidates(
    proposal: Proposal, blocks: torch.Tensor, chosen: torch.Tensor | None, dim: int
) -> BlockCandidates:
    """The candidates of a proposal drawn around ``blocks (P, p)``: block ``i`` is block
    ``chosen[i]`` of ``z (dim,)`` (``chosen=None``: block ``i`` itself)."""
    num, num_vertices, num_probe, block_dim = proposal.probes.shape
    offsets = proposal.probes - blocks[:, None, None, :]
    index = torch.arange(num, device=blocks.device).repeat_interleave(num_vertices * num_probe)
    if chosen is not None:
        index = chosen[index]
    return BlockCandidates(block=index, offset=offsets.reshape(-1, block_dim), dim=dim)
