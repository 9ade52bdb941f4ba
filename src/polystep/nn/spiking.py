"""Leaky integrate-and-fire neurons and a spiking MLP, hard-threshold by default.

Time is the leading dimension of every spike train: ``(T, *batch, features)``. A LIF layer fed a
static current (direct-current input, the first layer of :class:`SpikingMLP`) takes ``(*batch, F)``
and integrates it for ``num_steps`` steps, so the projection that produced the current runs once,
not once per step. Networks are plain ``nn.Sequential`` s of ``Linear`` / :class:`LIF` /
:class:`SpikeCount` (and :class:`OverTime` around per-frame layers such as convolutions), so a
layered evaluator can walk them layer by layer.

Each time-aware layer also runs ONE step at a time, ``stream_step(x_t, state) -> (y_t, state)``
(``state`` None at the first step), which is what the streamed, memory-bounded evaluation
(:mod:`polystep.evaluate.stream`) uses instead of holding ``(T, ...)`` tensors.
"""

from __future__ import annotations

import functools
import itertools

import torch
from torch import nn

from polystep.evaluate.traits import Traits, UnitKernel
from polystep.validation import check_positive_int


@functools.lru_cache(maxsize=64)
def _lif_traits(surrogate: bool, beta: float, threshold: float) -> Traits:
    """A LIF layer's traits (frozen, so one object serves every call: the evaluators ask for
    them several times a step)."""
    kernel = None if surrogate else UnitKernel("lif", (beta, threshold))
    return Traits(batchwise=True, unitwise=True, kernel=kernel)


class LIF(nn.Module):
    """Leaky integrate-and-fire layer: ``v ← β·v + I``, ``s = 1[v ≥ θ]``, ``v ← v·(1 − s)``.

    The membrane starts at 0 and resets to 0 after a spike. With ``surrogate=True`` the spike is
    the smooth twin ``sigmoid(slope·(v − θ))`` (and the reset multiplies by ``1 − s``), for
    gradient training.

    Args:
        beta: membrane decay in (0, 1].
        threshold: firing threshold θ > 0.
        num_steps: when given, the input is a static current ``(*batch, F)`` repeated for this many
            steps; when None, the input is a time-major current ``(T, *batch, F)``.
        surrogate: smooth spikes instead of the hard threshold.
        slope: steepness ``k`` of the smooth spike.

    Shapes: ``(*batch, F)`` or ``(T, *batch, F)`` -> spikes ``(T, *batch, F)`` in the input dtype.
    """

    def __init__(
        self,
        beta: float = 0.95,
        threshold: float = 1.0,
        *,
        num_steps: int | None = None,
        surrogate: bool = False,
        slope: float = 10.0,
    ) -> None:
        super().__init__()
        if not 0 < beta <= 1:
            raise ValueError(f"beta must be in (0, 1], got {beta!r}")
        if not threshold > 0:
            raise ValueError(f"threshold must be > 0, got {threshold!r}")
        if num_steps is not None:
            check_positive_int("num_steps", num_steps)
        if not slope > 0:
            raise ValueError(f"slope must be > 0, got {slope!r}")
        self.beta = float(beta)
        self.threshold = float(threshold)
        self.num_steps = num_steps
        self.surrogate = bool(surrogate)
        self.slope = float(slope)

    def polystep_traits(self) -> Traits:
        """Unit-wise (each neuron sees only its own current); the hard neuron has a fused
        candidate kernel."""
        return _lif_traits(self.surrogate, self.beta, self.threshold)

    def init_state(self, current: torch.Tensor) -> torch.Tensor:
        """Zero membrane shaped like one step of ``current`` ``(*batch, F)``."""
        return torch.zeros_like(current)

    def spike(self, v: torch.Tensor) -> torch.Tensor:
        """Spike of membrane ``v``: ``1[v ≥ θ]`` or its smooth twin."""
        if self.surrogate:
            return torch.sigmoid(self.slope * (v - self.threshold))
        return (v >= self.threshold).to(v.dtype)

    def step(self, current: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One time step: ``(I_t, v_{t-1}) -> (s_t, v_t)``, all ``(*batch, F)``."""
        v = self.beta * v + current
        s = self.spike(v)
        return s, v * (1.0 - s)

    def stream_step(
        self, current: torch.Tensor, v: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One step of the stream: the current ``I_t`` (the static current when ``num_steps``
        is set) and the membrane (None: at rest) -> ``(s_t, v_t)``.

        The stream owns the membrane: outside autograd and vmap it is updated in place (the
        same operations as :meth:`step`, so the same values, with two fewer temporaries)."""
        if v is None or self.surrogate or not (_plain(v) and _plain(current)):
            return self.step(current, self.init_state(current) if v is None else v)
        v.mul_(self.beta).add_(current)
        s = self.spike(v)
        return s, v.mul_(1.0 - s)

    def forward(self, current: torch.Tensor) -> torch.Tensor:
        static = self.num_steps is not None
        steps = self.num_steps if static else current.shape[0]
        if not self.surrogate and _plain(current):
            return hard_lif(current if static else None, current, self.beta, self.threshold, steps)
        v = self.init_state(current if static else current[0])
        spikes = []
        for t in range(steps):
            s, v = self.step(current if static else current[t], v)
            spikes.append(s)
        return torch.stack(spikes)

    def extra_repr(self) -> str:
        mode = f"surrogate(slope={self.slope})" if self.surrogate else "hard"
        return f"beta={self.beta}, threshold={self.threshold}, num_steps={self.num_steps}, {mode}"


def _plain(t: torch.Tensor) -> bool:
    """True when ``t`` may go through in-place kernels: no autograd, no vmap/grad transform."""
    if torch.is_grad_enabled() and t.requires_grad:
        return False
    return not torch._C._functorch.is_functorch_wrapped_tensor(t)


def hard_lif(
    static: torch.Tensor | None, current: torch.Tensor, beta: float, threshold: float, steps: int
) -> torch.Tensor:
    """The hard LIF loop in place, one buffer: ``(T, *batch, F)`` spikes.

    Same arithmetic as :meth:`LIF.step` (``β·v + I``, then ``v − v·s``, which is exactly ``0``
    where ``s = 1`` and ``v`` where ``s = 0``), so results are bit-identical.
    """
    shape = current.shape if static is not None else current.shape[1:]
    out = current.new_empty(steps, *shape)
    v = torch.zeros(shape, dtype=current.dtype, device=current.device)
    for t in range(steps):
        v.mul_(beta).add_(static if static is not None else current[t])
        torch.ge(v, threshold, out=out[t])
        v.addcmul_(v, out[t], value=-1.0)
    return out


class SpikeCount(nn.Module):
    """Sum a spike train over time: ``(T, *batch, F) -> (*batch, F)`` (spike-count logits)."""

    polystep_traits = Traits(batchwise=True, unitwise=True, kernel=UnitKernel("count"))
    sums_time = True  # ends the time loop of a streamed run (polystep.evaluate.stream)

    def forward(self, spikes: torch.Tensor) -> torch.Tensor:
        return spikes.sum(dim=0)

    def stream_step(
        self, spikes: torch.Tensor, count: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Add one step's spikes ``(*batch, F)`` to the running count (None: zero)."""
        count = spikes.clone() if count is None else count.add_(spikes)
        return count, count


class OverTime(nn.Module):
    """Apply a per-frame layer (a convolution, a pooling) to every step of ``(T, B, ...)``.

    The steps are folded into the batch for one call of ``inner``; one step of the stream is
    ``inner`` on ``(B, ...)``. Shapes: ``(T, B, *in) -> (T, B, *out)``.
    """

    polystep_traits = Traits(batchwise=True)

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x.flatten(0, 1)).unflatten(0, x.shape[:2])

    def stream_step(self, x: torch.Tensor, state: None) -> tuple[torch.Tensor, None]:
        return self.inner(x), None


class SpikingMLP(nn.Sequential):
    """``Linear → LIF → … → Linear → LIF → SpikeCount`` with direct-current input.

    The first ``Linear`` projects the static input once; its ``LIF`` integrates that current for
    ``num_steps`` steps. Later ``Linear`` s act on whole spike trains ``(T, B, F)`` at once. Logits
    are output spike counts (integers ``0..T`` in the hard model).

    Args:
        sizes: layer widths, e.g. ``(784, 128, 10)``.
        num_steps: simulation length ``T``.
        beta, threshold, slope: as in :class:`LIF`.
        surrogate: smooth twin (sigmoid spikes) for Adam.

    Shapes: ``(B, sizes[0]) -> (B, sizes[-1])``.
    """

    def __init__(
        self,
        sizes: tuple[int, ...] | list[int] = (784, 128, 10),
        *,
        num_steps: int = 15,
        beta: float = 0.95,
        threshold: float = 1.0,
        surrogate: bool = False,
        slope: float = 10.0,
    ) -> None:
        sizes = tuple(sizes)
        if len(sizes) < 2:
            raise ValueError(f"sizes must list at least input and output widths, got {sizes!r}")
        for width in sizes:
            check_positive_int("sizes", width)
        check_positive_int("num_steps", num_steps)
        layers: list[nn.Module] = []
        for i, (n_in, n_out) in enumerate(itertools.pairwise(sizes)):
            layers.append(nn.Linear(n_in, n_out))
            layers.append(
                LIF(
                    beta,
                    threshold,
                    num_steps=num_steps if i == 0 else None,
                    surrogate=surrogate,
                    slope=slope,
                )
            )
        layers.append(SpikeCount())
        super().__init__(*layers)
        self.num_steps = num_steps
