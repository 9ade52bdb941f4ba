"""Layered fast path for sequential models: shared prefix, cheap perturbed layer, batched suffix.

The model must be an ``nn.Sequential`` (nested ones are flattened) whose layers each treat every
sample independently: Linear/Conv, pooling, Flatten, standard activations, the polystep.nn blocks
(LIF, SpikeCount, QuantLinear, BinaryLinear, Staircase), or any module that sets
``polystep_batchwise = True``. The batch dim of each activation may move (a LIF layer emits
time-major ``(T, B, F)``): it is found once per input shape by probing with 1 and 2 samples.

A candidate moves one block of coordinates, hence one parameter of one layer ``i``, so:

1. one plain forward gives the input ``x_i`` and output ``y_i`` of every layer, shared by all;
2. for a Linear layer the candidate's output is ``y_i + x dWᵀ`` computed sparsely: a direct
   block adds ``p`` products, a low-rank block adds ``(x Bᵀ) dAᵀ`` (``x Bᵀ`` shared) or
   ``(x dEᵀ) Cᵀ``; other layers run ``vmap(functional_call)`` of that layer alone;
3. the layers above ``i`` run once on all candidates of a chunk stacked into the batch dim.
"""

from __future__ import annotations

import warnings

import torch
from torch import nn
from torch.func import functional_call

from polystep.blocks import BlockCandidates
from polystep.evaluate.base import (
    DEFAULT_BUDGET,
    Batch,
    Evaluator,
    _plain_cross_entropy,
    chunks,
    evaluation_mode,
    local_coords,
    per_candidate_loss,
    segment_groups,
)
from polystep.evaluate.batched import VmapEvaluator
from polystep.evaluate.events import per_sample_cross_entropy, sparse_unit_losses
from polystep.evaluate.units import is_unitwise, propagate_units, run_layer
from polystep.subspace.base import Subspace
from polystep.subspace.segments import DirectSegment, LowRankSegment, Segment

BATCHWISE = (
    nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Identity, nn.Dropout,
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Mish,
    nn.Sigmoid, nn.Tanh, nn.Hardtanh, nn.Hardsigmoid, nn.Hardswish, nn.Softplus, nn.Softsign,
    nn.MaxPool1d, nn.MaxPool2d, nn.AvgPool1d, nn.AvgPool2d,
    nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d,
)  # fmt: skip


CPU_CHUNK_ELEMENTS = 2**22  # about 1 MiB of float32: elementwise time loops stay in cache


class NotLayerable(ValueError):
    """The model does not fit the layered fast path (the message says why)."""


def _known_batchwise() -> tuple[type, ...]:
    """polystep.nn blocks that treat samples independently (time-major spike trains included)."""
    try:
        from polystep.nn import LIF, BinaryLinear, QuantLinear, SpikeCount, Staircase
    except ImportError:  # pragma: no cover - polystep.nn is optional here
        return ()
    return (LIF, SpikeCount, QuantLinear, BinaryLinear, Staircase)


def is_batchwise(module: nn.Module) -> bool:
    """True when ``module`` processes each sample independently (along its batch dim)."""
    if getattr(module, "polystep_batchwise", False) or type(module) in _known_batchwise():
        return True
    if isinstance(module, nn.Flatten):
        return module.start_dim >= 1 or module.start_dim < -1
    if isinstance(module, nn.Softmax | nn.LogSoftmax):
        return module.dim is not None and module.dim != 0
    return type(module) in BATCHWISE


def sequential_layers(model: nn.Module) -> list[nn.Module]:
    """The flat list of layers of a (nested) ``nn.Sequential``; NotLayerable otherwise."""
    if not isinstance(model, nn.Sequential):
        raise NotLayerable(f"model is a {type(model).__name__}, not an nn.Sequential")
    layers: list[nn.Module] = []
    for m in model:
        layers.extend(sequential_layers(m) if isinstance(m, nn.Sequential) else [m])
    for m in layers:
        if not is_batchwise(m):
            raise NotLayerable(
                f"layer {type(m).__name__} is not known to be batch-wise "
                "(set polystep_batchwise = True on it if each sample is processed independently)"
            )
    return layers


def scatter_products(
    out: torch.Tensor, src: torch.Tensor, src_col: torch.Tensor, out_col: torch.Tensor,
    values: torch.Tensor,
) -> None:  # fmt: skip
    """``out[n, :, out_col[n, j]] += src[:, src_col[n, j]] * values[n, j]`` in place.

    Shapes: ``out (n, M, R)``, ``src (M, C)``, index and values ``(n, p)``.
    """
    contrib = src[:, src_col].permute(1, 0, 2) * values[:, None, :]
    out.scatter_add_(2, out_col[:, None, :].expand(-1, src.shape[0], -1), contrib)


class LayeredEvaluator(Evaluator):
    name = "layered"

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.layers = sequential_layers(self.model)
        self.sites = self._sites(self.subspace)
        self._batch_dims: dict[tuple[int, ...], list[int]] = {}
        self.fallback_reason: str | None = None
        self._fallback: Evaluator | None = None
        self.pairs_run = 0  # (candidate, sample) pairs the event-driven suffix re-ran ...
        self.pairs_dense = 0  # ... out of this many that a dense suffix would have run

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

    def batch_dims(self, inputs: torch.Tensor) -> list[int]:
        """Batch dim of the input and of every layer's output (probed with 1 and 2 samples)."""
        key = tuple(inputs.shape[1:])
        if key not in self._batch_dims:
            one = inputs[:1]
            shapes = []
            for probe in (one, torch.cat([one, one])):
                acts = [probe]
                for layer in self.layers:
                    acts.append(run_layer(layer, acts[-1]))
                shapes.append([a.shape for a in acts])
            dims = []
            for a, b in zip(*shapes):
                diff = [d for d in range(len(a)) if len(a) != len(b) or a[d] != b[d]]
                if len(a) != len(b) or len(diff) != 1 or b[diff[0]] != 2 * a[diff[0]]:
                    raise NotLayerable(f"cannot find the batch dim of an activation {tuple(a)}")
                dims.append(diff[0])
            self._batch_dims[key] = dims
        return self._batch_dims[key]

    def evaluate(self, candidates: BlockCandidates, batch: Batch) -> torch.Tensor:
        if self.fallback_reason is None:
            try:
                with evaluation_mode(self.model):
                    self.batch_dims(batch[0])
            except (NotLayerable, RuntimeError) as exc:
                self.fallback_reason = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
                warnings.warn(
                    f"layered evaluator fell back to vmap: {self.fallback_reason}",
                    RuntimeWarning,
                    stacklevel=2,
                )
        if self.fallback_reason is not None:
            if self._fallback is None:
                self._fallback = VmapEvaluator(
                    self.model, self.loss_fn, self.subspace, chunk_size=self.chunk_size
                )
            return self._fallback.evaluate(candidates, batch)
        return self._evaluate(candidates, batch)

    def _evaluate(self, candidates: BlockCandidates, batch: Batch) -> torch.Tensor:
        inputs, targets = batch
        device = candidates.block.device
        losses = torch.empty(len(candidates), dtype=torch.float64, device=device)
        with evaluation_mode(self.model):
            dims = self.batch_dims(inputs)
            acts = [inputs]
            for layer in self.layers:
                acts.append(run_layer(layer, acts[-1]))
            base_losses = self._per_sample_losses(acts, dims, targets)
            for s, rows in segment_groups(self.subspace, candidates):
                seg = self.subspace.segments[s]
                i, local = self.sites[seg.name]
                shared: dict[str, torch.Tensor] = {}
                j = self._next_linear(i, seg, local, to_output=base_losses is not None)
                sparse = torch.zeros(len(rows), dtype=torch.bool, device=rows.device)
                if j is not None:
                    sparse = self._unit_sparse(seg, local, candidates, rows)
                    per = self.subspace.block_dim * max(
                        a.numel() // a.shape[-1] for a in acts[i + 1 : j + 1]
                    )
                    size = self._chunk(max([per, *(a.numel() for a in acts[j + 1 :])]), device)
                    for chunk in chunks(rows[sparse], size):
                        units, change = self._unit_change(
                            seg, local, candidates, chunk, acts[i], shared
                        )
                        if base_losses is not None:
                            losses[chunk], pairs = sparse_unit_losses(
                                self.layers, acts, dims, i, j, units, change, targets, base_losses
                            )
                            self.pairs_run += pairs
                            self.pairs_dense += len(chunk) * len(base_losses)
                            continue
                        h = propagate_units(self.layers, acts, dims, i, j, units, change)
                        losses[chunk] = self._finish(h, j + 1, dims, targets)
                size = self._chunk(max(a.numel() for a in acts[i + 1 :]), device)
                for chunk in chunks(rows[~sparse], size):
                    h = self._perturbed(i, local, s, seg, candidates, chunk, acts, shared)
                    losses[chunk] = self._finish(h, i + 1, dims, targets)
        return losses

    def _chunk(self, widest: int, device: torch.device) -> int:
        """Candidates per chunk: the widest activation of a chunk stays cache-sized on CPU."""
        budget = CPU_CHUNK_ELEMENTS if device.type == "cpu" else DEFAULT_BUDGET // 4
        return self.chunk_size or max(1, budget // max(widest, 1))

    def _finish(self, h: torch.Tensor, k: int, dims: list[int], targets: object) -> torch.Tensor:
        """Run layers ``k..`` on ``h (n, *acts[k].shape)`` stacked in the batch; losses ``(n,)``."""
        n = h.shape[0]
        h = h.movedim(0, dims[k]).flatten(dims[k], dims[k] + 1)
        for layer in self.layers[k:]:
            h = run_layer(layer, h)
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

    def _next_linear(self, i: int, seg: Segment, local: str, to_output: bool) -> int | None:
        """Index of the Linear layer reached from layer ``i`` through unit-wise layers, if any;
        ``len(layers)`` when ``to_output`` and the unit-wise chain runs to the output."""
        if type(self.layers[i]) is not nn.Linear or not isinstance(
            seg, DirectSegment | LowRankSegment
        ):
            return None
        if local not in ("weight", "bias"):
            return None
        k = i + 1
        while k < len(self.layers) and is_unitwise(self.layers[k]):
            k += 1
        if k == len(self.layers):
            return k if to_output else None
        return k if type(self.layers[k]) is nn.Linear else None

    def _cols_vals(
        self, seg: Segment, candidates: BlockCandidates, rows: torch.Tensor, like: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Local coordinate index ``(n, p)`` and offset values ``(n, p)`` of candidates ``rows``."""
        p = self.subspace.block_dim
        cols = (candidates.block[rows] * p - seg.start)[:, None]
        cols = (cols + torch.arange(p, device=cols.device)).to(like.device)
        return cols, candidates.offset[rows].to(like)

    def _unit_sparse(
        self, seg: Segment, local: str, candidates: BlockCandidates, rows: torch.Tensor
    ) -> torch.Tensor:
        """Which candidates change only the units they touch (no ``E``-factor coordinate)."""
        if not isinstance(seg, LowRankSegment) or local == "bias":
            return torch.ones(len(rows), dtype=torch.bool, device=rows.device)
        cols, _ = self._cols_vals(seg, candidates, rows, candidates.offset)
        in_e = (cols >= seg.a_size) & (cols < seg.a_size + seg.e_size)
        return ~in_e.any(dim=1).to(rows.device)

    def _unit_change(
        self, seg: Segment, local: str, candidates: BlockCandidates, rows: torch.Tensor,
        x: torch.Tensor, shared: dict[str, torch.Tensor],
    ) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
        """Touched units ``(n, p)`` and their pre-activation change ``(n, M, p)``."""
        cols, vals = self._cols_vals(seg, candidates, rows, x)
        xf = x.reshape(-1, x.shape[-1])
        if local == "bias":
            valid = cols < seg.numel
            units = torch.where(valid, cols, 0)
            return units, (vals * valid)[:, None, :].expand(-1, xf.shape[0], -1)
        if isinstance(seg, DirectSegment):
            valid = cols < seg.numel
            c = torch.where(valid, cols, 0)
            src, units, inner = xf, c // xf.shape[1], c % xf.shape[1]
        else:
            valid = cols < seg.a_size
            c = torch.where(valid, cols, 0)
            r = seg.right.shape[0]
            if "xb" not in shared:
                shared["xb"] = xf @ seg.right.T.to(xf)
            src, units, inner = shared["xb"], c // r, c % r
        change = src[:, inner].permute(1, 0, 2) * (vals * valid)[:, None, :]
        return units, change

    def _perturbed(
        self, i: int, local: str, s: int, seg: Segment, candidates: BlockCandidates,
        rows: torch.Tensor, acts: list[torch.Tensor], shared: dict[str, torch.Tensor],
    ) -> torch.Tensor:  # fmt: skip
        """Output of layer ``i`` for candidates ``rows``: ``(n, B, ...)``."""
        layer = self.layers[i]
        fast = isinstance(seg, DirectSegment | LowRankSegment) and local in ("weight", "bias")
        if type(layer) is nn.Linear and fast:
            return self._linear(seg, local, candidates, rows, acts[i], acts[i + 1], shared)
        base = layer.get_parameter(local).detach()
        delta = seg.delta(local_coords(self.subspace, s, candidates, rows)).to(base)

        def run(d: torch.Tensor) -> torch.Tensor:
            return functional_call(layer, {local: base + d}, (acts[i],))

        try:
            return torch.vmap(run)(delta)
        except Exception:
            return torch.stack([run(d) for d in delta])

    def _linear(
        self, seg: Segment, local: str, candidates: BlockCandidates, rows: torch.Tensor,
        x: torch.Tensor, y: torch.Tensor, shared: dict[str, torch.Tensor],
    ) -> torch.Tensor:  # fmt: skip
        p = self.subspace.block_dim
        d_out = y.shape[-1]
        xf, yf = x.reshape(-1, x.shape[-1]), y.reshape(-1, d_out)
        cols = (candidates.block[rows] * p - seg.start)[:, None]
        cols = (cols + torch.arange(p, device=cols.device)).to(y.device)
        vals = candidates.offset[rows].to(y)
        out = yf.unsqueeze(0).repeat(len(rows), 1, 1)
        if local == "bias":
            valid = cols < d_out
            delta = torch.zeros(len(rows), d_out, dtype=y.dtype, device=y.device)
            delta.scatter_add_(1, torch.where(valid, cols, 0), vals * valid)
            out += delta[:, None, :]
        elif isinstance(seg, DirectSegment):
            valid = cols < seg.numel
            c = torch.where(valid, cols, 0)
            scatter_products(out, xf, c % xf.shape[1], c // xf.shape[1], vals * valid)
        else:
            self._low_rank(seg, out, xf, cols, vals, shared)
        return out.reshape(len(rows), *y.shape)

    @staticmethod
    def _low_rank(
        seg: LowRankSegment, out: torch.Tensor, xf: torch.Tensor, cols: torch.Tensor,
        vals: torch.Tensor, shared: dict[str, torch.Tensor],
    ) -> None:  # fmt: skip
        a, e = seg.a_size, seg.e_size
        in_a = cols < a
        if a and bool(in_a.any()):
            if "xb" not in shared:
                shared["xb"] = xf @ seg.right.T.to(xf)
            r = seg.right.shape[0]
            c = torch.where(in_a, cols, 0)
            scatter_products(out, shared["xb"], c % r, c // r, vals * in_a)
        in_e = (cols >= a) & (cols < a + e)
        if e and bool(in_e.any()):
            hit = torch.nonzero(in_e.any(dim=1)).flatten()
            c = torch.where(in_e, cols - a, 0)[hit]
            u = xf.new_zeros(len(hit), xf.shape[0], seg.left.shape[1])
            scatter_products(u, xf, c % seg.d_in, c // seg.d_in, (vals * in_e)[hit])
            out.index_add_(0, hit, u @ seg.left.T.to(xf))
