"""Streamed evaluator: candidates of a spiking net scored one time step at a time, in chunks
sized by a memory bound. The evaluator's memory is flat in ``T`` and in the number of
candidates (the step's own buffers of every candidate, drawn by the optimizer, are not its own).

The model must be streamable (:mod:`polystep.evaluate.stream`). Candidates are grouped by the
parameter they move (layer ``i``) and cut into chunks; each chunk runs its own time loop next
to a fresh run of the incumbent (:class:`~polystep.evaluate.stream.BaseStream`), so nothing of
one chunk outlives it and nothing of shape ``(T, ...)`` exists. Within a chunk:

* **unit path**: when layer ``i`` is a plain linear layer, the block moves a few of its output
  units, and unit-wise layers lead from it to the next linear layer ``j`` inside the time loop,
  only those units' neurons are simulated per candidate; at layer ``j`` the change of its input
  on them gives its output as a rank-``k`` update of the incumbent's, and the layers after ``j``
  run on the chunk's candidates stacked in the batch;
* **dense path** (anything else): layer ``i``'s output for every candidate (the segment's
  sparse delta for a plain linear layer, else ``vmap`` of that layer alone), then every later
  layer on the candidates stacked in the batch.

``memory_bytes`` bounds a chunk's working set: its neurons' state and one step's activations,
estimated from the shapes of one step. It is a time-for-memory trade: every chunk re-runs the
incumbent over all ``T`` steps. Pick this evaluator explicitly (``evaluator="streamed"``) when
``T`` is long and memory is what limits you; ``"layered"`` is faster otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.func import functional_call

from polystep.blocks import BlockCandidates
from polystep.evaluate.base import (
    Batch,
    Evaluator,
    block_columns,
    chunks,
    compute_loss,
    evaluation_mode,
    local_coords,
    per_candidate_loss,
    segment_groups,
)
from polystep.evaluate.stream import (
    BaseStream,
    StreamPlan,
    advance,
    finish,
    step_layer,
    stream_forward,
)
from polystep.evaluate.traits import is_unitwise, traits_of
from polystep.evaluate.units import dedupe_slots, linear_weight
from polystep.subspace.segments import Segment
from polystep.validation import check_positive_int

DEFAULT_MEMORY_BYTES = 2**20  # working set of one chunk of candidates
MASK_ROWS = 4096  # candidates sorted into unit / dense path at a time


class _OneStep(nn.Module):
    """``layer`` as a module whose forward is one step (or the static forward)."""

    def __init__(self, layer: nn.Module, per_step: bool) -> None:
        super().__init__()
        self.layer = layer
        self.per_step = per_step

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return step_layer(self.layer, x, None)[0] if self.per_step else self.layer(x)


@dataclass(eq=False, repr=False, kw_only=True)
class StreamedEvaluator(Evaluator):
    """``chunk_size``: candidates per chunk (None: as many as ``memory_bytes`` allows)."""

    name = "streamed"

    memory_bytes: int = DEFAULT_MEMORY_BYTES

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive_int("memory_bytes", self.memory_bytes)
        self.plan = StreamPlan.of(self.model)
        self.layers = self.plan.layers
        canon = {id(p): k for k, p in self.subspace.layout.parameters(self.model).items()}
        self.sites: dict[str, tuple[int, str]] = {}
        for i, layer in enumerate(self.layers):
            for local, p in layer.named_parameters():
                if id(p) in canon:
                    self.sites[canon[id(p)]] = (i, local)
        missing = [k for k in self.subspace.layout.names if k not in self.sites]
        if missing:
            raise ValueError(f"parameters outside the layer chain: {missing}")
        self.unit_candidates = 0  # candidates scored by the unit path (the rest: dense)

    @torch.no_grad()
    def loss(self, batch: Batch) -> torch.Tensor:
        with evaluation_mode(self.model):
            inputs, targets = batch
            out = stream_forward(self.model, inputs)
            return compute_loss(self.loss_fn, out, targets).detach()

    def evaluate(self, candidates: BlockCandidates, batch: Batch) -> torch.Tensor:
        inputs, targets = batch
        losses = torch.empty(len(candidates), dtype=torch.float64, device=candidates.block.device)
        with evaluation_mode(self.model):
            widths, rows_of, item = self._step_widths(inputs)
            for s, rows in segment_groups(self.subspace, candidates):
                seg = self.subspace.segments[s]
                i, local = self.sites[seg.name]
                j = self._unit_target(i, local)
                sparse = self._unit_sparse(seg, candidates, rows, j is not None)
                if j is not None:
                    # (M, k) a layer up to j, and layer j's weight columns (k, d_out)
                    moved = self.subspace.block_dim * (
                        rows_of[i] * (j - i) + widths[j] // rows_of[j]
                    )
                    per = 2 * (moved + sum(widths[j:]))
                    for chunk in chunks(rows[sparse], self._size(per * item)):
                        value = self._unit_chunk(i, j, seg, candidates, chunk, inputs, targets)
                        losses[chunk] = value
                        self.unit_candidates += len(chunk)
                per = 2 * sum(widths[i:]) + (
                    0 if traits_of(self.layers[i]).plain_linear else seg.numel
                )
                for chunk in chunks(rows[~sparse], self._size(per * item)):
                    value = self._dense_chunk(i, local, s, seg, candidates, chunk, inputs, targets)
                    losses[chunk] = value
        return losses

    def _unit_sparse(
        self, seg: Segment, candidates: BlockCandidates, rows: torch.Tensor, unit_path: bool
    ) -> torch.Tensor:
        """``(len(rows),)`` bool: which candidates the unit path scores (found in slices: no
        index of every candidate at once, and none outlives this call)."""
        sparse = torch.zeros(len(rows), dtype=torch.bool, device=rows.device)
        if unit_path:
            for part in chunks(torch.arange(len(rows)), MASK_ROWS):
                cols, _ = block_columns(
                    self.subspace, seg, candidates, rows[part], candidates.offset
                )
                sparse[part] = seg.unit_sparse(cols).to(rows.device)
        return sparse

    # -- sizes --------------------------------------------------------------------------------
    def _step_widths(self, inputs: torch.Tensor) -> tuple[list[int], list[int], int]:
        """Elements of every layer's output at one step (static layers: once) for the whole
        batch, its rows (every dim but the last: where a moved unit has a value), and the
        bytes of one element."""
        base = BaseStream(self.plan, inputs)
        base.step(self.plan.stop + 1)
        outs = [base.out(k) for k in range(self.plan.stop + 1)]
        out = finish(self.plan, base.states[self.plan.stop])
        outs += [out] * (len(self.layers) - self.plan.stop - 1)
        rows = [t.numel() // max(1, t.shape[-1]) if t.dim() else 1 for t in outs]
        return [t.numel() for t in outs], rows, out.element_size()

    def _size(self, bytes_per_candidate: int) -> int:
        """Candidates per chunk: ``chunk_size``, else as many as ``memory_bytes`` holds."""
        return self.chunk_size or max(1, self.memory_bytes // max(1, bytes_per_candidate))

    # -- which path ---------------------------------------------------------------------------
    def _unit_target(self, i: int, local: str) -> int | None:
        """The linear layer ``j`` inside the time loop that a plain linear layer ``i``'s units
        reach through unit-wise layers, or None (dense path)."""
        plan = self.plan
        if not traits_of(self.layers[i]).plain_linear or local not in ("weight", "bias"):
            return None
        j = i + 1
        while j < plan.stop and is_unitwise(self.layers[j]):
            j += 1
        if j <= plan.start or j >= plan.stop or not traits_of(self.layers[j]).linear:
            return None
        return j

    # -- the two paths ------------------------------------------------------------------------
    def _unit_chunk(
        self, i: int, j: int, seg: Segment, candidates: BlockCandidates, rows: torch.Tensor,
        inputs: torch.Tensor, targets: Any,
    ) -> torch.Tensor:  # fmt: skip
        """Losses of unit-sparse candidates ``rows`` of layer ``i`` (the unit path)."""
        plan, layers = self.plan, self.layers
        base = BaseStream(plan, inputs)
        n = len(rows)
        static = i < plan.start
        cols, vals = block_columns(self.subspace, seg, candidates, rows, base.current)
        moved = static_h = weight = None
        if static:  # the moved units' current is the same at every step
            moved = self._moved_units(i, seg, base, cols, vals)
            static_h = moved[1]
            for layer in layers[i + 1 : plan.start]:
                static_h = layer(static_h)
        states: list[Any] = [None] * len(layers)
        for _ in range(plan.num_steps):
            base.step(j + 1)
            if static:
                units, h, lo = moved[0], static_h, plan.start  # type: ignore[index]
            else:
                units, h = self._moved_units(i, seg, base, cols, vals)
                lo = i + 1
            for k in range(lo, j):
                h, states[k] = step_layer(layers[k], h, states[k])
            if weight is None:  # (n, k, d_out), the same every step
                weight = linear_weight(layers[j])[:, units].permute(1, 2, 0)
            # no step's output is held into the next step
            advance(layers, j + 1, plan.stop + 1, self._updated(j, base, units, h, weight), states)
        return self._losses(states, n, targets)

    @staticmethod
    def _updated(
        j: int, base: BaseStream, units: torch.Tensor, h: torch.Tensor, weight: torch.Tensor
    ) -> torch.Tensor:
        """Layer ``j``'s output for ``n`` candidates stacked in the batch ``(n * B, ...)``: the
        incumbent's plus the rank-``k`` change of its input on the moved ``units`` ``(n, k)``
        (their new values ``h (n, M, k)``, the weight's columns ``(n, k, d_out)``)."""
        x_j, y_j = base.inp(j), base.out(j)
        old = x_j.reshape(-1, x_j.shape[-1])[:, units].permute(1, 0, 2)
        out = torch.bmm(h - old, weight).add_(y_j.reshape(1, -1, y_j.shape[-1]))
        return out.reshape(len(units) * y_j.shape[0], *y_j.shape[1:])

    def _moved_units(
        self, i: int, seg: Segment, base: BaseStream, cols: torch.Tensor, vals: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Units ``(n, k)`` a block moves in layer ``i``'s output, and their moved values
        ``(n, M, k)`` at the current step (``M`` rows of the output)."""
        x, y = base.inp(i), base.out(i)
        units, change = seg.unit_change(x.reshape(-1, x.shape[-1]), cols, vals, {})
        units, change = dedupe_slots(units, change)
        old = y.reshape(-1, y.shape[-1])[:, units].permute(1, 0, 2)
        return units, old + change

    def _dense_chunk(
        self, i: int, local: str, s: int, seg: Segment, candidates: BlockCandidates,
        rows: torch.Tensor, inputs: torch.Tensor, targets: Any,
    ) -> torch.Tensor:  # fmt: skip
        """Losses of candidates ``rows`` of layer ``i`` with every later layer run on them."""
        plan, layers = self.plan, self.layers
        base = BaseStream(plan, inputs)
        n = len(rows)
        states: list[Any] = [None] * len(layers)
        if i < plan.start:
            h = self._perturbed(i, local, s, seg, candidates, rows, base).flatten(0, 1)
            for layer in layers[i + 1 : plan.start]:
                h = layer(h)
            for _ in range(plan.num_steps):
                advance(layers, plan.start, plan.stop + 1, h, states)
        else:
            for _ in range(plan.num_steps):
                base.step(i + 1)
                h = self._perturbed(i, local, s, seg, candidates, rows, base).flatten(0, 1)
                advance(layers, i + 1, plan.stop + 1, h, states)
                del h  # not held while the next step's is computed
        return self._losses(states, n, targets)

    def _perturbed(
        self, i: int, local: str, s: int, seg: Segment, candidates: BlockCandidates,
        rows: torch.Tensor, base: BaseStream,
    ) -> torch.Tensor:  # fmt: skip
        """Layer ``i``'s output at the current step for candidates ``rows``: ``(n, B, ...)``."""
        layer = self.layers[i]
        x, y = base.inp(i), base.out(i)
        if traits_of(layer).plain_linear and local in ("weight", "bias"):
            cols, vals = block_columns(self.subspace, seg, candidates, rows, y)
            out = y.reshape(1, -1, y.shape[-1]).repeat(len(rows), 1, 1)
            if seg.output_delta(out, x.reshape(-1, x.shape[-1]), cols, vals, {}):
                return out.reshape(len(rows), *y.shape)
        param = layer.get_parameter(local).detach()
        delta = seg.delta(local_coords(self.subspace, s, candidates, rows)).to(param)
        one = _OneStep(layer, per_step=i >= self.plan.start)

        def run(d: torch.Tensor) -> torch.Tensor:
            return functional_call(one, {f"layer.{local}": param + d}, (x,))

        return torch.vmap(run)(delta)

    def _losses(self, states: list[Any], n: int, targets: Any) -> torch.Tensor:
        out = finish(self.plan, states[self.plan.stop])
        return per_candidate_loss(self.loss_fn, out.unflatten(0, (n, -1)), targets).double()
