"""Layered fast path for sequential models: shared prefix, cheap perturbed layer, batched suffix.

The model must be an ``nn.Sequential`` (nested ones are flattened) whose layers each treat every
sample independently, as each layer says through its :class:`~polystep.evaluate.traits.Traits`
(declared on the layer; torch's own layers are in one registry). The batch dim of each
activation may move (a LIF layer emits time-major ``(T, B, F)``): it is found once per input
shape by probing with 1 and 2 samples.

A candidate moves one block of coordinates, hence one parameter of one layer ``i``, so:

1. one plain forward gives the input ``x_i`` and output ``y_i`` of every layer, shared by all;
2. when layer ``i`` is linear-like and the block touches a few output units (a row of a direct
   weight or of the factor ``A``, a bias block: the segment says), those units' change goes
   through the unit-wise layers above ``i`` alone and reaches the next linear layer ``j`` as a
   rank-``k`` update; with a per-sample loss only the samples it changes are run further
   (:mod:`polystep.evaluate.events`);
3. otherwise layer ``i``'s output is ``y_i + x dWᵀ`` from the segment's sparse delta (plain
   linear layers) or ``vmap(functional_call)`` of that layer alone, and the layers above run
   once on all candidates of a chunk stacked into the batch dim.

A slower path taken for want of a fast one is announced once (:attr:`fallback_reason`); with
``strict=True`` it is an error instead.
"""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, replace
from functools import partial
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.func import functional_call

from polystep.blocks import BlockCandidates
from polystep.evaluate.base import (
    DEFAULT_BUDGET,
    Batch,
    Evaluator,
    _plain_cross_entropy,
    block_columns,
    chunks,
    compute_loss,
    evaluation_mode,
    local_coords,
    nested_layers,
    per_candidate_loss,
    segment_groups,
)
from polystep.evaluate.batched import VmapEvaluator
from polystep.evaluate.events import per_sample_cross_entropy, sparse_unit_losses
from polystep.evaluate.fused import Suffix, fused_suffix, lif_spikes
from polystep.evaluate.traits import Traits, is_batchwise, traits_of
from polystep.evaluate.units import dedupe_slots, propagate_units
from polystep.subspace.base import Subspace
from polystep.subspace.segments import Segment

CPU_CHUNK_ELEMENTS = 2**22  # about 1 MiB of float32: elementwise time loops stay in cache


ChunkResult = tuple[torch.Tensor, int | None]  # losses of a chunk, pairs re-run (None: no events)


Sources = tuple[tuple[Any, object], ...]


@dataclass
class Base:
    """The incumbent's forward on a batch: ``acts[k]`` the input of layer ``k`` (the last the
    output), ``dims`` their batch dims, ``losses (B,)`` per sample (None: not a mean of
    per-sample cross-entropies), ``sources``: what it was computed from (:meth:`sources_of`)."""

    sources: Sources
    acts: list[torch.Tensor]
    dims: list[int]
    losses: torch.Tensor | None

    @staticmethod
    def sources_of(model: nn.Module, batch: Batch) -> Sources:
        """The batch's parts and the model's parameters and buffers, each with its version
        counter (bumped by every in-place change); the objects are held, so no id is reused
        meanwhile."""
        parts = (*batch, *model.parameters(), *model.buffers())
        return tuple((t, _version(t)) for t in parts)

    def fits(self, sources: Sources) -> bool:
        """Whether ``sources`` are the same objects, unchanged since."""
        return len(sources) == len(self.sources) and all(
            a is b and u is not None and u == v
            for (a, u), (b, v) in zip(sources, self.sources, strict=True)
        )


def _version(value: object) -> int | None:
    """A tensor's version counter (0 for other objects; None where torch keeps none)."""
    if not isinstance(value, torch.Tensor):
        return 0
    try:
        return value._version
    except RuntimeError:  # an inference tensor has no version counter: never reused
        return None


class NotLayerable(ValueError):
    """The model does not fit the layered fast path (the message says why)."""


class FallbackError(RuntimeError):
    """Strict mode: the layered evaluator would have taken a slower path (the message says why)."""


def sequential_layers(model: nn.Module) -> list[nn.Module]:
    """The flat list of layers of a (nested) ``nn.Sequential``; NotLayerable otherwise."""
    layers = nested_layers(model, NotLayerable)
    for m in layers:
        if not is_batchwise(m):
            raise NotLayerable(
                f"layer {type(m).__name__} declares no batch-wise traits (give it "
                "polystep_traits = polystep.evaluate.traits.BATCHWISE if each sample is "
                "processed independently)"
            )
    return layers


@dataclass(eq=False, repr=False, kw_only=True)
class LayeredEvaluator(Evaluator):
    """``strict``: any slower path is an error. ``fused``: score unit-sparse candidates with
    the layers' fused kernels where they declare them (:mod:`polystep.evaluate.fused`); False
    keeps the eager reference suffix."""

    name = "layered"

    strict: bool = False
    fused: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        self.fused = bool(self.fused)
        self.layers = sequential_layers(self.model)
        self.sites = self._sites(self.subspace)
        self.strict = bool(self.strict)
        self._batch_dims: dict[tuple[int, ...], list[int]] = {}
        self.fallback_reason: str | None = None
        self._fallback: Evaluator | None = None
        self.pairs_run = 0  # (candidate, sample) pairs the event-driven suffix re-ran ...
        self.pairs_dense = 0  # ... out of this many that a dense suffix would have run
        self.fused_candidates = 0  # candidates scored by a fused suffix kernel
        self.progress: Callable[[int], None] | None = None  # told each chunk's size when done
        self._kept: Base | None = None  # the forward of the last loss(), for the next evaluate
        self._tables: tuple[list[Segment], np.ndarray, np.ndarray] | None = None  # _groups
        self._lif_shapes: dict[tuple[Any, ...], torch.Size] = {}  # _forward

    @classmethod
    def supports(cls, model: nn.Module, subspace: Subspace) -> str | None:
        """None when the layered path can run ``model``, else the reason it cannot."""
        try:
            cls(model, lambda o, t: o.sum(), subspace)
        except NotLayerable as exc:
            return str(exc)
        return None

    def _sites(self, subspace: Subspace) -> dict[str, tuple[int, str]]:
        canon = {id(p): k for k, p in subspace.layout.parameters(self.model).items()}
        sites: dict[str, tuple[int, str]] = {}
        for i, layer in enumerate(self.layers):
            for local, p in layer.named_parameters():
                if id(p) not in canon:
                    continue
                if canon[id(p)] in sites:
                    raise NotLayerable(f"parameter {canon[id(p)]!r} is used by two layers")
                sites[canon[id(p)]] = (i, local)
        missing = [k for k in subspace.layout.names if k not in sites]
        if missing:
            raise NotLayerable(f"parameters outside the layer chain: {missing}")
        return sites

    def _fall_back(self, reason: str) -> None:
        """Record and announce (once) a slower path; an error in strict mode."""
        reason = reason.splitlines()[0][:300]
        if self.strict:
            raise FallbackError(f"layered evaluator: {reason}")
        if self.fallback_reason is None:
            self.fallback_reason = reason
            warnings.warn(f"layered evaluator: {reason}", RuntimeWarning, stacklevel=3)

    def batch_dims(self, inputs: torch.Tensor) -> list[int]:
        """Batch dim of the input and of every layer's output (probed with 1 and 2 samples)."""
        key = tuple(inputs.shape[1:])
        if key not in self._batch_dims:
            one = inputs[:1]
            shapes = []
            for probe in (one, torch.cat([one, one])):
                acts = [probe]
                for layer in self.layers:
                    acts.append(layer(acts[-1]))
                shapes.append([a.shape for a in acts])
            dims = []
            for a, b in zip(*shapes):
                diff = [d for d in range(len(a)) if len(a) != len(b) or a[d] != b[d]]
                if len(a) != len(b) or len(diff) != 1 or b[diff[0]] != 2 * a[diff[0]]:
                    raise NotLayerable(f"cannot find the batch dim of an activation {tuple(a)}")
                dims.append(diff[0])
            self._batch_dims[key] = dims
        return self._batch_dims[key]

    def _layerable(self, batch: Batch) -> bool:
        """Whether the layered path serves ``batch``; else the vmap fallback (announced once)."""
        inputs = batch[0]
        known = isinstance(inputs, torch.Tensor) and tuple(inputs.shape[1:]) in self._batch_dims
        if self._fallback is None and not known:
            try:
                with evaluation_mode(self.model):
                    self.batch_dims(batch[0])
            except (NotLayerable, RuntimeError) as exc:
                self._fall_back(f"fell back to vmap: {type(exc).__name__}: {exc}")
                self._fallback = VmapEvaluator(
                    self.model, self.loss_fn, self.subspace, chunk_size=self.chunk_size
                )
        return self._fallback is None

    def loss(self, batch: Batch) -> torch.Tensor:
        """Loss of the incumbent on ``batch`` (a 0-d tensor), from a layer-by-layer forward
        that the next :meth:`evaluate` of the same batch reuses while the batch, parameters
        and buffers are unchanged."""
        if not self._layerable(batch):
            return super().loss(batch)
        with evaluation_mode(self.model):
            base = self._base(batch)
            value = compute_loss(self.loss_fn, base.acts[-1], batch[1]).detach()
        # taken after evaluation_mode restored the buffers (a copy that bumps their versions)
        self._kept = replace(base, sources=Base.sources_of(self.model, batch))
        return value

    def evaluate(self, candidates: BlockCandidates, batch: Batch) -> torch.Tensor:
        if not self._layerable(batch):
            return self._fallback.evaluate(candidates, batch)  # type: ignore[union-attr]
        return self._evaluate(candidates, batch)

    def _base(self, batch: Batch) -> Base:
        """The incumbent's activations on ``batch``: the ones :meth:`loss` kept when the batch
        and every parameter and buffer are the same objects, unmodified since (their version
        counters), else a fresh forward (its ``sources`` empty: :meth:`loss` sets them when it
        keeps it). Kept activations serve one call only."""
        kept, self._kept = self._kept, None
        if kept is not None and kept.fits(Base.sources_of(self.model, batch)):
            return kept
        inputs, targets = batch
        dims = self.batch_dims(inputs)
        acts = [inputs]
        for k, layer in enumerate(self.layers):
            acts.append(self._forward(k, layer, acts[-1]))
        return Base((), acts, dims, self._per_sample_losses(acts, dims, targets))

    def _forward(self, k: int, layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """Layer ``k`` on ``x`` in the incumbent's forward: a hard LIF layer by its compiled
        loop (:func:`~polystep.evaluate.fused.lif_spikes`, the same spikes) once its output
        shape for this input shape is known, else (and the first time) the layer itself."""
        # num_steps: what sets the length of a static-current LIF's output besides the input
        key = (k, tuple(x.shape), getattr(layer, "num_steps", None))
        shape = self._lif_shapes.get(key) if self.fused else None
        if shape is not None:
            out = lif_spikes(layer, x, shape)
            if out is not None:
                return out
        y = layer(x)
        kernel = traits_of(layer).kernel
        if kernel is not None and kernel.name == "lif":
            self._lif_shapes[key] = y.shape
        return y

    def _evaluate(self, candidates: BlockCandidates, batch: Batch) -> torch.Tensor:
        targets = batch[1]
        device = candidates.block.device
        losses = torch.empty(candidates.block.shape[0], dtype=torch.float64, device=device)
        with evaluation_mode(self.model):
            base = self._base(batch)
            acts, dims, base_losses = base.acts, base.dims, base.losses
            traits = [traits_of(m) for m in self.layers]  # once a call: each builds its Traits
            suffixes: dict[tuple[int, int], Suffix | None] = {}  # one per moved layer, per call
            tasks: list[Callable[[], ChunkResult]] = []
            rows_of: list[torch.Tensor] = []
            pooled: list[bool] = []
            fused: list[bool] = []
            for s, rows, unit_sparse in self._groups(candidates):
                seg = self.subspace.segments[s]
                i, local = self.sites[seg.name]
                shared: dict[str, torch.Tensor] = {}
                j = self._unit_target(i, local, base_losses is not None, traits)
                dense = rows if j is None else _pick(rows, unit_sparse, False)
                if j is not None:
                    if base_losses is not None and (i, j) not in suffixes:
                        suffixes[i, j] = self._suffix(i, j, acts)
                    suffix = suffixes.get((i, j))
                    per = self.subspace.block_dim * max(
                        a.numel() // a.shape[-1] for a in acts[i + 1 : j + 1]
                    )
                    size = self._chunk(max([per, *(a.numel() for a in acts[j + 1 :])]), device)
                    for chunk in chunks(_pick(rows, unit_sparse, True), size):
                        args = (i, j, local, seg, candidates, chunk, acts, dims, shared)
                        tasks.append(partial(self._unit_task, *args, targets, base_losses, suffix))
                        rows_of.append(chunk)
                        pooled.append(True)
                        fused.append(suffix is not None)
                size = self._chunk(max(a.numel() for a in acts[i + 1 :]), device)
                for chunk in chunks(dense, size):
                    args = (i, local, s, seg, candidates, chunk, acts, dims, shared)
                    tasks.append(partial(self._dense_task, *args, targets))
                    rows_of.append(chunk)
                    pooled.append(False)
                    fused.append(False)
            sizes = [rows.shape[0] for rows in rows_of]
            results = self._run(tasks, pooled, device, sizes, self.progress)
            samples = acts[0].shape[dims[0]]
            for chunk, n, (value, pairs), by_kernel in zip(
                rows_of, sizes, results, fused, strict=True
            ):
                losses[chunk] = value
                self.fused_candidates += n if by_kernel else 0
                if pairs is not None:
                    self.pairs_run += pairs
                    self.pairs_dense += n * samples
        return losses

    def _groups(self, candidates: BlockCandidates) -> list[tuple[int, torch.Tensor, np.ndarray]]:
        """``(segment, rows, unit-sparse flags (n,))`` of every segment that candidates perturb,
        rows ascending as :func:`segment_groups` gives them. A block's segment and whether it
        moves few units depend on the block alone: both are tabled once per subspace draw, and
        candidates in block order (as steps ask them) split into ranges without a search. The
        bookkeeping runs on numpy (a step's few thousand block indices: a numpy call costs a
        microsecond, a torch op several)."""
        of_block, sparse_block = self._block_tables()
        device = candidates.block.device
        block = candidates.block.cpu().numpy()
        seg, sparse = of_block[block], sparse_block[block]
        if len(seg) > 1 and bool((seg[1:] < seg[:-1]).any()):
            return [
                (s, rows, sparse[rows.cpu().numpy()])
                for s, rows in segment_groups(self.subspace, candidates)
            ]
        edges = [0, *(np.flatnonzero(seg[1:] != seg[:-1]) + 1).tolist(), len(seg)]
        return [
            (int(seg[lo]), torch.arange(lo, hi, device=device), sparse[lo:hi])
            for lo, hi in itertools.pairwise(edges)
            if hi > lo
        ]

    def _block_tables(self) -> tuple[np.ndarray, np.ndarray]:
        """Segment ``(P,)`` and unit-sparse flag ``(P,)`` of every block of the current draw."""
        segments = self.subspace.segments
        if self._tables is None or self._tables[0] is not segments:
            p = self.subspace.block_dim
            flags = [seg.unit_sparse(torch.arange(seg.size).view(-1, p)) for seg in segments]
            of_block = self.subspace.block_segments().numpy()
            self._tables = (segments, of_block, torch.cat(flags).cpu().numpy())
        return self._tables[1], self._tables[2]

    @staticmethod
    def _run(
        tasks: list[Callable[[], ChunkResult]],
        pooled: list[bool],
        device: torch.device,
        sizes: list[int],
        progress: Callable[[int], None] | None,
    ) -> list[ChunkResult]:
        """Run the chunk tasks. On a CPU with ``n > 1`` torch threads the ``pooled`` ones (which
        only read the model) run ``n`` at a time, one thread each: chunks scale better than
        splitting every small op. The others (``functional_call`` swaps a layer's parameters
        while it runs) run alone, first. ``progress`` (called in this thread) is told the
        candidates of every finished chunk, ``sizes[k]`` for task ``k``."""
        tell = progress or (lambda n: None)
        out: list[ChunkResult | None] = [None] * len(tasks)
        threads = torch.get_num_threads()
        alone = device.type != "cpu" or threads == 1 or sum(pooled) < 2
        for k, task in enumerate(tasks):
            if alone or not pooled[k]:
                out[k] = task()
                tell(sizes[k])
        if alone:
            return out  # type: ignore[return-value]

        def run(k: int) -> int:
            with torch.no_grad():  # grad mode is per thread
                out[k] = tasks[k]()
            return k

        torch.set_num_threads(1)
        try:
            with ThreadPoolExecutor(threads) as pool:
                futures = [pool.submit(run, k) for k in range(len(tasks)) if pooled[k]]
                for done in as_completed(futures):
                    tell(sizes[done.result()])
        finally:
            torch.set_num_threads(threads)
        return out  # type: ignore[return-value]

    def _unit_task(
        self, i: int, j: int, local: str, seg: Segment, candidates: BlockCandidates,
        chunk: torch.Tensor, acts: list[torch.Tensor], dims: list[int],
        shared: dict[str, torch.Tensor], targets: object, base_losses: torch.Tensor | None,
        suffix: Suffix | None,
    ) -> ChunkResult:  # fmt: skip
        """Losses of unit-sparse candidates ``chunk`` and the pairs re-run (None: no events)."""
        units, change = self._unit_change(i, local, seg, candidates, chunk, acts[i], shared)
        if suffix is not None:
            return suffix(units, change, targets, base_losses)  # type: ignore[arg-type]
        if base_losses is not None:
            return sparse_unit_losses(
                self.layers, acts, dims, i, j, units, change, targets, base_losses
            )
        h = propagate_units(self.layers, acts, dims, i, j, units, change)
        return self._finish(h, j + 1, dims, targets), None

    def _dense_task(
        self, i: int, local: str, s: int, seg: Segment, candidates: BlockCandidates,
        chunk: torch.Tensor, acts: list[torch.Tensor], dims: list[int],
        shared: dict[str, torch.Tensor], targets: object,
    ) -> ChunkResult:  # fmt: skip
        h = self._perturbed(i, local, s, seg, candidates, chunk, acts, shared)
        return self._finish(h, i + 1, dims, targets), None

    def _suffix(self, i: int, j: int, acts: list[torch.Tensor]) -> Suffix | None:
        """The fused suffix of candidates moving units of layer ``i`` (None: the eager one)."""
        if not self.fused:
            return None
        suffix, why = fused_suffix(self.layers, acts, i, j)
        if why is not None:
            self._fall_back(f"fused candidate kernel unavailable, eager suffix: {why}")
        return suffix

    def _chunk(self, widest: int, device: torch.device) -> int:
        """Candidates per chunk: the widest activation of a chunk stays cache-sized on CPU."""
        budget = CPU_CHUNK_ELEMENTS if device.type == "cpu" else DEFAULT_BUDGET // 4
        return self.chunk_size or max(1, budget // max(widest, 1))

    def _finish(self, h: torch.Tensor, k: int, dims: list[int], targets: object) -> torch.Tensor:
        """Run layers ``k..`` on ``h (n, *acts[k].shape)`` stacked in the batch; losses ``(n,)``."""
        n = h.shape[0]
        h = h.movedim(0, dims[k]).flatten(dims[k], dims[k] + 1)
        for layer in self.layers[k:]:
            h = layer(h)
        h = h.unflatten(dims[-1], (n, -1)).movedim(dims[-1], 0)
        return per_candidate_loss(self.loss_fn, h, targets).double()

    def _per_sample_losses(
        self, acts: list[torch.Tensor], dims: list[int], targets: object
    ) -> torch.Tensor | None:
        """The incumbent's per-sample losses ``(B,)`` when the loss is their mean, else None."""
        out = acts[-1]
        if (
            dims[-1] != 0
            or out.ndim != 2
            or not _plain_cross_entropy(self.loss_fn, out[None], targets)
        ):
            return None
        return per_sample_cross_entropy(out, targets)  # type: ignore[arg-type]

    def _unit_target(
        self, i: int, local: str, to_output: bool, traits: list[Traits] | None = None
    ) -> int | None:
        """For a linear-like layer ``i``'s weight or bias: the next linear-like layer reached
        through unit-wise layers, or ``len(layers)`` when ``to_output`` and the unit-wise
        chain runs to the output; None otherwise. ``traits``: the layers' (else looked up)."""
        traits = traits or [traits_of(m) for m in self.layers]
        if not traits[i].linear or local not in ("weight", "bias"):
            return None
        k = i + 1
        while k < len(self.layers) and traits[k].unitwise:
            k += 1
        if k == len(self.layers):
            return k if to_output else None
        return k if traits[k].linear else None

    def _unit_change(
        self, i: int, local: str, seg: Segment, candidates: BlockCandidates, rows: torch.Tensor,
        x: torch.Tensor, shared: dict[str, torch.Tensor],
    ) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
        """Touched units ``(n, k)`` of layer ``i`` and their output change ``(n, M, k)``."""
        cols, vals = block_columns(self.subspace, seg, candidates, rows, x)
        xf = x.reshape(-1, x.shape[-1])
        layer = self.layers[i]
        traits = traits_of(layer)
        if traits.plain_linear:
            return seg.unit_change(xf, cols, vals, shared)
        units, rows_delta = seg.unit_rows(cols, vals)  # mapped weights: f(W_u + dW_u) - f(W_u)
        units, rows_delta = dedupe_slots(units, rows_delta.transpose(1, 2))
        param = layer.get_parameter(local).detach()
        if local == "bias":
            old = param[units]
            moved = traits.bias_map(old + rows_delta[:, 0, :]) - traits.bias_map(old)
            return units, moved[:, None, :].expand(-1, xf.shape[0], -1)
        old = param[units]  # (n, k, d_in)
        moved = traits.weight_map(old + rows_delta.transpose(1, 2)) - traits.weight_map(old)
        return units, torch.einsum("md,nkd->nmk", xf, moved)

    def _perturbed(
        self, i: int, local: str, s: int, seg: Segment, candidates: BlockCandidates,
        rows: torch.Tensor, acts: list[torch.Tensor], shared: dict[str, torch.Tensor],
    ) -> torch.Tensor:  # fmt: skip
        """Output of layer ``i`` for candidates ``rows``: ``(n, B, ...)``."""
        layer = self.layers[i]
        if traits_of(layer).plain_linear and local in ("weight", "bias"):
            x, y = acts[i], acts[i + 1]
            cols, vals = block_columns(self.subspace, seg, candidates, rows, y)
            xf = x.reshape(-1, x.shape[-1])
            out = y.reshape(1, -1, y.shape[-1]).repeat(len(rows), 1, 1)
            if seg.output_delta(out, xf, cols, vals, shared):
                return out.reshape(len(rows), *y.shape)
        base = layer.get_parameter(local).detach()
        delta = seg.delta(local_coords(self.subspace, s, candidates, rows)).to(base)

        def run(d: torch.Tensor) -> torch.Tensor:
            return functional_call(layer, {local: base + d}, (acts[i],))

        try:
            return torch.vmap(run)(delta)
        except RuntimeError as exc:  # a layer vmap cannot batch: one candidate at a time
            self._fall_back(f"{type(layer).__name__} runs one candidate at a time: {exc}")
            return torch.stack([run(d) for d in delta])


def _pick(rows: torch.Tensor, flags: np.ndarray, value: bool) -> torch.Tensor:
    """``rows`` whose ``flags`` equal ``value`` (all of them, as they are, when every flag does)."""
    mask = flags if value else ~flags
    return rows if bool(mask.all()) else rows[torch.from_numpy(mask).to(rows.device)]
