"""Hard routing: argmax attention over learned keys, and top-1 mixture of experts.

Both compute every branch and select with a one-hot mask built by comparing the argmax with an
``arange`` (no indexing by data), so they are ``torch.func.vmap``-safe. ``surrogate=True`` replaces
the one-hot mask by ``softmax(scores / temperature)``, the smooth twin; as the temperature goes to
0 the twin approaches the hard block.
"""

from __future__ import annotations

import torch
from torch import nn

from polystep.evaluate.traits import BATCHWISE


def one_hot_argmax(scores: torch.Tensor) -> torch.Tensor:
    """One-hot of ``argmax`` over the last dim, in ``scores``' dtype (ties: lowest index)."""
    idx = torch.argmax(scores, dim=-1, keepdim=True)
    return (idx == torch.arange(scores.shape[-1], device=scores.device)).to(scores.dtype)


def _mask(scores: torch.Tensor, surrogate: bool, temperature: float) -> torch.Tensor:
    if surrogate:
        return torch.softmax(scores / temperature, dim=-1)
    return one_hot_argmax(scores)


def _check(num_name: str, num: int, temperature: float) -> None:
    if isinstance(num, bool) or not isinstance(num, int) or num < 1:
        raise ValueError(f"{num_name} must be a positive int, got {num!r}")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature!r}")


class ArgmaxAttention(nn.Module):
    """Hard attention over ``num_keys`` learned keys ``K (S, D)``.

    ``j = argmax_s(x·K_s)``; output ``values(x) ⊙ sigmoid(K_j)``. The smooth twin gates with
    ``softmax(x·Kᵀ / temperature) @ sigmoid(K)`` instead.

    Shapes: ``(*, dim) -> (*, dim)``.
    """

    polystep_traits = BATCHWISE  # each sample is routed independently

    def __init__(
        self,
        dim: int,
        num_keys: int = 8,
        *,
        key_std: float = 0.5,
        temperature: float = 1.0,
        surrogate: bool = False,
    ) -> None:
        super().__init__()
        _check("num_keys", num_keys, temperature)
        _check("dim", dim, temperature)
        self.keys = nn.Parameter(torch.randn(num_keys, dim) * key_std)
        self.values = nn.Linear(dim, dim)
        self.temperature = float(temperature)
        self.surrogate = bool(surrogate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mask = _mask(x @ self.keys.T, self.surrogate, self.temperature)
        gate = mask @ torch.sigmoid(self.keys)
        return self.values(x) * gate

    def extra_repr(self) -> str:
        num, dim = self.keys.shape
        return f"num_keys={num}, dim={dim}, surrogate={self.surrogate}"


class HardMoE(nn.Module):
    """Top-1 mixture of experts: gate ``Linear(dim, E)``, experts ``Linear → ReLU → Linear``.

    All experts run; the output is ``Σ_e mask_e · expert_e(x)`` with ``mask = onehot(argmax gate)``
    (smooth twin: ``softmax(gate / temperature)``).

    Shapes: ``(*, dim) -> (*, dim)``.
    """

    polystep_traits = BATCHWISE  # each sample is routed independently

    def __init__(
        self,
        dim: int,
        num_experts: int = 4,
        hidden: int | None = None,
        *,
        temperature: float = 1.0,
        surrogate: bool = False,
    ) -> None:
        super().__init__()
        _check("num_experts", num_experts, temperature)
        _check("dim", dim, temperature)
        hidden = dim if hidden is None else hidden
        _check("hidden", hidden, temperature)
        self.gate = nn.Linear(dim, num_experts)
        self.experts = nn.ModuleList(
            nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, dim))
            for _ in range(num_experts)
        )
        self.temperature = float(temperature)
        self.surrogate = bool(surrogate)

    def routing(self, x: torch.Tensor) -> torch.Tensor:
        """Mask over experts ``(*, E)`` (one-hot, or softmax for the twin)."""
        return _mask(self.gate(x), self.surrogate, self.temperature)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outs = torch.stack([expert(x) for expert in self.experts], dim=-2)
        return (self.routing(x).unsqueeze(-1) * outs).sum(dim=-2)

    def extra_repr(self) -> str:
        return f"num_experts={len(self.experts)}, surrogate={self.surrogate}"
