"""Unit-sparse propagation: a candidate that changes only a few output units of a linear layer.

A direct or ``A``-factor block of a linear-like layer changes at most ``p`` output units ``S``.
Through unit-wise layers (activations, LIF neurons, spike counts: each feature independent)
only those units differ from the incumbent, so the next linear layer ``j`` gets the rank-``p``
update ``y_j + (a_S' - a_S) f(W_j)[:, S]ᵀ`` and nothing of width ``d`` is recomputed before it.
"""

from __future__ import annotations

import torch
from torch import nn

from polystep.evaluate.traits import traits_of


def dedupe_slots(units: torch.Tensor, contrib: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Merge slots that hit the same unit, then keep as few slots as the chunk needs.

    ``(n, p), (n, M, p) -> (n, k), (n, M, k)`` with ``k`` the largest number of distinct units of
    a candidate. Each unit's whole change sits in one slot; leftover slots repeat a unit with
    change 0, so their activation equals the incumbent's and their difference vanishes.
    """
    p = units.shape[1]
    if p == 1:
        return units, contrib
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


def linear_weight(layer: nn.Module) -> torch.Tensor:
    """The weight a linear-like layer's forward uses, ``f(W)`` ``(d_out, d_in)``."""
    return traits_of(layer).weight_map(layer.weight.detach())


def unit_chain(
    layers: list[nn.Module],
    acts: list[torch.Tensor],
    dims: list[int],
    i: int,
    j: int,
    units: torch.Tensor,
    change: torch.Tensor,
) -> torch.Tensor:
    """Units ``units (n, p)`` of layer ``i``'s output moved by ``change (n, M, p)`` and run through
    the unit-wise layers ``i + 1 .. j - 1``: the input of layer ``j`` on those units,
    ``(n, *acts[j].shape[:-1], p)``."""
    n, p = units.shape
    y = acts[i + 1]
    base = y.reshape(-1, y.shape[-1]).index_select(1, units.flatten())  # (M, n p)
    h = (base.unflatten(1, units.shape).permute(1, 0, 2) + change).reshape(n, *y.shape[:-1], p)
    h = h.movedim(0, dims[i + 1]).flatten(dims[i + 1], dims[i + 1] + 1)
    for layer in layers[i + 1 : j]:
        h = layer(h)
    return h.unflatten(dims[j], (n, -1)).movedim(dims[j], 0)


def propagate_units(
    layers: list[nn.Module],
    acts: list[torch.Tensor],
    dims: list[int],
    i: int,
    j: int,
    units: torch.Tensor,
    change: torch.Tensor,
) -> torch.Tensor:
    """Output of linear layer ``j`` for candidates changing units ``units`` of layer ``i``.

    ``acts[k]`` is the input of layer ``k`` (``acts[k + 1]`` its output), ``dims[k]`` its batch
    dim; ``units (n, p)``, ``change (n, M, p)`` is the output change of layer ``i`` on
    ``M = acts[i + 1].numel() // d`` rows. Returns ``(n, *acts[j + 1].shape)``.
    """
    units, change = dedupe_slots(units, change)
    n, p = units.shape
    h = unit_chain(layers, acts, dims, i, j, units, change)
    a = acts[j]
    old = a.reshape(-1, a.shape[-1])[:, units].permute(1, 0, 2)
    diff = h.reshape(n, -1, p) - old
    weight = linear_weight(layers[j])[:, units].permute(1, 2, 0)  # (n, p, d_out)
    out = acts[j + 1].reshape(1, -1, weight.shape[-1]) + torch.bmm(diff, weight)
    return out.reshape(n, *acts[j + 1].shape)
