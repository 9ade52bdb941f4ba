"""Tiny MLP policies evaluated for many parameter vectors at once.

A policy maps ``params (N, D)`` (one flat vector per candidate) and observations
``(N, B, obs_dim)`` (B environments per candidate) to logits ``(N, B, A)``; actions are the
deterministic argmax. The flat layout is ``W1 (H, obs), b1 (H,), W2 (A, H), b2 (A,)``.

Hidden activations:

- ``"tanh"``: the usual smooth MLP;
- ``"binary"``: ``sign(h)`` with ``sign(0) = +1``, so hidden units are exactly +-1 (gradient zero
  almost everywhere);
- ``"int8"``: symmetric fake quantization of the pre-activation, ``round(h / s) * s`` with
  ``s = max|h| / 127`` and no other nonlinearity. The "tensor" of the per-tensor scale is the
  hidden vector of one observation, so an action never depends on which other environments are
  evaluated in the same batch.

``weight_bits=8`` additionally fake-quantizes every parameter tensor (W1, b1, W2, b2) per tensor
and per candidate: ``round(W / s) * s`` with ``s = max|W| / 127``, i.e. int8 weights times one
float scale per tensor. The search still moves float coordinates; only the quantized weights are
ever used. Preset ``"int8w"`` is that with int8 activations too: a fully int8 network.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

ACTIVATIONS = ("tanh", "binary", "int8")
QMAX = 127.0


def fake_quant(x: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
    """Symmetric int8 fake quantization with one scale ``max|x| / 127`` over ``dims``.

    Returns ``q * s`` with integer ``q`` in ``[-127, 127]``; an all-zero slice stays zero.
    """
    scale = x.abs().amax(dim=dims, keepdim=True) / QMAX
    safe = torch.where(scale > 0, scale, torch.ones_like(scale))
    q = torch.round(x / safe).clamp(-QMAX, QMAX)
    return q * scale


def binary(x: torch.Tensor) -> torch.Tensor:
    """``+1`` where ``x >= 0`` else ``-1``."""
    return torch.where(x >= 0, 1.0, -1.0).to(x.dtype)


@dataclass(frozen=True)
class MLPPolicy:
    """``obs -> H hidden -> A logits``, batched over candidate parameter vectors.

    Args:
        obs_dim, num_actions: from the environment.
        hidden: hidden units (16 as in the authors' runs).
        activation: ``"tanh"``, ``"binary"`` or ``"int8"`` (see the module docstring).
        weight_bits: ``None`` (float weights) or 8 (int8 fake-quantized weights).
    """

    obs_dim: int
    num_actions: int
    hidden: int = 16
    activation: str = "tanh"
    weight_bits: int | None = None

    def __post_init__(self) -> None:
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {ACTIVATIONS}, got {self.activation!r}")
        if self.weight_bits not in (None, 8):
            raise ValueError(f"weight_bits must be None or 8, got {self.weight_bits!r}")
        for name in ("obs_dim", "num_actions", "hidden"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")

    @property
    def shapes(self) -> tuple[tuple[int, ...], ...]:
        h, o, a = self.hidden, self.obs_dim, self.num_actions
        return (h, o), (h,), (a, h), (a,)

    @property
    def dim(self) -> int:
        """Number of parameters ``D``."""
        return sum(math.prod(s) for s in self.shapes)

    def unflatten(self, params: torch.Tensor) -> list[torch.Tensor]:
        """``(N, D)`` -> ``[W1 (N, H, o), b1 (N, H), W2 (N, A, H), b2 (N, A)]`` (quantized
        when ``weight_bits`` is set)."""
        if params.ndim != 2 or params.shape[1] != self.dim:
            raise ValueError(f"params must have shape (N, {self.dim}), got {tuple(params.shape)}")
        out, start = [], 0
        for shape in self.shapes:
            size = math.prod(shape)
            tensor = params[:, start : start + size].reshape(-1, *shape)
            if self.weight_bits == 8:
                tensor = fake_quant(tensor, tuple(range(1, tensor.ndim)))
            out.append(tensor)
            start += size
        return out

    def hidden_activation(self, pre: torch.Tensor) -> torch.Tensor:
        """Apply the activation to pre-activations ``(..., H)``."""
        if self.activation == "tanh":
            return torch.tanh(pre)
        if self.activation == "binary":
            return binary(pre)
        return fake_quant(pre, (-1,))

    def prepare(self, params: torch.Tensor) -> list[torch.Tensor]:
        """Per-candidate weights used by :meth:`act_prepared` (quantized once per rollout)."""
        return self.unflatten(params)

    def logits_prepared(self, weights: list[torch.Tensor], obs: torch.Tensor) -> torch.Tensor:
        """``weights`` from :meth:`prepare`, ``obs (N, B, o) -> (N, B, A)``."""
        w1, b1, w2, b2 = weights
        obs = obs.to(w1.dtype)
        pre = torch.baddbmm(b1[:, None, :], obs, w1.transpose(1, 2))
        hid = self.hidden_activation(pre)
        return torch.baddbmm(b2[:, None, :], hid, w2.transpose(1, 2))

    def act_prepared(self, weights: list[torch.Tensor], obs: torch.Tensor) -> torch.Tensor:
        """Deterministic argmax actions from prepared weights: ``(N, B)`` long."""
        return self.logits_prepared(weights, obs).argmax(dim=-1)

    def logits(self, params: torch.Tensor, obs: torch.Tensor) -> torch.Tensor:
        """``params (N, D), obs (N, B, o) -> (N, B, A)``."""
        return self.logits_prepared(self.prepare(params), obs)

    def act(self, params: torch.Tensor, obs: torch.Tensor) -> torch.Tensor:
        """Deterministic argmax actions: ``(N, B)`` long."""
        return self.act_prepared(self.prepare(params), obs)

    def init(self, generator: torch.Generator, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """PyTorch's ``nn.Linear`` default: ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))``: ``(D,)``."""
        parts = []
        for shape, fan_in in zip(self.shapes, (self.obs_dim,) * 2 + (self.hidden,) * 2):
            bound = 1.0 / math.sqrt(fan_in)
            unit = torch.rand(math.prod(shape), generator=generator, dtype=dtype)
            parts.append((2.0 * unit - 1.0) * bound)
        return torch.cat(parts)


POLICIES = {
    "tanh": {"activation": "tanh"},
    "binary": {"activation": "binary"},
    "int8": {"activation": "int8"},
    "int8w": {"activation": "int8", "weight_bits": 8},
}


def make_policy(name: str, env: object, *, hidden: int = 16) -> MLPPolicy:
    """Policy preset ``"tanh"``, ``"binary"``, ``"int8"`` or ``"int8w"`` sized for ``env``."""
    if name not in POLICIES:
        raise ValueError(f"policy must be one of {sorted(POLICIES)}, got {name!r}")
    return MLPPolicy(
        obs_dim=env.obs_dim,  # type: ignore[attr-defined]
        num_actions=env.num_actions,  # type: ignore[attr-defined]
        hidden=hidden,
        **POLICIES[name],
    )
