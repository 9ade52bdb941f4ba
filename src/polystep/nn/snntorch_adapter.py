"""Train an snntorch network with PolyStep on the layered fast path.

:func:`from_snntorch` takes ``nn.Sequential(Linear, snntorch.Leaky, Linear, snntorch.Leaky, ...)``
(the layout snntorch's tutorials use with ``init_hidden=True``) and returns a
:class:`~polystep.nn.SpikingMLP` that **shares the user's ``Linear`` layers**: optimising the
returned model trains the snntorch network in place. The spiking MLP runs the same dynamics as
the snntorch time loop with direct-current input (the static input fed at every step) and
spike-count logits, for Leaky neurons configured as our LIF is:

- ``reset_mechanism="zero"`` (snntorch's default ``reset_delay=True`` resets one step later in
  its stored membrane, which gives the same spikes as resetting at once);
- a fixed scalar ``beta`` and ``threshold`` shared by every layer;
- no inhibition, no state quantization, graded-spike factor 1.

snntorch fires on ``mem > threshold``, our LIF on ``v >= threshold``: spikes differ only when a
membrane lands exactly on the threshold. snntorch is optional; it is imported only here.
"""

from __future__ import annotations

import itertools
from typing import Any

import torch
from torch import nn

from polystep.nn.spiking import SpikingMLP


def from_snntorch(network: nn.Sequential, num_steps: int) -> SpikingMLP:
    """A :class:`SpikingMLP` over ``network``'s own ``Linear`` layers (shared, not copied).

    Args:
        network: ``nn.Sequential`` alternating ``nn.Linear`` and ``snntorch.Leaky``.
        num_steps: simulation length ``T``.

    Raises:
        ImportError: snntorch is not installed.
        ValueError: the network's layout or a neuron's settings have no exact equivalent.
    """
    import snntorch

    if not isinstance(network, nn.Sequential) or len(network) < 2 or len(network) % 2:
        raise ValueError(
            "network must be an nn.Sequential alternating nn.Linear and snntorch.Leaky, "
            f"got {network!r}"
        )
    linears = list(network)[0::2]
    neurons = list(network)[1::2]
    for i, (linear, neuron) in enumerate(zip(linears, neurons, strict=True)):
        if not isinstance(linear, nn.Linear):
            raise ValueError(f"network[{2 * i}] must be nn.Linear, got {type(linear).__name__}")
        if not isinstance(neuron, snntorch.Leaky):
            raise ValueError(
                f"network[{2 * i + 1}] must be snntorch.Leaky, got {type(neuron).__name__}"
            )
    settings = [_leaky_settings(n, 2 * i + 1) for i, n in enumerate(neurons)]
    if len(set(settings)) != 1:
        raise ValueError(f"every Leaky layer must share beta and threshold, got {settings}")
    beta, threshold = settings[0]
    sizes = (linears[0].in_features, *(lin.out_features for lin in linears))
    for i, (prev, nxt) in enumerate(itertools.pairwise(linears)):
        if prev.out_features != nxt.in_features:
            raise ValueError(f"Linear layers {i} and {i + 1} do not chain: {prev} then {nxt}")
    model = SpikingMLP(sizes, num_steps=num_steps, beta=beta, threshold=threshold)
    for i, linear in enumerate(linears):
        model[2 * i] = linear
    return model


def _leaky_settings(neuron: Any, index: int) -> tuple[float, float]:
    """``(beta, threshold)`` of one Leaky neuron, after checking it matches our LIF."""

    def scalar(name: str) -> float:
        value = getattr(neuron, name)
        if isinstance(value, torch.Tensor):
            if value.numel() != 1 or value.requires_grad:
                raise ValueError(
                    f"network[{index}].{name} must be a fixed scalar, got shape "
                    f"{tuple(value.shape)} (learnable: {value.requires_grad})"
                )
            return float(value)
        return float(value)

    checks = {
        "reset_mechanism": (getattr(neuron, "reset_mechanism", None), "zero"),
        "inhibition": (bool(getattr(neuron, "inhibition", False)), False),
        "state_quant": (bool(getattr(neuron, "state_quant", False)), False),
        "graded_spikes_factor": (scalar("graded_spikes_factor"), 1.0),
    }
    for name, (value, allowed) in checks.items():
        if value != allowed:
            raise ValueError(f"network[{index}].{name} must be {allowed!r}, got {value!r}")
    beta = scalar("beta")
    if not 0 < beta <= 1:
        raise ValueError(f"network[{index}].beta must be in (0, 1], got {beta!r}")
    return beta, scalar("threshold")
