"""Helpers shared by the evaluator tests (imported by name: ``tests/`` is on the path)."""

from __future__ import annotations

import torch

from polystep.blocks import BlockCandidates, propose_blocks
from polystep.step import StepRule


def step_candidates(space, radius: float, keep: int = 400) -> BlockCandidates:
    """One step's candidates: ``keep`` evenly spaced ones and the first of every segment."""
    rule = StepRule.build(epsilon=1.0, step_radius=radius, probe_radius=radius)
    z = torch.zeros(space.dim, dtype=space.dtype)
    cands = propose_blocks(rule, z, space.block_dim, 0, torch.Generator().manual_seed(0))[1]
    seg = space.block_segments()[cands.block]
    firsts = torch.stack([torch.nonzero(seg == s)[0, 0] for s in torch.unique(seg)])
    idx = torch.unique(torch.cat([torch.linspace(0, len(cands) - 1, keep).long(), firsts]))
    return BlockCandidates(block=cands.block[idx], offset=cands.offset[idx], dim=cands.dim)
