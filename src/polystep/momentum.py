"""Heavy-ball momentum on the barycentric move, in parameter space.

A step moves the weights by ``delta`` (the barycentric move mapped through the subspace). With
momentum the weights move by the velocity ``v <- beta * v + delta`` instead, so a direction that
several steps agree on keeps being followed after the subspace is redrawn (the velocity lives in
parameter space, where a redraw changes nothing).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


def heavy_ball(velocity: torch.Tensor | None, delta: torch.Tensor, beta: float) -> torch.Tensor:
    """``beta * velocity + delta`` (``velocity`` None: ``delta``): ``(n,), (n,) -> (n,)``."""
    return delta.clone() if velocity is None else beta * velocity + delta


@dataclass(frozen=True)
class Momentum:
    """``beta`` in ``[0, 1)``: the velocity's decay per step (0: no momentum)."""

    beta: float

    @classmethod
    def build(cls, *, beta: float) -> Momentum:
        ok = isinstance(beta, int | float) and not isinstance(beta, bool)
        if not (ok and math.isfinite(beta) and 0 <= beta < 1):
            raise ValueError(f"momentum beta must be a float in [0, 1), got {beta!r}")
        return cls(float(beta))

    def __call__(self, velocity: torch.Tensor | None, delta: torch.Tensor) -> torch.Tensor:
        return heavy_ball(velocity, delta, self.beta)
