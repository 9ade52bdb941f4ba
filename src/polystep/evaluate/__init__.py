"""Candidate evaluators behind one interface: ``losses = evaluator.evaluate(candidates, batch)``.

``reference`` (oracle, one at a time), ``vmap`` (batched, reported fallback to reference) and
``layered`` (sequential models: shared prefix, sparse perturbed layer). :func:`make_evaluator`
picks one; ``"auto"`` prefers layered, then vmap.
"""

from __future__ import annotations

import warnings

from torch import nn

from polystep.evaluate.base import Evaluator, LossFn, evaluation_mode, per_candidate_loss
from polystep.evaluate.batched import VmapEvaluator
from polystep.evaluate.layered import FallbackError, LayeredEvaluator, NotLayerable
from polystep.evaluate.reference import ReferenceEvaluator
from polystep.subspace.base import Subspace

EVALUATORS = {"reference": ReferenceEvaluator, "vmap": VmapEvaluator, "layered": LayeredEvaluator}


def make_evaluator(
    kind: str,
    model: nn.Module,
    loss_fn: LossFn,
    subspace: Subspace,
    *,
    chunk_size: int | None = None,
    strict: bool = False,
) -> Evaluator:
    """Evaluator ``kind`` (``"auto"``, ``"layered"``, ``"vmap"`` or ``"reference"``).

    ``strict``: the layered path must serve the model, and any slower path it would take is an
    error (:class:`FallbackError`), not a warning.
    """
    if kind == "auto":
        why = LayeredEvaluator.supports(model, subspace)
        if why is not None:
            if strict:
                raise NotLayerable(why)
            warnings.warn(f"evaluator 'auto' uses vmap, not the layered path: {why}", stacklevel=2)
        kind = "layered" if why is None else "vmap"
    if kind not in EVALUATORS:
        raise ValueError(f"evaluator must be 'auto' or one of {sorted(EVALUATORS)}, got {kind!r}")
    if kind == "layered":
        return LayeredEvaluator(model, loss_fn, subspace, chunk_size=chunk_size, strict=strict)
    return EVALUATORS[kind](model, loss_fn, subspace, chunk_size=chunk_size)


__all__ = [
    "EVALUATORS",
    "Evaluator",
    "FallbackError",
    "LayeredEvaluator",
    "NotLayerable",
    "ReferenceEvaluator",
    "VmapEvaluator",
    "evaluation_mode",
    "make_evaluator",
    "per_candidate_loss",
]
