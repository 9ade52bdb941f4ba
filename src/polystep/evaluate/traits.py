"""What a layer tells the fast evaluators about itself: its :class:`Traits`.

A layer declares ``polystep_traits`` on itself: a :class:`Traits` (class attribute) or a method
returning one (when the traits depend on the instance, e.g. a quantization grid). Torch's own
layers get theirs from one registry, :data:`BUILTIN`, keyed by EXACT type: a subclass of
``nn.Linear`` with its own ``forward`` is not assumed to be linear. Anything else has no traits,
and the layered evaluator says so and uses a slower path.

* ``batchwise``: each sample is processed independently along its batch dim (which may move,
  e.g. a LIF layer emits time-major ``(T, B, F)``);
* ``unitwise``: feature ``f`` of the output depends only on feature ``f`` of the input
  (activations, spiking neurons, spike counts); implies batchwise;
* ``kernel``: the layer's fused candidate kernel, a :class:`UnitKernel` naming the op the
  compiled suffix (:mod:`polystep.evaluate.fused`) runs for it (unit-wise layers only);
* ``weight_map`` / ``bias_map``: the layer is linear-like, ``y = x·f(W)ᵀ + g(b)`` with ``f``, ``g``
  elementwise maps (identity for ``nn.Linear``, fake quantization for int8, sign for binary):
  output unit ``u`` then depends only on row ``u`` of ``W`` and on ``b[u]``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

TensorMap = Callable[[torch.Tensor], torch.Tensor]


def identity(t: torch.Tensor) -> torch.Tensor:
    return t


@dataclass(frozen=True)
class UnitKernel:
    """A unit-wise layer's fused candidate kernel: the op ``name`` (``"lif"``, ``"count"``,
    ``"relu"``) and its constants ``params`` (LIF: ``(beta, threshold)``)."""

    name: str
    params: tuple[float, ...] = ()


@dataclass(frozen=True)
class Traits:
    """See the module docstring."""

    batchwise: bool = False
    unitwise: bool = False
    kernel: UnitKernel | None = None
    weight_map: TensorMap | None = None
    bias_map: TensorMap | None = None

    @property
    def linear(self) -> bool:
        return self.weight_map is not None

    @property
    def plain_linear(self) -> bool:
        """Linear with identity maps: a weight change acts through the segment's sparse delta."""
        return self.weight_map is identity and self.bias_map in (identity, None)


BATCHWISE = Traits(batchwise=True)
UNITWISE = Traits(batchwise=True, unitwise=True)
RELU = Traits(batchwise=True, unitwise=True, kernel=UnitKernel("relu"))
LINEAR = Traits(batchwise=True, weight_map=identity, bias_map=identity)


def _flatten(m: nn.Module) -> Traits:
    return BATCHWISE if m.start_dim >= 1 or m.start_dim < -1 else Traits()


def _softmax(m: nn.Module) -> Traits:
    return BATCHWISE if m.dim is not None and m.dim != 0 else Traits()


BUILTIN: dict[type, Traits | Callable[[nn.Module], Traits]] = {
    nn.Linear: LINEAR,
    nn.ReLU: RELU,
    **{t: UNITWISE for t in (
        nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Mish, nn.Sigmoid, nn.Tanh,
        nn.Hardtanh, nn.Hardsigmoid, nn.Hardswish, nn.Softplus, nn.Softsign, nn.Identity,
        nn.Dropout,
    )},
    **{t: BATCHWISE for t in (
        nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.PReLU, nn.MaxPool1d, nn.MaxPool2d, nn.AvgPool1d,
        nn.AvgPool2d, nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d,
    )},
    nn.Flatten: _flatten,
    nn.Softmax: _softmax,
    nn.LogSoftmax: _softmax,
}  # fmt: skip


def traits_of(module: nn.Module) -> Traits:
    """The layer's own declaration, else the registry entry of its exact type, else none."""
    own = getattr(module, "polystep_traits", None)
    if own is not None:
        traits = own() if callable(own) else own
        if not isinstance(traits, Traits):
            raise TypeError(
                f"{type(module).__name__}.polystep_traits must be a Traits or return one, "
                f"got {type(traits).__name__}"
            )
        return traits
    entry = BUILTIN.get(type(module))
    if entry is None:
        return Traits()
    return entry(module) if callable(entry) else entry


def is_batchwise(module: nn.Module) -> bool:
    traits = traits_of(module)
    return traits.batchwise or traits.unitwise


def is_unitwise(module: nn.Module) -> bool:
    return traits_of(module).unitwise
