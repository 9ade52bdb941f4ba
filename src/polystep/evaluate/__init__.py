"""Candidate evaluators behind one interface: ``losses = evaluator.evaluate(candidates, batch)``.

``reference`` (oracle, one at a time), ``vmap`` (batched, reported fallback to reference),
``layered`` (sequential models: shared prefix, sparse perturbed layer), ``captured`` (models
as users write them, through a ``torch.fx`` graph) and ``streamed`` (spiking nets one time step
at a time, in memory-bounded chunks; chosen explicitly, never by ``"auto"``).
:func:`make_evaluator` picks one; ``"auto"`` prefers layered, then captured, then vmap.
"""

from __future__ import annotations

import warnings

from torch import nn

from polystep.evaluate.base import Evaluator, LossFn, evaluation_mode, per_candidate_loss
from polystep.evaluate.batched import VmapEvaluator
from polystep.evaluate.captured import CapturedEvaluator
from polystep.evaluate.graph import NotCapturable
from polystep.evaluate.layered import FallbackError, LayeredEvaluator, NotLayerable
from polystep.evaluate.reference import ReferenceEvaluator
from polystep.evaluate.stream import NotStreamable, stream_forward
from polystep.evaluate.streamed import StreamedEvaluator
from polystep.subspace.base import Subspace

EVALUATORS = {
    "reference": ReferenceEvaluator,
    "vmap": VmapEvaluator,
    "layered": LayeredEvaluator,
    "captured": CapturedEvaluator,
    "streamed": StreamedEvaluator,
}


def make_evaluator(
    kind: str,
    model: nn.Module,
    loss_fn: LossFn,
    subspace: Subspace,
    *,
    chunk_size: int | None = None,
    strict: bool = False,
) -> Evaluator:
    """Evaluator ``kind`` (``"auto"``, ``"layered"``, ``"captured"``, ``"vmap"``,
    ``"reference"`` or ``"streamed"``).

    ``"auto"`` takes the layered path where the model is a layer chain, else the captured path
    where its forward can be captured (it warns once if some parameters still go to vmap), else
    vmap; a model that does not get the layered path is told, once, which path it got and why.
    ``strict``: the fast path must serve the model, and any slower path it would take is an
    error (:class:`FallbackError`, or :class:`NotLayerable` from ``"auto"``), not a warning.
    """
    if kind == "auto":
        why = LayeredEvaluator.supports(model, subspace)
        if why is None:
            kind = "layered"
        else:
            try:
                ev = CapturedEvaluator(
                    model, loss_fn, subspace, chunk_size=chunk_size, strict=strict
                )
            except (NotCapturable, FallbackError) as exc:
                if strict:
                    raise NotLayerable(
                        f"not a layer chain ({why}); not capturable ({exc})"
                    ) from exc
                warnings.warn(
                    f"evaluator 'auto' uses vmap: not a layer chain ({why}); "
                    f"not capturable ({exc})",
                    stacklevel=2,
                )
                kind = "vmap"
            else:
                warnings.warn(
                    "evaluator 'auto' uses the captured (torch.fx) path: "
                    f"not a layer chain ({why}); {ev.path}",
                    stacklevel=2,
                )
                return ev
    if kind not in EVALUATORS:
        raise ValueError(f"evaluator must be 'auto' or one of {sorted(EVALUATORS)}, got {kind!r}")
    if kind in ("layered", "captured"):
        return EVALUATORS[kind](model, loss_fn, subspace, chunk_size=chunk_size, strict=strict)
    return EVALUATORS[kind](model, loss_fn, subspace, chunk_size=chunk_size)


__all__ = [
    "EVALUATORS",
    "CapturedEvaluator",
    "Evaluator",
    "FallbackError",
    "LayeredEvaluator",
    "NotCapturable",
    "NotLayerable",
    "NotStreamable",
    "ReferenceEvaluator",
    "StreamedEvaluator",
    "VmapEvaluator",
    "evaluation_mode",
    "make_evaluator",
    "per_candidate_loss",
    "stream_forward",
]
