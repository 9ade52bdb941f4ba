"""A start that makes spiking neurons fire: per-layer gains set on one batch of inputs.

With PyTorch's default initialisation a hard-threshold network can start almost silent (on the
784-128-10 LIF net most output neurons never spike, so most spike-count logits are 0 and most
candidates tie). :func:`firing_start` walks the ``Linear -> LIF`` pairs of a
:class:`~polystep.nn.spiking.SpikingMLP` in order and multiplies each ``Linear``'s weight and bias
by the gain (found by bisection on a log scale) at which the layer's mean firing rate on
``inputs`` is ``rate``; later layers see the already rescaled earlier ones.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from polystep.nn.spiking import LIF, SpikingMLP

GAIN_RANGE = (1e-2, 1e3)


def _rate(model: SpikingMLP, upto: int, inputs: torch.Tensor) -> float:
    out = inputs
    for layer in list(model)[: upto + 1]:
        out = layer(out)
    return float(out.float().mean())


@torch.no_grad()
def firing_start(
    model: SpikingMLP, inputs: torch.Tensor, rate: float = 0.1, iterations: int = 30
) -> list[float]:
    """Rescale ``model``'s ``Linear`` layers in place so each LIF layer fires at about ``rate``
    (a fraction of neuron-steps) on ``inputs (B, F)``; returns the gains, one per layer."""
    if not isinstance(model, SpikingMLP):
        raise ValueError(f"model must be a SpikingMLP, got {type(model).__name__}")
    if not (isinstance(rate, int | float) and 0 < rate < 1):
        raise ValueError(f"rate must be a fraction in (0, 1), got {rate!r}")
    layers = list(model)
    gains = []
    for index, layer in enumerate(layers):
        if not isinstance(layer, LIF):
            continue
        linear = layers[index - 1]
        assert isinstance(linear, nn.Linear)
        weight, bias = linear.weight.clone(), None if linear.bias is None else linear.bias.clone()

        def set_gain(gain: float, weight: torch.Tensor = weight, bias=bias, linear=linear) -> None:
            linear.weight.copy_(gain * weight)
            if bias is not None:
                linear.bias.copy_(gain * bias)

        low, high = (math.log(g) for g in GAIN_RANGE)
        for _ in range(iterations):
            middle = (low + high) / 2
            set_gain(math.exp(middle))
            if _rate(model, index, inputs) < rate:
                low = middle
            else:
                high = middle
        gain = math.exp((low + high) / 2)
        set_gain(gain)
        gains.append(gain)
    return gains
