"""Batched evaluator: ``vmap`` over candidates of ``functional_call``, in memory-sized chunks.

Candidates are grouped by the parameter they perturb; only that parameter is batched, every other
one is shared. When ``vmap`` cannot run the model (in-place buffer updates, data-dependent
control flow, ...) the evaluator warns once, records the reason in :attr:`fallback_reason` and
uses the reference path from then on. Any other error (in the model or the loss) propagates.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.func import functional_call

from polystep.blocks import BlockCandidates
from polystep.evaluate.base import (
    DEFAULT_BUDGET,
    Batch,
    Evaluator,
    chunks,
    compute_loss,
    evaluation_mode,
    local_coords,
    segment_groups,
    vmap_incompatibility,
    warn_fallback,
)
from polystep.evaluate.reference import ReferenceEvaluator


def activation_elements(model: nn.Module, inputs: torch.Tensor) -> int:
    """Sum of the output sizes of every leaf module on ``inputs`` (one plain forward)."""
    total = [0]

    def hook(_m: nn.Module, _i: object, out: object) -> None:
        if isinstance(out, torch.Tensor):
            total[0] += out.numel()

    leaves = [m for m in model.modules() if not list(m.children())]
    handles = [m.register_forward_hook(hook) for m in leaves]
    try:
        with evaluation_mode(model):
            model(inputs)
    finally:
        for h in handles:
            h.remove()
    return max(total[0], 1)


class VmapEvaluator(Evaluator):
    name = "vmap"

    def __post_init__(self) -> None:
        super().__post_init__()
        self.fallback_reason: str | None = None
        self._reference = ReferenceEvaluator(
            self.model, self.loss_fn, self.subspace, chunk_size=self.chunk_size
        )
        self._act: dict[tuple[int, ...], int] = {}

    @property
    def fell_back(self) -> bool:
        return self.fallback_reason is not None

    def _chunk(self, inputs: torch.Tensor, numel: int) -> int:
        if self.chunk_size is not None:
            return self.chunk_size
        key = tuple(inputs.shape) if isinstance(inputs, torch.Tensor) else (0,)
        if key not in self._act:
            self._act[key] = activation_elements(self.model, inputs)
        return max(1, DEFAULT_BUDGET // (self._act[key] + numel))

    def evaluate(self, candidates: BlockCandidates, batch: Batch) -> torch.Tensor:
        if self.fell_back:
            return self._reference.evaluate(candidates, batch)
        try:
            return self._evaluate(candidates, batch)
        except RuntimeError as exc:
            reason = vmap_incompatibility(exc)
            if reason is None:
                exc.add_note(
                    "raised while the vmap evaluator scored candidates; if the model and loss "
                    "run fine one call at a time, pass evaluator='reference'"
                )
                raise
            self.fallback_reason = reason
            warn_fallback(self.name, reason)
            return self._reference.evaluate(candidates, batch)

    def _evaluate(self, candidates: BlockCandidates, batch: Batch) -> torch.Tensor:
        inputs, targets = batch
        base = {k: v.detach() for k, v in self.subspace.layout.parameters(self.model).items()}
        losses = torch.empty(len(candidates), dtype=torch.float64, device=candidates.block.device)
        with evaluation_mode(self.model):
            for s, rows in segment_groups(self.subspace, candidates):
                seg = self.subspace.segments[s]
                name = seg.name

                def one(delta: torch.Tensor, name: str = name) -> torch.Tensor:
                    params = {**base, name: base[name] + delta}
                    out = functional_call(self.model, params, (inputs,))
                    return compute_loss(self.loss_fn, out, targets)

                batched = torch.vmap(one)
                for chunk in chunks(rows, self._chunk(inputs, seg.numel)):
                    delta = seg.delta(local_coords(self.subspace, s, candidates, chunk))
                    losses[chunk] = batched(delta.to(base[name])).detach().double()
        return losses
