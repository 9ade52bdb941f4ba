"""Reference evaluator: one candidate at a time through ``torch.func.functional_call``.

Slow and obviously right: it builds each candidate's full coordinate vector, maps it through
the whole subspace, adds it to every parameter and runs the unmodified model. It is the oracle
that the fast evaluators are tested against, and the fallback for models nothing else handles.
"""

from __future__ import annotations

import torch
from torch.func import functional_call

from polystep.blocks import BlockCandidates
from polystep.evaluate.base import Batch, Evaluator, compute_loss, evaluation_mode


class ReferenceEvaluator(Evaluator):
    name = "reference"

    def evaluate(self, candidates: BlockCandidates, batch: Batch) -> torch.Tensor:
        inputs, targets = batch
        layout = self.subspace.layout
        base = {k: v.detach() for k, v in layout.parameters(self.model).items()}
        coords = candidates.coordinates()
        losses = []
        with evaluation_mode(self.model):
            for n in range(len(candidates)):
                e = torch.zeros(self.subspace.dim, dtype=self.subspace.dtype)
                e = e.to(self.subspace.device)
                e[coords[n].to(e.device)] = candidates.offset[n].to(e)
                delta = layout.unflatten(self.subspace.delta(e))
                params = {k: base[k] + delta[k].to(base[k]) for k in base}
                out = functional_call(self.model, params, (inputs,))
                losses.append(compute_loss(self.loss_fn, out, targets).detach().reshape(()))
        return torch.stack(losses) if losses else torch.zeros(0)
