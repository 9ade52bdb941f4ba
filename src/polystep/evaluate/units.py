"""Unit-sparse propagation: a candidate that changes only a few output units of a Linear layer.

A direct or ``A``-factor block of a Linear layer changes at most ``p`` output units ``S``. Through
unit-wise layers (ReLU-like activations, LIF neurons, spike counts: each feature independent)
only those units differ from the incumbent, so the next Linear layer ``j`` gets the rank-``p``
update ``y_j + (a_S' - a_S) W_j[:, S]ᵀ`` and nothing of width ``d`` is recomputed before it.
Also a fused, allocation-free hard LIF with the exact arithmetic of :class:`polystep.nn.LIF`.
"""

from __future__ import annotations

import torch
from torch import nn

UNITWISE = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Mish, nn.Sigmoid, nn.Tanh,
    nn.Hardtanh, nn.Hardsigmoid, nn.Hardswish, nn.Softplus, nn.Softsign, nn.Identity, nn.Dropout,
)  # fmt: skip


def _lif_type() -> type | None:
    try:
        from polystep.nn import LIF
    except ImportError:  # pragma: no cover
        return None
    return LIF


def is_unitwise(module: nn.Module) -> bool:
    """True when every feature (last dim) of the output depends only on the same input feature."""
    if getattr(module, "polystep_unitwise", False) or type(module) in UNITWISE:
        return True
    try:
        from polystep.nn import LIF, SpikeCount, Staircase
    except ImportError:  # pragma: no cover
        return False
    return type(module) in (LIF, SpikeCount, Staircase)


def run_layer(layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``layer(x)``, with a fused path for the hard LIF (bit-identical results)."""
    lif = _lif_type()
    if lif is not None and type(layer) is lif and not layer.surrogate:
        return fused_lif(x, layer.beta, layer.threshold, layer.num_steps)
    return layer(x)


def fused_lif(
    current: torch.Tensor, beta: float, threshold: float, num_steps: int | None
) -> torch.Tensor:
    """Hard LIF ``v <- beta v + I; s = 1[v >= thr]; v <- 0 where s``: ``(T, *batch, F)`` spikes.

    ``current`` is static ``(*batch, F)`` when ``num_steps`` is given, else ``(T, *batch, F)``.
    """
    static = num_steps is not None
    steps = num_steps if static else current.shape[0]
    shape = current.shape if static else current.shape[1:]
    out = current.new_empty(steps, *shape)
    v = torch.zeros(shape, dtype=current.dtype, device=current.device)
    for t in range(steps):
        v.mul_(beta).add_(current if static else current[t])
        spikes = out[t]
        torch.ge(v, threshold, out=spikes)
        v.addcmul_(v, spikes, value=-1.0)  # v - v*s: exactly 0 where s = 1, v where s = 0
    return out


def dedupe_slots(units: torch.Tensor, contrib: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Merge slots that hit the same unit, then keep as few slots as the chunk needs.

    ``(n, p), (n, M, p) -> (n, k), (n, M, k)`` with ``k`` the largest number of distinct units of
    a candidate. Each unit's whole change sits in one slot; leftover slots repeat a unit with
    change 0, so their activation equals the incumbent's and their difference vanishes.
    """
    p = units.shape[1]
    slots = torch.arange(p, device=units.device)
    same = units[:, :, None] == units[:, None, :]  # (n, p, p)
    first = torch.where(same, slots, p).min(dim=2).values  # (n, p)
    merged = torch.zeros_like(contrib).scatter_add_(
        2, first[:, None, :].expand_as(contrib), contrib
    )
    is_first = first == slots
    k = int(is_first.sum(dim=1).max())
    if k == p:
        return units, merged
    order = torch.argsort((~is_first).to(torch.int8), dim=1, stable=True)[:, :k]  # firsts lead
    keep = units.gather(1, order)
    return keep, merged.gather(2, order[:, None, :].expand(-1, merged.shape[1], -1))


def propagate_units(
    layers: list[nn.Module],
    acts: list[torch.Tensor],
    dims: list[int],
    i: int,
    j: int,
    units: torch.Tensor,
    change: torch.Tensor,
) -> torch.Tensor:
    """Output of Linear layer ``j`` for candidates changing units ``units`` of layer ``i``.

    ``acts[k]`` is the input of layer ``k`` (``acts[k + 1]`` its output), ``dims[k]`` its batch
    dim; ``units (n, p)``, ``change (n, M, p)`` is the pre-activation change of layer ``i`` on
    ``M = acts[i + 1].numel() // d`` rows. Returns ``(n, *acts[j + 1].shape)``.
    """
    units, change = dedupe_slots(units, change)
    n, p = units.shape
    y = acts[i + 1]
    base = y.reshape(-1, y.shape[-1])[:, units].permute(1, 0, 2)  # (n, M, p)
    h = (base + change).reshape(n, *y.shape[:-1], p)
    h = h.movedim(0, dims[i + 1]).flatten(dims[i + 1], dims[i + 1] + 1)
    for layer in layers[i + 1 : j]:
        h = run_layer(layer, h)
    h = h.unflatten(dims[j], (n, -1)).movedim(dims[j], 0)  # (n, *acts[j].shape[:-1], p)
    a = acts[j]
    old = a.reshape(-1, a.shape[-1])[:, units].permute(1, 0, 2)
    diff = h.reshape(n, -1, p) - old
    weight = layers[j].weight.detach()[:, units].permute(1, 2, 0)  # (n, p, d_out)
    out = acts[j + 1].reshape(1, -1, weight.shape[-1]) + torch.bmm(diff, weight)
    return out.reshape(n, *acts[j + 1].shape)
