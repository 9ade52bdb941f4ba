"""The evaluator interface and helpers shared by every implementation.

``losses = evaluator.evaluate(candidates, batch)``: ``candidates`` are
:class:`~polystep.blocks.BlockCandidates` in the coordinates of ``evaluator.subspace``, read as
offsets from the INCUMBENT, which is the model's current parameters. By linearity of every
subspace, candidate ``n`` has parameters ``theta + M(e_n)`` where ``e_n`` is zero except for its
block. ``batch`` is ``(inputs, targets)`` (``targets`` may be None: ``loss_fn(outputs)``).
``losses`` is ``(N,)`` float (NaN/Inf allowed; the step penalises them). The model runs in eval
mode and its buffers are restored afterwards.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterator
from dataclasses import KW_ONLY, dataclass
from typing import Any

import torch
from torch import nn

from polystep.blocks import BlockCandidates
from polystep.subspace.base import Subspace
from polystep.subspace.segments import Segment
from polystep.validation import check_positive_int

LossFn = Callable[..., torch.Tensor]
Batch = tuple[Any, Any]
DEFAULT_BUDGET = 2**24  # elements per chunk (64 MiB of float32)


@dataclass(eq=False, repr=False)
class Evaluator:
    """Base class: ``Evaluator(model, loss_fn, subspace, *, chunk_size=None)``. Subclasses
    implement :meth:`evaluate`; their own options are keyword-only dataclass fields
    (``@dataclass(eq=False, repr=False, kw_only=True)``), checked and set up in a
    ``__post_init__`` that calls ``super().__post_init__()`` first."""

    name = "base"

    model: nn.Module
    loss_fn: LossFn
    subspace: Subspace
    _: KW_ONLY
    chunk_size: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.model, nn.Module):
            raise ValueError(f"model must be a torch.nn.Module, got {type(self.model).__name__}")
        if not callable(self.loss_fn):
            raise ValueError("loss_fn must be callable: loss_fn(outputs, targets) -> scalar")
        check_positive_int("chunk_size", self.chunk_size, allow_none=True)

    def evaluate(self, candidates: BlockCandidates, batch: Batch) -> torch.Tensor:
        raise NotImplementedError  # pragma: no cover

    __call__ = evaluate

    @torch.no_grad()
    def loss(self, batch: Batch) -> torch.Tensor:
        """Loss of the incumbent (the model as it is) on ``batch``: a 0-d tensor."""
        with evaluation_mode(self.model):
            inputs, targets = batch
            return compute_loss(self.loss_fn, self.model(inputs), targets).detach()


def nested_layers(model: nn.Module, error: type[Exception]) -> list[nn.Module]:
    """The layers of a (nested) ``nn.Sequential``, in order; ``error`` (naming the model's class)
    for any other model."""
    if not isinstance(model, nn.Sequential):
        raise error(f"model is a {type(model).__name__}, not an nn.Sequential")
    layers: list[nn.Module] = []
    for m in model:
        layers.extend(nested_layers(m, error) if isinstance(m, nn.Sequential) else [m])
    return layers


def compute_loss(loss_fn: LossFn, outputs: torch.Tensor, targets: Any) -> torch.Tensor:
    return loss_fn(outputs) if targets is None else loss_fn(outputs, targets)


def _plain_cross_entropy(loss_fn: LossFn, outputs: torch.Tensor, targets: Any) -> bool:
    return (
        type(loss_fn) is nn.CrossEntropyLoss
        and loss_fn.weight is None
        and loss_fn.reduction == "mean"
        and loss_fn.label_smoothing == 0.0
        and outputs.ndim == 3
        and isinstance(targets, torch.Tensor)
        and targets.ndim == 1
        and not targets.is_floating_point()
        and bool((targets >= 0).all())
    )


def per_candidate_loss(loss_fn: LossFn, outputs: torch.Tensor, targets: Any) -> torch.Tensor:
    """``loss_fn`` on each ``outputs[n]`` of ``(n, B, ...)`` against shared targets: ``(n,)``."""
    if _plain_cross_entropy(loss_fn, outputs, targets):  # the common case, without vmap
        picked = outputs.gather(2, targets.view(1, -1, 1).expand(outputs.shape[0], -1, 1))
        return (torch.logsumexp(outputs, dim=2) - picked.squeeze(2)).mean(dim=1)
    try:
        if targets is None:
            return torch.vmap(loss_fn)(outputs)
        return torch.vmap(loss_fn, in_dims=(0, None))(outputs, targets)
    except RuntimeError as exc:
        reason = vmap_incompatibility(exc)
        if reason is None:
            raise  # the loss itself failed: the user must see it
        warnings.warn(
            f"loss_fn cannot run under torch.vmap, scoring candidates one at a time: {reason}",
            RuntimeWarning,
            stacklevel=2,
        )
        return torch.stack([compute_loss(loss_fn, o, targets) for o in outputs])


# Words in the RuntimeErrors torch raises when code cannot run batched under vmap (data-dependent
# control flow, .item(), dynamic shapes, random ops, buffers updated in place, .numpy()).
VMAP_MARKERS = ("vmap", "batched tensor", "batching rule", "doesn't have storage")


def vmap_incompatibility(exc: BaseException) -> str | None:
    """Why ``torch.vmap`` cannot run the code that raised ``exc``, or None for any other error.

    Only these errors justify running candidates one at a time; every other exception (a bug in
    the model or the loss, a shape mismatch) is the user's and must propagate unchanged.
    """
    if not isinstance(exc, RuntimeError):
        return None
    text = str(exc)
    if not any(marker in text.lower() for marker in VMAP_MARKERS):
        return None
    return f"{type(exc).__name__}: {text}".splitlines()[0][:300]


@contextlib.contextmanager
def evaluation_mode(model: nn.Module) -> Iterator[None]:
    """Eval mode and no grad inside; training flags and buffer values restored on exit."""
    flags = {m: m.training for m in model.modules()}
    buffers = {k: b.clone() for k, b in model.named_buffers()}
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        for m, flag in flags.items():
            m.training = flag
        live = dict(model.named_buffers())
        with torch.no_grad():
            for k, b in buffers.items():
                if k in live and live[k].shape == b.shape:
                    live[k].copy_(b)


def segment_groups(
    subspace: Subspace, candidates: BlockCandidates
) -> list[tuple[int, torch.Tensor]]:
    """``(segment index, candidate rows)`` for every segment some candidate perturbs."""
    seg = subspace.block_segments().to(candidates.block.device)[candidates.block]
    return [(int(s), torch.nonzero(seg == s).flatten()) for s in torch.unique(seg)]


def local_coords(
    subspace: Subspace, seg_index: int, candidates: BlockCandidates, rows: torch.Tensor
) -> torch.Tensor:
    """Dense coordinates of candidates ``rows`` within segment ``seg_index``: ``(n, size)``."""
    seg = subspace.segments[seg_index]
    p = subspace.block_dim
    cols = candidates.block[rows] * p - seg.start
    cols = cols[:, None] + torch.arange(p, device=cols.device)
    out = torch.zeros(len(rows), seg.size, dtype=subspace.dtype, device=subspace.device)
    return out.scatter_(1, cols.to(out.device), candidates.offset[rows].to(out))


def block_columns(
    subspace: Subspace,
    seg: Segment,
    candidates: BlockCandidates,
    rows: torch.Tensor,
    like: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Local coordinate index ``(n, p)`` in segment ``seg`` and offset values ``(n, p)`` (dtype
    and device of ``like``) of candidates ``rows``, for the subspace's blocks of ``p``."""
    p = subspace.block_dim
    cols = (candidates.block[rows] * p - seg.start)[:, None]
    cols = (cols + torch.arange(p, device=cols.device)).to(like.device)
    return cols, candidates.offset[rows].to(like)


def chunks(rows: torch.Tensor, size: int) -> Iterator[torch.Tensor]:
    for start in range(0, len(rows), max(1, size)):
        yield rows[start : start + size]


def warn_fallback(name: str, reason: str) -> None:
    warnings.warn(
        f"{name} evaluator fell back to the reference path (one candidate at a time): {reason}",
        RuntimeWarning,
        stacklevel=3,
    )
