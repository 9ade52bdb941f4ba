"""Model factories for the non-differentiable benchmark tasks (authors' architectures, §4.1–4.6).

Each returns an ``nn.Sequential`` whose smooth twin is the same factory with ``surrogate=True``;
hard model and twin share parameter names, so weights move between them with ``load_state_dict``.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

from torch import nn

from polystep.nn.activations import Staircase
from polystep.nn.quant import BinaryLinear, QuantLinear
from polystep.nn.routing import ArgmaxAttention, HardMoE
from polystep.nn.spiking import SpikingMLP


def _check_sizes(sizes: tuple[int, ...], minimum: int = 2) -> tuple[int, ...]:
    sizes = tuple(sizes)
    if len(sizes) < minimum or any(
        isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in sizes
    ):
        raise ValueError(f"sizes must be >= {minimum} positive ints, got {sizes!r}")
    return sizes


def mlp(sizes: tuple[int, ...] = (784, 128, 10)) -> nn.Sequential:
    """Plain ReLU MLP (the differentiable sanity task)."""
    sizes = _check_sizes(sizes)
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(itertools.pairwise(sizes)):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def quantized_mlp(
    sizes: tuple[int, ...] = (784, 128, 128, 10), *, surrogate: bool | str = False
) -> nn.Sequential:
    """ReLU MLP whose hidden-to-hidden layers are int8 :class:`QuantLinear` (first/last plain)."""
    sizes = _check_sizes(sizes, 3)
    layers: list[nn.Module] = []
    last = len(sizes) - 2
    for i, (a, b) in enumerate(itertools.pairwise(sizes)):
        hidden = 0 < i < last
        layers.append(QuantLinear(a, b, surrogate=surrogate) if hidden else nn.Linear(a, b))
        if i < last:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def binary_mlp(
    sizes: tuple[int, ...] = (784, 128, 10), *, surrogate: bool | str = False
) -> nn.Sequential:
    """MLP of :class:`BinaryLinear` layers (±1 weights, real biases) with ReLU between."""
    sizes = _check_sizes(sizes)
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(itertools.pairwise(sizes)):
        layers.append(BinaryLinear(a, b, surrogate=surrogate))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def staircase_mlp(
    sizes: tuple[int, ...] = (784, 128, 128, 10), *, levels: int = 5, surrogate: bool = False
) -> nn.Sequential:
    """MLP with :class:`Staircase` activations (twin: sigmoid)."""
    sizes = _check_sizes(sizes)
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(itertools.pairwise(sizes)):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(Staircase(levels, surrogate=surrogate))
    return nn.Sequential(*layers)


def argmax_attention_net(
    in_features: int = 784,
    hidden: int = 128,
    num_classes: int = 10,
    *,
    num_keys: int = 8,
    surrogate: bool = False,
) -> nn.Sequential:
    """``Linear → ReLU → ArgmaxAttention → Linear``."""
    _check_sizes((in_features, hidden, num_classes))
    return _around(
        in_features,
        hidden,
        num_classes,
        lambda: ArgmaxAttention(hidden, num_keys, surrogate=surrogate),
    )


def hard_moe_net(
    in_features: int = 784,
    hidden: int = 128,
    num_classes: int = 20,
    *,
    num_experts: int = 4,
    surrogate: bool = False,
) -> nn.Sequential:
    """``Linear → ReLU → HardMoE → Linear`` (20 classes: MNIST + Fashion-MNIST)."""
    _check_sizes((in_features, hidden, num_classes))
    return _around(
        in_features, hidden, num_classes, lambda: HardMoE(hidden, num_experts, surrogate=surrogate)
    )


def _around(
    in_features: int, hidden: int, num_classes: int, middle: Callable[[], nn.Module]
) -> nn.Sequential:
    """``Linear(in, hidden) → ReLU → middle() → Linear(hidden, classes)``, built in that order
    (so a seed gives the same initial weights as writing the layers out)."""
    first = nn.Linear(in_features, hidden)
    return nn.Sequential(first, nn.ReLU(), middle(), nn.Linear(hidden, num_classes))


def spiking_mlp(
    sizes: tuple[int, ...] = (784, 128, 10), *, num_steps: int = 15, surrogate: bool = False
) -> SpikingMLP:
    """:class:`SpikingMLP` with the authors' neuron (β 0.95, θ 1, reset to 0)."""
    return SpikingMLP(sizes, num_steps=num_steps, surrogate=surrogate)
