"""A module's loss on a data stream as a batched vector objective ``f(X (N, D)) -> (N,)``.

This lets the vector baselines (OpenAI-ES, SPSA, CMA-ES) train any ``nn.Module`` in its full
parameter space: row ``n`` of ``X`` is a flat parameter vector (``parameters()`` order), and its
value is the loss of the model with those parameters on the current minibatch. With
``resample=True`` each call first draws the next batch from the stream, so one generation sees one
batch (common random numbers inside a generation). Rows are evaluated with
``torch.func.functional_call`` under ``vmap`` in chunks, or one by one for modules that are not
vmap-safe.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

import torch
from torch import nn
from torch.func import functional_call, vmap

Batch = tuple[torch.Tensor, torch.Tensor]
LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class ModuleObjective:
    """``f(X) -> losses`` over flat parameter vectors of ``model``.

    Args:
        model: the module (its parameters give ``x0`` and the layout; it is not modified).
        loss_fn: ``(output, target) -> scalar`` (e.g. ``nn.CrossEntropyLoss()``).
        batches: iterable of ``(x, y)``, re-iterated forever (a new epoch on exhaustion).
        resample: draw a new batch at every call (False: keep the batch set by :meth:`set_batch`).
        chunk_size: rows per ``vmap`` call.
        vectorize: use ``vmap``; False evaluates rows one at a time.
    """

    def __init__(
        self,
        model: nn.Module,
        loss_fn: LossFn,
        batches: Iterable[Batch] | None = None,
        *,
        resample: bool = True,
        chunk_size: int = 64,
        vectorize: bool = True,
    ) -> None:
        if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
            raise ValueError(f"chunk_size must be a positive int, got {chunk_size!r}")
        if resample and batches is None:
            raise ValueError("batches must be given when resample=True")
        self.model = model
        self.loss_fn = loss_fn
        self.batches = batches
        self.resample = resample
        self.chunk_size = chunk_size
        self.vectorize = vectorize
        self.names = [n for n, _ in model.named_parameters()]
        self.shapes = [p.shape for _, p in model.named_parameters()]
        self.sizes = [p.numel() for _, p in model.named_parameters()]
        self.buffers = dict(model.named_buffers())
        self._iter: Iterator[Batch] | None = None
        self.batch: Batch | None = None
        self.batches_drawn = 0

    @property
    def dim(self) -> int:
        return sum(self.sizes)

    @property
    def x0(self) -> torch.Tensor:
        """Current parameters of ``model`` as one vector ``(D,)``."""
        return torch.cat([p.detach().reshape(-1) for p in self.model.parameters()])

    def unflatten(self, vector: torch.Tensor) -> dict[str, torch.Tensor]:
        """``(D,) -> {name: tensor}`` (views into ``vector``)."""
        parts = torch.split(vector, self.sizes)
        return {n: t.view(s) for n, t, s in zip(self.names, parts, self.shapes)}

    def load(self, vector: torch.Tensor, model: nn.Module | None = None) -> nn.Module:
        """Copy ``vector`` into ``model`` (default: the wrapped one, or e.g. its hard twin)."""
        model = self.model if model is None else model
        with torch.no_grad():
            for p, t in zip(model.parameters(), torch.split(vector, self.sizes)):
                p.copy_(t.view_as(p))
        return model

    def set_batch(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.batch = (x, y)

    def next_batch(self) -> Batch:
        """Draw the next batch of the stream (starting a new epoch when exhausted)."""
        if self.batches is None:
            raise ValueError("no batches stream was given")
        if self._iter is None:
            self._iter = iter(self.batches)
        try:
            batch = next(self._iter)
        except StopIteration:
            self._iter = iter(self.batches)
            batch = next(self._iter, None)
            if batch is None:
                raise ValueError("the batches stream yielded no batch") from None
        self.batch = (batch[0], batch[1])
        self.batches_drawn += 1
        return self.batch

    def _loss(self, vector: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        params = self.unflatten(vector)
        return self.loss_fn(functional_call(self.model, (params, self.buffers), (x,)), y)

    @torch.no_grad()
    def __call__(self, X: torch.Tensor) -> torch.Tensor:
        if X.ndim != 2 or X.shape[1] != self.dim:
            raise ValueError(f"X must be (N, {self.dim}), got {tuple(X.shape)}")
        if self.resample:
            self.next_batch()
        if self.batch is None:
            raise ValueError("no batch: call set_batch() or pass batches with resample=True")
        x, y = self.batch
        if not self.vectorize:
            return torch.stack([self._loss(row, x, y) for row in X])
        batched = vmap(self._loss, in_dims=(0, None, None))
        return torch.cat([batched(c, x, y) for c in torch.split(X, self.chunk_size)])
