"""Step-size adaptation from the fraction of improving vertices (a success rule).

After a step, the fraction ``q`` of its candidates whose loss beats the incumbent's on the same
batch says whether the probes are too far (few improve) or too timid (many improve). Both radii
are multiplied by ``scale``, updated as ``scale * exp(rate * (q - target) / (1 - target))`` and
kept within ``[low, high]`` (Rechenberg's one-fifth rule with ``target = 0.2``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


def improving_fraction(losses: torch.Tensor, incumbent: float) -> float:
    """Fraction of ``losses (N,)`` strictly below ``incumbent`` (non-finite ones never are)."""
    if losses.numel() == 0:
        return 0.0
    return float((losses.to(torch.float64) < incumbent).to(torch.float64).mean())


@dataclass(frozen=True)
class SuccessRadius:
    """See the module docstring; ``scale`` starts at 1."""

    target: float = 0.2
    rate: float = 0.3
    low: float = 0.1
    high: float = 10.0

    @classmethod
    def build(cls, *, target: float = 0.2, rate: float = 0.3) -> SuccessRadius:
        if not (isinstance(target, int | float) and 0 < target < 1):
            raise ValueError(f"success target must be a fraction in (0, 1), got {target!r}")
        if not (isinstance(rate, int | float) and 0 < rate < math.inf):
            raise ValueError(f"success rate must be a positive float, got {rate!r}")
        return cls(float(target), float(rate))

    def __call__(self, scale: float, fraction: float) -> float:
        """The next radius multiplier after a step with ``fraction`` improving candidates."""
        step = math.exp(self.rate * (fraction - self.target) / (1 - self.target))
        return min(max(scale * step, self.low), self.high)
