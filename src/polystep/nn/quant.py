"""Weight-quantized linear layers: int8 fake quantization on a fixed grid, and binary (sign)."""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from polystep.evaluate.traits import Traits, identity

SURROGATES = (False, True, "ste")


def fake_quantize(w: torch.Tensor, scale: float = 0.01, bits: int = 8) -> torch.Tensor:
    """``clamp(round(w / scale), −2^(b−1), 2^(b−1) − 1) · scale`` (int8: [−128, 127]·0.01)."""
    low, high = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    return torch.clamp(torch.round(w / scale), low, high) * scale


def binarize(w: torch.Tensor) -> torch.Tensor:
    """``+1`` where ``w ≥ 0``, ``−1`` elsewhere (no zeros, unlike ``sign``)."""
    return torch.where(w >= 0, 1.0, -1.0).to(w.dtype)


def _straight_through(w: torch.Tensor, hard: torch.Tensor) -> torch.Tensor:
    return w + (hard - w).detach()


def _check_surrogate(value: bool | str) -> bool | str:
    if value not in SURROGATES or (isinstance(value, int) and not isinstance(value, bool)):
        raise ValueError(f"surrogate must be one of {SURROGATES}, got {value!r}")
    return value


class QuantLinear(nn.Linear):
    """Linear layer whose weight and bias are fake-quantized in the forward pass.

    Args:
        in_features, out_features, bias: as ``nn.Linear``.
        scale: fixed grid step (0.01).
        bits: integer width (8: values in ``[−128, 127]·scale``).
        init_std: weights start ``N(0, init_std²)``, bias 0 (None: ``nn.Linear``'s init).
        surrogate: ``False`` hard quantization; ``True`` the smooth twin (plain, unquantized
            weights); ``"ste"`` quantized forward with a straight-through (identity) gradient.

    Shapes: ``(*, in_features) -> (*, out_features)``.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        *,
        scale: float = 0.01,
        bits: int = 8,
        init_std: float | None = 0.1,
        surrogate: bool | str = False,
    ) -> None:
        super().__init__(in_features, out_features, bias=bias)
        if not scale > 0:
            raise ValueError(f"scale must be > 0, got {scale!r}")
        if isinstance(bits, bool) or not isinstance(bits, int) or not 2 <= bits <= 16:
            raise ValueError(f"bits must be an int in [2, 16], got {bits!r}")
        self.scale = float(scale)
        self.bits = bits
        self.surrogate = _check_surrogate(surrogate)
        if init_std is not None:
            with torch.no_grad():
                self.weight.normal_(0.0, init_std)
                if self.bias is not None:
                    self.bias.zero_()

    def _q(self, t: torch.Tensor) -> torch.Tensor:
        if self.surrogate is True:
            return t
        hard = fake_quantize(t, self.scale, self.bits)
        return _straight_through(t, hard) if self.surrogate == "ste" else hard

    def polystep_traits(self) -> Traits:
        """Linear-like: ``y = x·q(W)ᵀ + q(b)`` with ``q`` elementwise."""
        return Traits(batchwise=True, weight_map=self._q, bias_map=self._q)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = None if self.bias is None else self._q(self.bias)
        return F.linear(x, self._q(self.weight), bias)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, scale={self.scale}, bits={self.bits}, " + (
            f"surrogate={self.surrogate!r}"
        )


class BinaryLinear(nn.Linear):
    """Linear layer with ±1 weights times a fixed scale (default ``1/sqrt(in_features)``).

    The bias stays real unless ``binary_bias=True``. ``surrogate=True`` gives the smooth twin
    ``scale·tanh(w / temperature)``; ``"ste"`` keeps the sign forward with a straight-through
    gradient.

    Shapes: ``(*, in_features) -> (*, out_features)``.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        *,
        scale: float | None = None,
        binary_bias: bool = False,
        temperature: float = 0.1,
        surrogate: bool | str = False,
    ) -> None:
        super().__init__(in_features, out_features, bias=bias)
        if scale is not None and not scale > 0:
            raise ValueError(f"scale must be None or > 0, got {scale!r}")
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature!r}")
        self.scale = 1.0 / math.sqrt(in_features) if scale is None else float(scale)
        self.binary_bias = bool(binary_bias)
        self.temperature = float(temperature)
        self.surrogate = _check_surrogate(surrogate)

    def _b(self, t: torch.Tensor) -> torch.Tensor:
        if self.surrogate is True:
            return torch.tanh(t / self.temperature)
        hard = binarize(t)
        return _straight_through(t, hard) if self.surrogate == "ste" else hard

    def _weight(self, w: torch.Tensor) -> torch.Tensor:
        return self.scale * self._b(w)

    def polystep_traits(self) -> Traits:
        """Linear-like: ``y = x·(scale·sign(W))ᵀ + b`` (bias binarized too if ``binary_bias``)."""
        bias_map = self._weight if self.binary_bias else identity
        return Traits(batchwise=True, weight_map=self._weight, bias_map=bias_map)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = self.bias
        if bias is not None and self.binary_bias:
            bias = self.scale * self._b(bias)
        return F.linear(x, self.scale * self._b(self.weight), bias)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, scale={self.scale:.4g}, surrogate={self.surrogate!r}"
