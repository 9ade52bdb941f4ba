"""A spiking layer chain run one time step at a time: memory flat in the number of steps ``T``.

A streamable model is an ``nn.Sequential`` (nested ones are flattened) in three parts:

* ``layers[:start]``: the static prefix, run once on the input (direct-current input: the
  projection that feeds the first neurons does not change over time);
* ``layers[start]``: a LIF layer with ``num_steps = T``, which integrates that static current;
  it and every layer up to ``layers[stop]`` run one step at a time: a layer with its own
  ``stream_step(x_t, state) -> (y_t, state)`` (LIF, :class:`~polystep.nn.OverTime`, ...), an
  ``nn.Flatten`` of feature dims, or a layer whose traits call it linear-like or unit-wise;
* ``layers[stop]``: a :class:`~polystep.nn.SpikeCount` that sums the steps; ``layers[stop + 1:]``
  run once on the counts.

Only the current step's activations, each neuron's membrane and the running counts are held:
nothing of shape ``(T, ...)`` is ever formed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from polystep.evaluate.base import nested_layers
from polystep.evaluate.traits import is_unitwise, traits_of


class NotStreamable(ValueError):
    """The model cannot run one time step at a time (the message says why)."""


def step_layer(layer: nn.Module, x: torch.Tensor, state: Any) -> tuple[torch.Tensor, Any]:
    """One time step of ``layer`` on ``x (B, ...)`` (no time dim): ``(y_t, new state)``."""
    own = getattr(layer, "stream_step", None)
    if own is not None:
        return own(x, state)
    if isinstance(layer, nn.Flatten):  # (T, B, ...) dims shift down by one without time
        end = layer.end_dim - 1 if layer.end_dim > 0 else layer.end_dim
        return x.flatten(layer.start_dim - 1, end), None
    return layer(x), None


def _steppable(layer: nn.Module) -> bool:
    if hasattr(layer, "stream_step"):
        return True
    if isinstance(layer, nn.Flatten):
        return layer.start_dim >= 2
    traits = traits_of(layer)
    return traits.linear or is_unitwise(layer)


@dataclass(frozen=True)
class StreamPlan:
    """Where the time loop starts and stops in a streamable model's layers (module docstring)."""

    layers: list[nn.Module]
    start: int
    stop: int

    @property
    def num_steps(self) -> int:
        return int(self.layers[self.start].num_steps)

    @classmethod
    def of(cls, model: nn.Module) -> StreamPlan:
        """The plan of ``model``; NotStreamable (saying why) when it has none."""
        layers = nested_layers(model, NotStreamable)
        start = next(
            (k for k, m in enumerate(layers) if getattr(m, "num_steps", None) is not None), None
        )
        if start is None or not hasattr(layers[start], "stream_step"):
            raise NotStreamable(
                "no LIF layer with num_steps (a direct-current input that starts the time loop)"
            )
        stop = next(
            (k for k in range(start, len(layers)) if getattr(layers[k], "sums_time", False)),
            None,
        )
        if stop is None:
            raise NotStreamable("no SpikeCount after the first LIF layer to end the time loop")
        for layer in layers[start:stop]:
            if not _steppable(layer):
                raise NotStreamable(
                    f"layer {type(layer).__name__} cannot run one time step at a time (give "
                    "it a stream_step(x_t, state) -> (y_t, state) method)"
                )
        return cls(layers, start, stop)


def advance(
    layers: list[nn.Module], lo: int, hi: int, x: torch.Tensor, states: list[Any]
) -> list[torch.Tensor]:
    """Run ``layers[lo:hi]`` one step on ``x``, updating ``states`` in place; their outputs."""
    outs = []
    for k in range(lo, hi):
        x, states[k] = step_layer(layers[k], x, states[k])
        outs.append(x)
    return outs


class BaseStream:
    """The incumbent, step by step: the static prefix once, then one step per :meth:`step`.

    ``out(k)`` is layer ``k``'s output at the current step (static layers: once for all),
    ``inp(k)`` its input.
    """

    def __init__(self, plan: StreamPlan, inputs: torch.Tensor) -> None:
        self.plan = plan
        self.inputs = inputs
        self.acts: list[torch.Tensor | None] = [None] * len(plan.layers)
        x = inputs
        for k in range(plan.start):
            x = self.acts[k] = plan.layers[k](x)
        self.current = x  # the static current of layers[start]
        self.states: list[Any] = [None] * len(plan.layers)

    def step(self, until: int) -> None:
        """Advance layers ``start .. until - 1`` by one step."""
        outs = advance(self.plan.layers, self.plan.start, until, self.current, self.states)
        self.acts[self.plan.start : until] = outs

    def out(self, k: int) -> torch.Tensor:
        return self.acts[k]  # type: ignore[return-value]

    def inp(self, k: int) -> torch.Tensor:
        if k == 0:
            return self.inputs
        return self.current if k == self.plan.start else self.out(k - 1)


def finish(plan: StreamPlan, counts: torch.Tensor) -> torch.Tensor:
    """The layers after the time loop on the spike counts."""
    for layer in plan.layers[plan.stop + 1 :]:
        counts = layer(counts)
    return counts


def stream_forward(model: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
    """``model(inputs)`` computed one time step at a time (same values, memory flat in ``T``)."""
    plan = StreamPlan.of(model)
    base = BaseStream(plan, inputs)
    for _ in range(plan.num_steps):
        base.step(plan.stop + 1)
    return finish(plan, base.states[plan.stop])
