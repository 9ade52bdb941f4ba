"""Staircase activation: a sigmoid quantized to a few levels (zero gradient almost everywhere)."""

from __future__ import annotations

import torch
from torch import nn

from polystep.evaluate.traits import UNITWISE


class Staircase(nn.Module):
    """``floor(levels·sigmoid(x)) / levels``, capped at ``(levels − 1) / levels``.

    With 5 levels the outputs are ``{0, 0.2, 0.4, 0.6, 0.8}``; the cap only matters where the
    sigmoid rounds to exactly 1. ``surrogate=True`` gives the smooth twin ``sigmoid(x)``, which
    lies within ``[0, 1/levels]`` above the staircase (almost everywhere).

    Shapes: elementwise, dtype preserved.
    """

    polystep_traits = UNITWISE

    def __init__(self, levels: int = 5, *, surrogate: bool = False) -> None:
        super().__init__()
        if isinstance(levels, bool) or not isinstance(levels, int) or levels < 2:
            raise ValueError(f"levels must be an int >= 2, got {levels!r}")
        self.levels = levels
        self.surrogate = bool(surrogate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = torch.sigmoid(x)
        if self.surrogate:
            return s
        return torch.clamp(torch.floor(self.levels * s), max=self.levels - 1) / self.levels

    def extra_repr(self) -> str:
        return f"levels={self.levels}, surrogate={self.surrogate}"
