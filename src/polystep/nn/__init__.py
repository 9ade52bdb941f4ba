"""Non-differentiable building blocks (hard spikes, quantization, staircases, argmax routing).

Every block is a plain ``nn.Module`` with a ``surrogate`` attribute: False (default) is the hard,
forward-only block; True is its smooth twin for gradient baselines. :func:`set_surrogate` flips a
whole model, :func:`smooth_twin` returns a flipped copy sharing no storage.
"""

from __future__ import annotations

import copy

from torch import nn

from polystep.nn.activations import Staircase
from polystep.nn.homeostasis import ReviveSilentOutputs, raise_silent_outputs
from polystep.nn.models import (
    argmax_attention_net,
    binary_mlp,
    hard_moe_net,
    mlp,
    quantized_mlp,
    spiking_mlp,
    staircase_mlp,
)
from polystep.nn.quant import BinaryLinear, QuantLinear, binarize, fake_quantize
from polystep.nn.routing import ArgmaxAttention, HardMoE, one_hot_argmax
from polystep.nn.spiking import LIF, OverTime, SpikeCount, SpikingMLP

SURROGATE_BLOCKS = (LIF, QuantLinear, BinaryLinear, Staircase, ArgmaxAttention, HardMoE)


def set_surrogate(model: nn.Module, value: bool | str = True) -> nn.Module:
    """Set ``surrogate`` on every block of ``model`` (in place); returns ``model``.

    ``"ste"`` applies to the quantized layers only; other blocks get ``True``.
    """
    if value not in (False, True, "ste"):
        raise ValueError(f"value must be one of (False, True, 'ste'), got {value!r}")
    for module in model.modules():
        if isinstance(module, QuantLinear | BinaryLinear):
            module.surrogate = value
        elif isinstance(module, SURROGATE_BLOCKS):
            module.surrogate = bool(value)
    return model


def smooth_twin(model: nn.Module, value: bool | str = True) -> nn.Module:
    """A deep copy of ``model`` with every block switched to its smooth twin."""
    return set_surrogate(copy.deepcopy(model), value)


def hard_blocks(model: nn.Module) -> list[str]:
    """Names of the blocks of ``model`` currently in hard (non-surrogate) mode."""
    return [
        name
        for name, m in model.named_modules()
        if isinstance(m, SURROGATE_BLOCKS) and m.surrogate is False
    ]


__all__ = [
    "LIF",
    "SURROGATE_BLOCKS",
    "ArgmaxAttention",
    "BinaryLinear",
    "HardMoE",
    "OverTime",
    "QuantLinear",
    "ReviveSilentOutputs",
    "SpikeCount",
    "SpikingMLP",
    "Staircase",
    "argmax_attention_net",
    "binarize",
    "binary_mlp",
    "fake_quantize",
    "hard_blocks",
    "hard_moe_net",
    "mlp",
    "one_hot_argmax",
    "quantized_mlp",
    "raise_silent_outputs",
    "set_surrogate",
    "smooth_twin",
    "spiking_mlp",
    "staircase_mlp",
]
