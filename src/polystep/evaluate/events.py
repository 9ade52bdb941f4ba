"""Event-driven suffix: only the samples a candidate actually changes are run above it.

A candidate that moves a few units ``S`` of layer ``i`` changes those units' activations through
the unit-wise layers above ``i`` (ReLU, staircase, LIF neurons, ...). Hard-threshold units change
at few ``(t, sample)`` positions; a sample where none of them changed has exactly the incumbent's
activations from there on, hence the incumbent's per-sample loss. With a loss that is a mean of
per-sample losses (plain cross-entropy) the candidate's loss is therefore

    loss_n = (sum_b l_b + sum_{b changed by n} (l'_nb - l_b)) / B

and only the changed ``(candidate, sample)`` pairs are pushed through the rest of the network:
the next linear layer ``j`` gets the rank-``k`` update ``a_j[b] + (a'_S - a_S) W_j[:, S]ᵀ`` on
those pairs only, or, when no Linear follows (the perturbed layer is the last one), the
network's output gets the change of its columns ``S`` directly.
"""

from __future__ import annotations

import torch
from torch import nn

from polystep.evaluate.units import dedupe_slots, linear_weight, unit_chain


def per_sample_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """``(m, C), (m,) -> (m,)``: ``logsumexp(logits) - logits[target]`` of each row."""
    picked = logits.gather(1, targets[:, None]).squeeze(1)
    return torch.logsumexp(logits, dim=1) - picked


def _gather_units(a: torch.Tensor, dim: int, units: torch.Tensor) -> torch.Tensor:
    """Columns ``units (n, k)`` of ``a (*shape, F)`` with batch dim ``dim``: ``(n, B, R, k)``."""
    b = a.movedim(dim, 0)
    flat = b.reshape(b.shape[0], -1, b.shape[-1])  # (B, R, F)
    picked = flat.index_select(2, units.flatten()).unflatten(2, units.shape)  # (B, R, n, k)
    return picked.permute(2, 0, 1, 3)


def unit_trains(
    layers: list[nn.Module],
    acts: list[torch.Tensor],
    dims: list[int],
    i: int,
    j: int,
    units: torch.Tensor,
    change: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """New and incumbent activations of units ``units (n, k)`` at the input of layer ``j``.

    ``change (n, M, k)`` is the pre-activation change of layer ``i`` on its ``M`` output rows.
    Returns two ``(n, B, R, k)`` tensors (batch first, the other non-feature dims flattened).
    """
    n, k = units.shape
    h = unit_chain(layers, acts, dims, i, j, units, change)  # (n, *acts[j].shape[:-1], k)
    new = h.movedim(1 + dims[j], 1)
    new = new.reshape(n, new.shape[1], -1, k)
    return new, _gather_units(acts[j], dims[j], units)


def rank_update(rows: torch.Tensor, d: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """``rows + Σ_s d[..., s] w[..., s, :]`` for ``rows (..., o)``, ``d (..., k)``,
    ``w (..., k, o)`` (broadcasting) with small ``k``: ``k`` broadcast multiply-adds beat many
    tiny matmuls."""
    out = torch.addcmul(rows, d[..., 0:1], w[..., 0, :])
    for s in range(1, d.shape[-1]):
        out.addcmul_(d[..., s : s + 1], w[..., s, :])
    return out


DENSE_ABOVE = 0.5  # re-run every sample when more than this fraction of pairs changed


def sparse_unit_losses(
    layers: list[nn.Module],
    acts: list[torch.Tensor],
    dims: list[int],
    i: int,
    j: int,
    units: torch.Tensor,
    change: torch.Tensor,
    targets: torch.Tensor,
    base_losses: torch.Tensor,
) -> tuple[torch.Tensor, int]:
    """Cross-entropy of each candidate changing ``units`` of layer ``i``: ``(n,)`` float64.

    ``j`` is the Linear layer reached through unit-wise layers, or ``len(layers)`` when the
    unit-wise chain runs to the output ``(B, C)``. ``base_losses (B,)`` are the incumbent's
    per-sample losses. Also returns how many ``(candidate, sample)`` pairs were re-run.
    """
    units, change = dedupe_slots(units, change)
    n, k = units.shape
    new, old = unit_trains(layers, acts, dims, i, j, units, change)
    batch = new.shape[1]
    diff = (new - old).reshape(n, batch, -1, k)  # (n, B, R, k)
    changed = diff.flatten(2).ne(0).any(dim=2)  # (n, B)
    if dense_pairs(int(changed.sum()), n, batch):  # gathering pairs would cost more
        out = _outputs(layers, acts, dims, j, units[:, None], diff, n, batch)
        return every_sample_losses(out, targets, n), n * batch
    pair = torch.nonzero(changed.flatten()).flatten()  # flat (candidate, sample) index
    c, b = pair // batch, pair % batch
    d = diff.reshape(n * batch, -1, k).index_select(0, pair)  # (m, R, k)
    out = _outputs(layers, acts, dims, j, units.index_select(0, c), d, len(pair), b)
    return pair_losses(out, pair, n, targets, base_losses), len(b)


def dense_pairs(changed: int, n: int, batch: int) -> bool:
    """Whether ``changed`` of ``n·batch`` pairs is so many that every sample is re-run."""
    return changed / (n * batch) > DENSE_ABOVE


def every_sample_losses(out: torch.Tensor, targets: torch.Tensor, n: int) -> torch.Tensor:
    """Mean cross-entropy of each of ``n`` candidates from all their outputs ``(n·B, C)``."""
    return per_sample_cross_entropy(out, targets.repeat(n)).view(n, -1).double().mean(dim=1)


def pair_losses(
    out: torch.Tensor, pair: torch.Tensor, n: int, targets: torch.Tensor, base: torch.Tensor
) -> torch.Tensor:
    """Mean cross-entropy of each of ``n`` candidates from the outputs ``out (m, C)`` of the
    pairs ``pair (m,)`` it changed (flat ``candidate·B + sample``) and the incumbent's
    per-sample losses ``base (B,)``: ``(n,)`` float64."""
    batch = base.shape[0]
    c, b = pair // batch, pair % batch
    moved = per_sample_cross_entropy(out, targets.index_select(0, b)) - base[b]
    total = torch.zeros(n, dtype=torch.float64, device=out.device)
    total.index_add_(0, c, moved.double())
    return (total + base.double().sum()) / batch


def _outputs(
    layers: list[nn.Module],
    acts: list[torch.Tensor],
    dims: list[int],
    j: int,
    units: torch.Tensor,
    d: torch.Tensor,
    m: int,
    b: torch.Tensor | int,
) -> torch.Tensor:
    """Network outputs ``(m·|b|, C)`` of samples ``b`` (an index ``(m,)``, or all ``B`` of them
    for each of ``m`` candidates) whose units ``units (m, [1,] k)`` moved by ``d`` at layer
    ``j``'s input (``(m, R, k)``, or ``(m, B, R, k)`` for all samples)."""
    every = isinstance(b, int)
    if j == len(layers):  # the chain ends at the output: its columns S change directly
        base = acts[-1] if every else acts[-1].index_select(0, b)
        out = base.expand(m, *acts[-1].shape).clone() if every else base
        idx = units.expand(m, b, -1) if every else units
        out.scatter_add_(-1, idx, d[..., 0, :])
        return out.reshape(-1, out.shape[-1])
    weight = linear_weight(layers[j]).T[units.reshape(len(units), units.shape[-1])]  # (m, k, o)
    a, bd = acts[j + 1], dims[j + 1]
    if every:
        moved = a.movedim(bd, 0)
        rows = moved.reshape(moved.shape[0], -1, moved.shape[-1])  # (B, R, d_out)
        h = rank_update(rows, d, weight[:, None, None])  # (m, B, R, d_out)
        h = h.reshape(-1, *moved.shape[1:]).movedim(0, bd)
    else:  # in the layer's own layout (time-major spike trains stay contiguous per step)
        other = [size for q, size in enumerate(a.shape[:-1]) if q != bd]
        k = d.shape[-1]
        d_native = d.reshape(m, *other, k).movedim(0, bd)
        w_native = weight.reshape(m, *[1] * (a.ndim - 2 - bd), k, weight.shape[-1])
        h = rank_update(a.index_select(bd, b), d_native, w_native)
    for layer in layers[j + 1 :]:
        h = layer(h)
    return h
