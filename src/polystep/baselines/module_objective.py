"""A module's loss on a data stream as a batched vector objective ``f(X (N, D)) -> (N,)``.

This lets the vector baselines (OpenAI-ES, SPSA, CMA-ES) train any ``nn.Module`` in its full
parameter space: row ``n`` of ``X`` is a flat parameter vector (``parameters()`` order), and its
value is the loss of the model with those parameters on the current minibatch. With
``resample=True`` each call first draws the next batch from the stream, so one generation sees one
batch (common random numbers inside a generation). Rows are evaluated with
``torch.func.functional_call`` under ``vmap`` in chunks, or one by one for modules that are not
vmap-safe. :meth:`ModuleObjective.state_dict` records where the stream is (the shuffling
generator's state when the current epoch began, and the batches drawn in it), so a loaded
objective draws the same batches next: a resumed run sees the data an uninterrupted one sees.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

import torch
from torch import nn
from torch.func import functional_call, vmap

from polystep.training import _loader_generators  # the shuffling generators, as train() finds them
from polystep.validation import check_positive_int

Batch = tuple[torch.Tensor, torch.Tensor]
LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
STREAM_KEYS = frozenset({"epoch_rng", "batch_in_epoch", "batches_drawn"})


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
        check_positive_int("chunk_size", chunk_size)
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
        self._epoch_rng: list[torch.Tensor] | None = None  # generator states as the epoch began
        self._in_epoch = 0  # batches drawn in the current epoch
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
            self._new_epoch()
        try:
            batch = next(self._iter)
        except StopIteration:
            self._new_epoch()
            batch = next(self._iter, None)
            if batch is None:
                raise ValueError("the batches stream yielded no batch") from None
        self.batch = (batch[0], batch[1])
        self.batches_drawn += 1
        self._in_epoch += 1
        return self.batch

    def _new_epoch(self) -> None:
        assert self.batches is not None
        self._epoch_rng = [g.get_state() for g in _loader_generators(self.batches)]
        self._in_epoch = 0
        self._iter = iter(self.batches)

    def state_dict(self) -> dict[str, Any]:
        """Where the stream is (plain data): the states of its shuffling generators (its
        ``generator`` and its sampler's) as the current epoch began, None before the first
        batch; the batches drawn in that epoch and in all."""
        return {
            "epoch_rng": self._epoch_rng,
            "batch_in_epoch": self._in_epoch,
            "batches_drawn": self.batches_drawn,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue the stream from :meth:`state_dict`'s ``state``: the epoch it was in is drawn
        again from the same generator states and its first ``batch_in_epoch`` batches skipped.
        A ValueError when the state does not fit this stream."""
        if not isinstance(state, dict) or set(state) != STREAM_KEYS:
            raise ValueError(f"not a ModuleObjective state (keys: {sorted(STREAM_KEYS)})")
        rng, skip = state["epoch_rng"], state["batch_in_epoch"]
        if type(skip) is not int or skip < 0 or type(state["batches_drawn"]) is not int:
            raise ValueError("a ModuleObjective state needs int batch_in_epoch and batches_drawn")
        self.batches_drawn = state["batches_drawn"]
        if rng is None:
            self._iter, self._epoch_rng, self._in_epoch = None, None, 0
            return
        if self.batches is None:
            raise ValueError("the state is of a stream, this objective has no batches")
        generators = _loader_generators(self.batches)
        if not isinstance(rng, list) or len(rng) != len(generators):
            raise ValueError(
                f"the state has {len(rng) if isinstance(rng, list) else rng!r} generator states, "
                f"this stream shuffles with {len(generators)}"
            )
        for g, saved in zip(generators, rng, strict=True):
            g.set_state(saved)
        self._new_epoch()
        for _ in range(skip):
            if next(self._iter, None) is None:
                raise ValueError(f"the stream has fewer than batch_in_epoch={skip} batches")
        self._in_epoch = skip

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
