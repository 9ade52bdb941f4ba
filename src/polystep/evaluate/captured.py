"""Captured fast path for models as users write them: a ``torch.fx`` graph, unit-sparse candidates.

Most users write their own ``nn.Module`` (a Python loop over time steps in ``forward``), not an
``nn.Sequential``. The forward is captured as a graph and, for each linear-like module ``L``
whose parameters the subspace searches, the nodes a candidate changes are found
(:mod:`polystep.evaluate.graph`). A candidate moves one block of one parameter of ``L``, hence
``k`` output units of ``L`` (one for a factored row), or all of them.

1. One plain run of the graph gives every node's incumbent value, shared by all candidates.
2. Up to the next linear-like module a changed value is held *folded*: the node's incumbent
   shape with the last dim replaced by the candidates' touched units side by side,
   ``(..., n·k)``. The user's ops run unchanged on folded tensors (clean operands of width ``d``
   are gathered to the same columns), so a candidate costs its ``k`` units through the loop.
3. The next linear-like module gets a rank-``k`` update; from there every unit changes. With a
   per-sample cross-entropy only the ``(candidate, sample)`` pairs whose inputs changed there
   run on (as rows in the batch dim; the others keep the incumbent's per-sample loss), else
   every sample does, folded ``(..., n·d)``.

Where the nodes of a module spell a hard-LIF loop as users write it (:mod:`polystep.evaluate.loops`)
and the loss is a per-sample cross-entropy, steps 2-3 are instead one call of the fused kernel
:class:`~polystep.nn.SpikingMLP` gets (:mod:`polystep.evaluate.fused`); :attr:`path` says which
modules got it and why the others did not.

Parameters the analysis refuses (its reason names the node) go to the vmap evaluator, said once
(``strict``: an error instead); so does a matched loop whose kernel cannot run.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch
from torch import fx, nn
from torch.func import functional_call

from polystep.blocks import BlockCandidates
from polystep.evaluate.base import (
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
from polystep.evaluate.events import per_sample_cross_entropy, rank_update
from polystep.evaluate.fused import Suffix, fused_suffix
from polystep.evaluate.graph import (
    DIRTY,
    NotCapturable,
    Plan,
    batch_dims,
    capture,
    pairs_problem,
    parameter_sites,
    plan_module,
    run_graph,
    shape_problem,
)
from polystep.evaluate.layered import CPU_CHUNK_ELEMENTS, FallbackError, LayeredEvaluator
from polystep.evaluate.loops import Chain, Match, match_suffix
from polystep.evaluate.traits import Traits, UnitKernel, traits_of
from polystep.evaluate.units import dedupe_slots, linear_weight
from polystep.subspace.segments import Segment

CHUNK_ELEMENTS = 2**16  # elements of the widest activation of a chunk, all units (cache-sized)


def _first_slots(units: torch.Tensor) -> torch.Tensor:
    """``(n, k)`` bool: the slot that carries each distinct unit of a candidate (the first)."""
    k = units.shape[1]
    same = units[:, :, None] == units[:, None, :]
    earlier = torch.ones(k, k, dtype=torch.bool, device=units.device).tril(-1)
    return ~(same & earlier).any(dim=2)


def _map_args(node: fx.Node, fn: Callable[[Any], Any]) -> tuple[tuple, dict]:
    """``node``'s args and kwargs with ``fn`` applied to every leaf (flat args: no recursion)."""
    if not node.kwargs and not any(isinstance(a, (tuple, list, dict)) for a in node.args):
        return tuple(fn(a) for a in node.args), {}
    return fx.node.map_aggregate(node.args, fn), fx.node.map_aggregate(node.kwargs, fn)


def _gather(t: Any, idx: torch.Tensor, d: int) -> Any:
    """A clean operand aligned with folded columns ``idx``: gathered when it spans the unit
    dim ``d``, as is when it broadcasts along it (or is not a tensor)."""
    if not isinstance(t, torch.Tensor) or t.ndim == 0 or t.shape[-1] != d or d == 1:
        return t
    return t.index_select(-1, idx)


Step = Callable[["_Chunk"], None]


def compile_steps(plan: Plan, phase: str) -> list[Step]:
    """The nodes of one phase of ``plan`` as calls with their operands resolved once:
    ``"units"`` (the touched units, sources excluded), ``"folded"`` (every unit, every
    sample) or ``"pairs"`` (every unit, the changed pairs; boundaries excluded)."""
    *body, _ = plan.dirty
    sources, boundary = set(plan.sources), set(plan.boundary)
    if phase == "units":
        nodes = [n for n in body if n not in plan.full and n not in sources]
    else:
        nodes = [n for n in body if n in plan.full and (phase == "folded" or n not in boundary)]
    return [_compile(plan, node, phase) for node in nodes]


def _compile(plan: Plan, node: fx.Node, phase: str) -> Step:
    flat = not node.kwargs and not any(isinstance(a, (tuple, list, dict)) for a in node.args)
    if node.op == "call_module" or not flat:  # the general path
        if phase == "pairs":
            return lambda st: st.run_pairs(node, st.dims)
        return lambda st: st.run(node)
    full = node in plan.full
    getters = [_getter(plan, a, phase, full) for a in node.args]
    fn = node.target if node.op == "call_function" else getattr(torch.Tensor, node.target)

    def step(st: _Chunk) -> None:
        st.vals[node] = fn(*[get(st, node) for get in getters])

    return step


def _getter(plan: Plan, a: Any, phase: str, full: bool) -> Callable[[Any, fx.Node], Any]:
    """How ``step`` reads operand ``a`` of a node in ``phase``."""
    if not isinstance(a, fx.Node):
        return lambda st, node: a
    if plan.kind.get(a) == DIRTY:
        if phase == "pairs" and a not in plan.full:
            return lambda st, node: st.to_pairs(st.widen(a), st.dims[a])
        if full and a not in plan.full:
            return lambda st, node: st.widen(a)
        return lambda st, node: st.vals[a]
    if phase == "pairs":
        return lambda st, node: st.clean_rows(a)
    if full:
        return lambda st, node: _gather(
            st.env[a], st.index(st.env[node].shape[-1]), st.env[node].shape[-1]
        )
    return lambda st, node: _gather(st.env[a], st.flat_units, st.env[node].shape[-1])


class _Chunk:
    """Folded values of the dirty nodes of ``plan`` for ``n`` candidates.

    ``units (n, k)`` are the source module's touched units; a candidate with fewer distinct
    units repeats one in a later slot with no change (:func:`dedupe_slots`). Node values are
    ``(..., n·k)`` up to the next linear-like module (those units only), ``(..., n·d)`` after
    it (every unit: ``plan.full``).
    """

    def __init__(
        self, gm: fx.GraphModule, plan: Plan, env: dict[fx.Node, Any], units: torch.Tensor
    ) -> None:
        self.gm, self.plan, self.env, self.units = gm, plan, env, units
        self.n = int(units.shape[0])
        self.flat_units = units.flatten()
        self.vals: dict[fx.Node, torch.Tensor] = {}
        self.dims: dict[fx.Node, int | None] = {}

    def index(self, d: int | None) -> torch.Tensor:
        """Folded column -> unit: the touched units (None), or all ``d`` of each candidate."""
        if d is None:
            return self.units.flatten()
        return torch.arange(d, device=self.units.device).repeat(self.n)

    def widen(self, node: fx.Node) -> torch.Tensor:
        """``node``'s folded value with every unit: the incumbent's where none was touched."""
        val, inc = self.vals[node], self.env[node]
        if node in self.plan.full:
            return val
        n, d = self.n, inc.shape[-1]
        out = inc.unsqueeze(-2).expand(*inc.shape[:-1], n, d).reshape(*inc.shape[:-1], n * d)
        pos = self.units + torch.arange(n, device=self.units.device)[:, None] * d
        slots = torch.nonzero(_first_slots(self.units).flatten()).flatten()
        out = out.clone()
        out[..., pos.flatten()[slots]] = val[..., slots]
        return out

    def operand(self, a: Any, full: bool, d: int) -> Any:
        if not isinstance(a, fx.Node):
            return a
        if self.plan.kind.get(a) == DIRTY:
            return self.widen(a) if full else self.vals[a]
        return _gather(self.env[a], self.index(d if full else None), d)

    def source(self, node: fx.Node, change: torch.Tensor) -> None:
        """The perturbed module's output on the touched units: incumbent + ``change (n, M, k)``."""
        y = self.env[node]
        base = _gather(y, self.index(None), y.shape[-1]).reshape(-1, self.units.numel())
        folded = base + change.permute(1, 0, 2).reshape(base.shape[0], -1)
        self.vals[node] = folded.reshape(*y.shape[:-1], -1)

    def elementwise(self, node: fx.Node) -> None:
        """The user's op, unchanged, on folded operands (clean ones gathered to the columns)."""
        full = node in self.plan.full
        d = self.env[node].shape[-1]
        args, kwargs = _map_args(node, lambda a: self.operand(a, full, d))
        if node.op == "call_function":
            self.vals[node] = node.target(*args, **kwargs)
        else:
            self.vals[node] = getattr(args[0], node.target)(*args[1:], **kwargs)

    def run(self, node: fx.Node) -> None:
        if node.op == "call_module":
            self.module(node)
        else:
            self.elementwise(node)

    def module(self, node: fx.Node) -> None:
        (src,) = node.all_input_nodes
        m = self.gm.get_submodule(node.target)
        if not traits_of(m).linear:
            self.vals[node] = m(self.vals[src])  # unit-wise: output unit f sees only unit f
        elif src in self.plan.full:
            self.vals[node] = m(self.vals[src].unflatten(-1, (self.n, -1))).flatten(-2)
        else:  # k units moved: a rank-k update of the incumbent output
            new = self.vals[src].unflatten(-1, (self.n, -1))  # (..., n, k)
            old = _gather(self.env[src], self.index(None), self.env[src].shape[-1])
            diff = new - old.unflatten(-1, (self.n, -1))
            w = linear_weight(m).T[self.units].to(diff)  # (n, k, d_out)
            out = self.env[node].unsqueeze(-2) + diff[..., 0:1] * w[:, 0]
            for s in range(1, diff.shape[-1]):
                out = out + diff[..., s : s + 1] * w[:, s]
            self.vals[node] = out.flatten(-2)

    def outputs(self, node: fx.Node) -> torch.Tensor:
        """The network's outputs ``(n, *shape)``."""
        (src,) = node.all_input_nodes
        return self.widen(src).unflatten(-1, (self.n, -1)).movedim(-2, 0)

    # -- event-driven: only the (candidate, sample) pairs that a boundary changes ---------------
    def find_pairs(self, dims: dict[fx.Node, int | None], batch: int, cache: dict) -> None:
        """The pairs ``(c, b)`` where some boundary's input changed (``self.c``, ``self.b``),
        and every boundary's output rows for them: the boundaries of one module on inputs of
        one shape (a time loop) are stacked and updated at once."""
        if "groups" not in cache:
            groups: dict[tuple, list[fx.Node]] = {}
            for node in self.plan.boundary:
                src = node.args[0]
                shapes = tuple(self.env[src].shape), tuple(self.env[node].shape)
                groups.setdefault((node.target, dims[src], *shapes), []).append(node)
            cache["groups"] = groups
        groups = cache["groups"]
        n = self.n
        changed = torch.zeros(n, batch, dtype=torch.bool, device=self.units.device)
        diffs = []
        for key, nodes in groups.items():
            bd = key[1]
            if key not in cache:  # incumbent inputs and outputs, batch second: (G, B, *R, d)
                old = torch.stack([self.env[x.args[0]].movedim(bd, 0) for x in nodes])
                out = torch.stack([self.env[x].movedim(bd, 0) for x in nodes])
                cache[key] = (old, out)
            old = _gather(cache[key][0], self.index(None), key[2][-1])
            new = torch.stack([self.vals[x.args[0]].movedim(bd, 0) for x in nodes])
            diff = (new - old).unflatten(-1, (n, -1))  # (G, B, *R, n, k)
            hit = diff.ne(0).any(dim=(0, *range(2, diff.ndim - 2), diff.ndim - 1))  # (B, n)
            changed |= hit.T
            diffs.append(diff.movedim(-2, 2))  # (G, B, n, *R, k)
        for node in self.plan.mixed:  # a skip around the boundary changes samples too
            old = _gather(self.env[node], self.index(None), self.env[node].shape[-1])
            moved = (self.vals[node] - old).movedim(dims[node], 0)
            changed |= moved.reshape(batch, -1, n, self.units.shape[1]).ne(0).any(3).any(1).T
        self.pair = torch.nonzero(changed.flatten()).flatten()
        self.c, self.b = self.pair // batch, self.pair % batch
        m = len(self.pair)
        for (key, nodes), diff in zip(groups.items(), diffs, strict=True):
            d = diff[:, self.b, self.c]  # (G, m, *R, k)
            w = linear_weight(self.gm.get_submodule(key[0])).T.to(d)[self.units]
            w = w.index_select(0, self.c)  # (m, k, d_out): each pair's units' columns
            w = w.reshape(m, *[1] * (d.ndim - 3), *w.shape[1:])
            out = rank_update(cache[key][1].index_select(1, self.b), d, w)  # (G, m, *R, d_out)
            for g, node in enumerate(nodes):
                self.vals[node] = out[g].movedim(0, key[1])

    def to_pairs(self, t: torch.Tensor, bd: int) -> torch.Tensor:
        """Rows of the pairs from ``(..., n·w)`` folded values with batch dim ``bd``."""
        moved = t.movedim(bd, 0).unflatten(-1, (self.n, -1)).movedim(-2, 0)  # (n, B, *R, w)
        rows = moved.reshape(-1, *moved.shape[2:]).index_select(0, self.pair)
        return rows.movedim(0, bd)

    def clean_rows(self, a: fx.Node) -> Any:
        """A clean operand on the rows of the pairs (as is without a batch dim)."""
        value, bd = self.env[a], self.dims.get(a)
        return value if bd is None else value.index_select(bd, self.b)

    def pair_operand(self, a: Any, dims: dict[fx.Node, int | None]) -> Any:
        if not isinstance(a, fx.Node):
            return a
        if self.plan.kind.get(a) == DIRTY:
            if a in self.plan.full:
                return self.vals[a]
            return self.to_pairs(self.widen(a), dims[a])
        return self.clean_rows(a)

    def run_pairs(self, node: fx.Node, dims: dict[fx.Node, int | None]) -> None:
        """``node`` on the rows of the pairs (its batch dim holds them)."""
        args, kwargs = _map_args(node, lambda a: self.pair_operand(a, dims))
        if node.op == "call_module":
            self.vals[node] = self.gm.get_submodule(node.target)(*args, **kwargs)
        elif node.op == "call_function":
            self.vals[node] = node.target(*args, **kwargs)
        else:
            self.vals[node] = getattr(args[0], node.target)(*args[1:], **kwargs)


class _Neuron:
    """Stand-in layer of a matched loop for :func:`fused_suffix`: its kernel, nothing else."""

    def __init__(self, kernel: UnitKernel) -> None:
        self.polystep_traits = Traits(batchwise=True, unitwise=True, kernel=kernel)


_COUNT = _Neuron(UnitKernel("count"))


@dataclass
class _FusedRun:
    """One evaluation's fused suffix of a module: the kernel call, the module's input
    ``(B, d_in)`` or ``(T, B, d_in)`` the candidates' changes are computed on, candidates per
    chunk."""

    suffix: Suffix
    rows: torch.Tensor
    chunk: int


@dataclass(eq=False, repr=False, kw_only=True)
class CapturedEvaluator(Evaluator):
    """See the module docstring. ``strict``: any candidate sent to vmap is an error.
    ``fused``: False keeps the eager suffix where a hard-LIF loop matches (the reference)."""

    name = "captured"

    strict: bool = False
    fused: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        self.strict = bool(self.strict)
        self.fused = bool(self.fused)
        self.graph = capture(self.model)
        names = list(self.subspace.layout.names)
        sites, refused = parameter_sites(self.graph, names)
        self.plans: dict[str, Plan] = {}
        by_module: dict[str, Plan | str] = {}
        for name, owner in sites.items():
            if owner not in by_module:
                try:
                    by_module[owner] = plan_module(self.graph, owner)
                except NotCapturable as exc:
                    by_module[owner] = str(exc)
            plan = by_module[owner]
            if isinstance(plan, Plan):
                self.plans[name] = plan
            else:
                refused[name] = plan
        self.refused = refused
        if not self.plans:
            first = next(iter(refused.values()), "the model has no parameters")
            raise NotCapturable(f"no parameter can take the captured path: {first}")
        self.fallback_reason: str | None = None
        self._vmap: VmapEvaluator | None = None
        self._checked: set[tuple[int, ...]] = set()
        self._dims: dict[tuple[int, ...], dict[fx.Node, int | None]] = {}
        self._output = next(n for n in self.graph.graph.nodes if n.op == "output")
        self._compiled: dict[tuple[str, str], list[Step]] = {}
        self.pairs_run = 0  # (candidate, sample) pairs run past the touched units ...
        self.pairs_dense = 0  # ... out of this many
        self.fused_candidates = 0  # candidates scored by a fused kernel
        self.matches: dict[str, Match | Chain] = {}  # module -> the hard-LIF suffix it spells
        self.eager: dict[str, str] = {}  # module -> why its candidates take the eager suffix
        for plan in {p.module: p for p in self.plans.values()}.values():
            found = match_suffix(self.graph, plan) if self.fused else "fused kernels turned off"
            if not isinstance(found, str):
                self.matches[plan.module] = found
            else:
                self.eager[plan.module] = found
        if refused:
            name, why = next(iter(refused.items()))
            self._fall_back(f"{len(refused)} of {len(names)} parameters run on vmap: {why}")

    @property
    def path(self) -> str:
        """Which suffix each module's unit-sparse candidates take, and why (one line)."""
        modules = sorted({p.module for p in self.plans.values()})
        fused = [f"{m} ({self.matches[m].kind})" for m in modules if m in self.matches]
        eager = [f"{m}: {self.eager[m]}" for m in modules if m not in self.matches]
        parts = ["fused hard-LIF kernel for " + ", ".join(fused)] if fused else []
        return "; ".join(parts + (["eager suffix for " + "; ".join(eager)] if eager else []))

    def _fall_back(self, reason: str) -> None:
        """Announce (once) that some candidates take the vmap path; an error when strict."""
        if self.strict:
            raise FallbackError(f"captured evaluator: {reason}")
        if self.fallback_reason is None:
            self.fallback_reason = reason
            warnings.warn(f"captured evaluator: {reason}", RuntimeWarning, stacklevel=3)

    def _refuse(self, name: str, reason: str) -> None:
        self.plans.pop(name, None)
        self.refused[name] = reason
        self._fall_back(f"parameter {name!r} runs on vmap: {reason}")

    def evaluate(self, candidates: BlockCandidates, batch: Batch) -> torch.Tensor:
        inputs, targets = batch
        if not isinstance(inputs, torch.Tensor):
            for name in list(self.plans):
                self._refuse(name, f"inputs are a {type(inputs).__name__}, not a tensor")
            return self._vmap_losses(candidates, torch.arange(len(candidates)), batch)
        device = candidates.block.device
        losses = torch.empty(len(candidates), dtype=torch.float64, device=device)
        shared: dict = {}
        kernel_tasks: list[Callable[[], tuple[torch.Tensor, int]]] = []
        kernel_rows: list[torch.Tensor] = []
        with evaluation_mode(self.model):
            env = run_graph(self.graph, inputs)
            self._check(env, inputs)
            dims = self._dims[tuple(inputs.shape)]
            out = env[self._output]
            per_sample = dims.get(self._output) == 0 and out.ndim == 2
            per_sample = per_sample and _plain_cross_entropy(self.loss_fn, out[None], targets)
            base = per_sample_cross_entropy(out, targets) if per_sample else None
            for s, rows in segment_groups(self.subspace, candidates):
                seg = self.subspace.segments[s]
                plan = self.plans.get(seg.name)
                if plan is None:
                    losses[rows] = self._vmap_losses(candidates, rows, batch).to(losses)
                    continue
                p = self.subspace.block_dim
                cols = (candidates.block[rows] * p - seg.start)[:, None]
                cols = cols + torch.arange(p, device=device)
                sparse = seg.unit_sparse(cols).to(device)
                run = self._fused_run(plan, env, dims, base, shared)
                for unit_sparse in (True, False):
                    group = rows[sparse == unit_sparse]
                    if not len(group):
                        continue
                    if unit_sparse and run is not None:
                        cache = shared.setdefault((s, "fused"), {})
                        for chunk in chunks(group, self.chunk_size or run.chunk):
                            kernel_tasks.append(partial(
                                self._fused_losses, plan, run, seg, candidates, chunk, targets,
                                cache, base,
                            ))  # fmt: skip
                            kernel_rows.append(chunk)
                        continue
                    per = self._per_candidate(plan, env, p if unit_sparse else None)
                    for chunk in chunks(group, self.chunk_size or max(1, CHUNK_ELEMENTS // per)):
                        pairs = plan.pairs[tuple(inputs.shape)]
                        losses[chunk] = self._chunk_losses(
                            plan, seg, s, candidates, chunk, env, targets, unit_sparse, shared,
                            dims, base if pairs else None,
                        )  # fmt: skip
            sizes = [len(chunk) for chunk in kernel_rows]  # kernel chunks: n threads, n at once
            pooled = [True] * len(kernel_tasks)
            done = LayeredEvaluator._run(kernel_tasks, pooled, device, sizes, None)
        for chunk, (value, pairs) in zip(kernel_rows, done, strict=True):
            losses[chunk] = value
            self.fused_candidates += len(chunk)
            self.pairs_run += pairs
            self.pairs_dense += len(chunk) * len(base)  # type: ignore[arg-type]
        return losses

    def _vmap_losses(
        self, candidates: BlockCandidates, rows: torch.Tensor, batch: Batch
    ) -> torch.Tensor:
        if self._vmap is None:
            self._vmap = VmapEvaluator(
                self.model, self.loss_fn, self.subspace, chunk_size=self.chunk_size
            )
        some = BlockCandidates(candidates.block[rows], candidates.offset[rows], candidates.dim)
        return self._vmap.evaluate(some, batch)

    def _check(self, env: dict[fx.Node, Any], inputs: torch.Tensor) -> None:
        """Once per input shape: the graph reproduces the model's forward, and in every plan each
        dirty node keeps the unit dim last and each operand spans it or broadcasts along it."""
        key = tuple(inputs.shape)
        if key in self._checked:
            return
        out = env[next(n for n in self.graph.graph.nodes if n.op == "output")]
        mine = self.model(inputs)
        if not (isinstance(mine, torch.Tensor) and isinstance(out, torch.Tensor)) or not (
            torch.equal(out, mine)
        ):
            for name in list(self.plans):
                self._refuse(name, "the traced graph does not reproduce the model's forward")
        for name, plan in list(self.plans.items()):
            why = shape_problem(self.graph, plan, env)
            if why is not None:
                self._refuse(name, why)
        dims = batch_dims(self.graph, inputs)
        for plan in self.plans.values():
            plan.pairs[key] = pairs_problem(self.graph, plan, env, dims) is None
        self._dims[key] = dims
        self._checked.add(key)

    @staticmethod
    def _per_candidate(plan: Plan, env: dict[fx.Node, Any], k: int | None) -> int:
        """Elements per candidate of the widest folded activation (``k`` units, None: all)."""
        widest = 1
        for node in plan.dirty[:-1]:
            value = env[node]
            full = node in plan.full or k is None
            widest = max(widest, value.numel() if full else value.numel() // value.shape[-1] * k)
        return widest

    def _fused_run(
        self, plan: Plan, env: dict[fx.Node, Any], dims: dict[fx.Node, int | None],
        base: torch.Tensor | None, shared: dict,
    ) -> _FusedRun | None:  # fmt: skip
        """The fused suffix of ``plan``'s module for this evaluation (None: the eager one)."""
        if plan.module not in self.matches or base is None:
            return None
        key = ("fused", plan.module)
        if key not in shared:
            shared[key] = self._build_fused(plan, self.matches[plan.module], env, dims)
        return shared[key]

    def _build_fused(
        self, plan: Plan, match: Match | Chain, env: dict[fx.Node, Any],
        dims: dict[fx.Node, int | None],
    ) -> _FusedRun | None:  # fmt: skip
        """The layers and activations the SNN kernels read: a chain's own, or from the loop's
        node values: a static current ``(B, F)`` when every step calls the module on one
        input, else ``(T, B, F)``; spikes and the next module's outputs ``(T, B, ·)``; counts
        ``(B, O)``."""
        if isinstance(match, Chain):
            layers = [self.graph.get_submodule(n.target) for n in match.nodes]
            acts = [env[match.nodes[0].args[0]], *(env[n] for n in match.nodes)]
            return self._kernel_run(plan, match.kind, layers, acts, None)
        first = match.first
        inputs = [c.args[0] for c in first.currents]
        static = len(set(inputs)) == 1
        nodes = [*first.currents, *(match.spikes[m] for m in first.mems), match.count]
        x = env[inputs[0]] if static else torch.stack([env[a] for a in inputs])
        pre = env[first.currents[0]] if static else torch.stack([env[c] for c in first.currents])
        layers = [self.graph.get_submodule(plan.module), _Neuron(_lif(first))]
        acts = [x, pre, torch.stack([env[match.spikes[m]] for m in first.mems])]
        if match.top is not None:
            top = match.top
            nodes += [*top.currents, *(match.spikes[m] for m in top.mems)]
            layers += [self.graph.get_submodule(top.currents[0].target), _Neuron(_lif(top))]
            acts.append(torch.stack([env[c] for c in top.currents]))
            acts.append(torch.stack([env[match.spikes[m]] for m in top.mems]))
        layers.append(_COUNT)
        acts.append(env[match.count])
        why = _loop_problem(match, acts, static, [(env[n], dims.get(n)) for n in nodes])
        return self._kernel_run(plan, match.kind, layers, acts, why)

    def _kernel_run(
        self, plan: Plan, kind: str, layers: list[Any], acts: list[torch.Tensor], why: str | None
    ) -> _FusedRun | None:
        """:func:`fused_suffix` on ``layers``, ``acts`` (``why``: the loop cannot have it)."""
        j = 2 if kind == "snn_hidden" else 3  # the next linear layer, or the output
        if why is None:
            suffix, why = fused_suffix(layers, acts, 0, j)
            if why is not None:
                why = f"fused candidate kernel unavailable: {why}"
            elif suffix is None:
                self.eager[plan.module] = "the fused kernels do not serve its shapes or dtype"
                del self.matches[plan.module]
                return None
        if why is not None:
            self.eager[plan.module] = why
            del self.matches[plan.module]
            self._fall_back(f"module {plan.module!r} takes the eager suffix: {why}")
            return None
        p = self.subspace.block_dim
        per = p * max(a.numel() // a.shape[-1] for a in acts[1 : j + 1])
        widest = max([per, *(a.numel() for a in acts[j + 1 :])])
        return _FusedRun(suffix, acts[0], max(1, CPU_CHUNK_ELEMENTS // widest))  # type: ignore[arg-type]

    def _fused_losses(
        self, plan: Plan, run: _FusedRun, seg: Segment, candidates: BlockCandidates,
        rows: torch.Tensor, targets: Any, cache: dict, base: torch.Tensor,
    ) -> tuple[torch.Tensor, int]:  # fmt: skip
        """Losses ``(n,)`` float64 of unit-sparse candidates ``rows`` by the fused kernel, and
        the (candidate, sample) pairs it re-ran (only reads the model: runs on any thread)."""
        module = self.graph.get_submodule(plan.module)
        p = self.subspace.block_dim
        cols = (candidates.block[rows] * p - seg.start)[:, None]
        cols = cols + torch.arange(p, device=cols.device)
        vals = candidates.offset[rows].to(run.rows)
        local = seg.name.rpartition(".")[2]
        units, change = _unit_change(module, local, seg, run.rows, cols, vals, cache)
        return run.suffix(units, change, targets, base)

    def _steps(self, plan: Plan, phase: str) -> list[Step]:
        key = (plan.module, phase)
        if key not in self._compiled:
            self._compiled[key] = compile_steps(plan, phase)
        return self._compiled[key]

    def _chunk_losses(
        self, plan: Plan, seg: Segment, s: int, candidates: BlockCandidates, rows: torch.Tensor,
        env: dict[fx.Node, Any], targets: Any, unit_sparse: bool, shared: dict,
        dims: dict[fx.Node, int | None], base_losses: torch.Tensor | None,
    ) -> torch.Tensor:  # fmt: skip
        """Losses ``(n,)`` float64 of candidates ``rows`` of segment ``s`` (all unit-sparse or
        none). With ``base_losses`` (the incumbent's per-sample cross-entropy) only the pairs
        that change run past the touched units."""
        module = self.graph.get_submodule(plan.module)
        local = seg.name.rpartition(".")[2]
        changes: dict[fx.Node, torch.Tensor] = {}
        by_input: dict[fx.Node, tuple[torch.Tensor, torch.Tensor]] = {}
        for src in plan.sources:
            x_node = src.args[0]
            if x_node not in by_input:
                x = env[x_node]
                if unit_sparse:
                    p = self.subspace.block_dim
                    cols = (candidates.block[rows] * p - seg.start)[:, None]
                    cols = cols + torch.arange(p, device=cols.device)
                    vals = candidates.offset[rows].to(x)
                    cache = shared.setdefault((s, x_node), {})
                    by_input[x_node] = _unit_change(module, local, seg, x, cols, vals, cache)
                else:
                    coords = local_coords(self.subspace, s, candidates, rows)
                    by_input[x_node] = _dense_change(module, local, seg, coords, x, env[src])
            units, changes[src] = by_input[x_node]
        state = _Chunk(self.graph, plan, env, units)
        state.dims = dims
        output = plan.dirty[-1]
        done: dict[fx.Node, fx.Node] = {}  # a source per input: equal inputs, equal outputs
        for node in plan.sources:
            twin = done.setdefault(node.args[0], node)
            if twin is node:
                state.source(node, changes[node])
            state.vals[node] = state.vals[twin]
        for step in self._steps(plan, "units"):  # nothing here depends on a full node
            step(state)
        if base_losses is not None and plan.full:  # the rest on the changed pairs only
            state.find_pairs(dims, len(base_losses), shared.setdefault(("pairs", s), {}))
            for step in self._steps(plan, "pairs"):
                step(state)
            out = state.vals[output.args[0]]
            moved = per_sample_cross_entropy(out, targets.index_select(0, state.b))
            total = torch.zeros(state.n, dtype=torch.float64, device=out.device)
            total.index_add_(0, state.c, (moved - base_losses[state.b]).double())
            self.pairs_run += len(state.pair)
            self.pairs_dense += state.n * len(base_losses)
            return (total + base_losses.double().sum()) / len(base_losses)
        for step in self._steps(plan, "folded"):
            step(state)
        return per_candidate_loss(self.loss_fn, state.outputs(output), targets).double()


def _lif(loop: Any) -> UnitKernel:
    return UnitKernel("lif", (loop.beta, loop.threshold))


def _loop_problem(
    match: Match, acts: list[torch.Tensor], static: bool,
    values: list[tuple[Any, int | None]],
) -> str | None:  # fmt: skip
    """Why the kernels cannot stand in for the matched loops on these values, or None: every
    loop value must be ``(batch, units)`` of one dtype, and the kernels' neuron
    (:func:`~polystep.nn.spiking.hard_lif`) must give the graph's spikes and counts."""
    from polystep.nn.spiking import hard_lif  # polystep.nn imports this package

    if any(not isinstance(v, torch.Tensor) or v.ndim != 2 or d != 0 for v, d in values):
        return "a loop value is not (batch, units)"
    if len({a.dtype for a in acts[1:]}) != 1:
        return "the loop's values differ in dtype"
    loops = [(match.first, acts[1], acts[2])]
    if match.top is not None:
        loops.append((match.top, acts[3], acts[4]))
    for k, (loop, current, spikes) in enumerate(loops):
        steps = len(loop.mems)
        own = hard_lif(current if static and k == 0 else None, current, loop.beta,
                       loop.threshold, steps)  # fmt: skip
        if not torch.equal(own, spikes):
            return "the graph's spikes are not those of the kernels' neuron"
    if not torch.equal(loops[-1][2].sum(dim=0), acts[-1]):
        return "the count returned is not the sum of the spikes"
    return None


def _unit_change(
    module: nn.Module, local: str, seg: Segment, x: torch.Tensor, cols: torch.Tensor,
    vals: torch.Tensor, shared: dict,
) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """Touched units ``(n, k)`` (deduplicated) and their output change ``(n, M, k)``."""
    xf = x.reshape(-1, x.shape[-1])
    traits = traits_of(module)
    if traits.plain_linear:
        return dedupe_slots(*seg.unit_change(xf, cols, vals, shared))
    units, rows_delta = seg.unit_rows(cols, vals)  # mapped weights: f(W_u + dW_u) - f(W_u)
    units, rows_delta = dedupe_slots(units, rows_delta.transpose(1, 2))
    old = module.get_parameter(local).detach()[units]
    if local == "bias":
        moved = traits.bias_map(old + rows_delta[:, 0, :]) - traits.bias_map(old)
        return units, moved[:, None, :].expand(-1, xf.shape[0], -1)
    moved = traits.weight_map(old + rows_delta.transpose(1, 2)) - traits.weight_map(old)
    return units, torch.einsum("md,nkd->nmk", xf, moved)


def _dense_change(
    module: nn.Module, local: str, seg: Segment, coords: torch.Tensor, x: torch.Tensor,
    y: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """Every unit of the module's output moves: units ``(n, d)`` and change ``(n, M, d)``."""
    base = module.get_parameter(local).detach()
    delta = seg.delta(coords).to(base)
    out = torch.vmap(lambda dw: functional_call(module, {local: base + dw}, (x,)))(delta)
    n, d = delta.shape[0], y.shape[-1]
    return torch.arange(d, device=y.device).expand(n, d), (out - y).reshape(n, -1, d)
