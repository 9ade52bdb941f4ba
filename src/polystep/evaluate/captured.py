"""Captured fast path for models as users write them: a ``torch.fx`` graph, unit-sparse candidates.

Most users write their own ``nn.Module`` (a Python loop over time steps in ``forward``, not an
``nn.Sequential``). ``torch.fx.symbolic_trace`` turns such a ``forward`` into a graph (a loop
over a constant ``T`` is unrolled); modules with polystep traits and torch's own layers stay
single call nodes. A candidate moves one block of one parameter of a linear-like module ``L``
(``nn.Linear``, or a layer declaring ``weight_map``); every call of ``L`` is a *source*.

Each node is classified for ``L`` (:func:`plan_module`):

* *clean*: does not depend on ``L``'s output (or only on its shape): the incumbent's value;
* *dirty*: depends on it through ops that act on each unit (last-dim feature) separately:
  elementwise ops with broadcasting (``+ - * /``, comparisons, casts, ``where``, ``clamp``,
  activations, ...), unit-wise modules, and linear-like modules (whose output then differs in
  every unit).

A dirty value is held *folded*: the node's incumbent shape with the last dim replaced by the
candidates' columns side by side, ``(..., n·w)``: ``w = k`` touched units of ``L`` (a factored
candidate moves one hidden unit) until the next linear-like module, whose output then gets a
rank-``k`` update (``w`` = its width) and is dense from there. Every op of the user's graph runs
unchanged on folded tensors (clean operands of width ``d`` are gathered to the same columns),
so a candidate costs its ``k`` units through the loop plus the layers above, batched over the
chunk. Whatever the analysis cannot prove unit-wise (a normalisation across units, indexing,
an in-place op, a parameter used outside a module call, a recurrence through ``L``) is refused,
naming the node; those parameters' candidates go to the vmap evaluator, said once
(``strict``: an error instead).
"""

from __future__ import annotations

import contextlib
import functools
import operator
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import fx, nn
from torch.func import functional_call
from torch.nn import functional as F

from polystep.blocks import BlockCandidates
from polystep.evaluate.base import (
    Batch,
    Evaluator,
    LossFn,
    _plain_cross_entropy,
    chunks,
    evaluation_mode,
    local_coords,
    per_candidate_loss,
    segment_groups,
)
from polystep.evaluate.batched import VmapEvaluator
from polystep.evaluate.events import per_sample_cross_entropy, rank_update
from polystep.evaluate.layered import FallbackError
from polystep.evaluate.traits import is_batchwise, traits_of
from polystep.evaluate.units import dedupe_slots, linear_weight
from polystep.subspace.base import Subspace
from polystep.subspace.segments import Segment

CHUNK_ELEMENTS = 2**17  # elements of the widest activation of a chunk, all units (cache-sized)


class NotCapturable(ValueError):
    """The model's forward cannot be captured for the fast path (the message says why)."""


# -- what the analysis accepts ----------------------------------------------------------------
_ELEMENTWISE_FUNCTIONS = {
    *(getattr(operator, n) for n in (
        "add", "sub", "mul", "truediv", "floordiv", "mod", "pow", "neg", "pos", "abs", "ge",
        "gt", "le", "lt", "eq", "ne", "and_", "or_", "xor", "invert",
    )),
    *(getattr(torch, n) for n in (
        "add", "sub", "subtract", "mul", "multiply", "div", "divide", "true_divide",
        "floor_divide", "remainder", "fmod", "pow", "neg", "negative", "abs", "sign", "sgn",
        "exp", "expm1", "log", "log1p", "log2", "sqrt", "rsqrt", "reciprocal", "square", "sin",
        "cos", "tanh", "sigmoid", "relu", "clamp", "clip", "clamp_min", "clamp_max", "maximum",
        "minimum", "fmax", "fmin", "where", "heaviside", "floor", "ceil", "round", "trunc",
        "frac", "ge", "gt", "le", "lt", "eq", "ne", "greater_equal", "greater", "less_equal",
        "less", "not_equal", "logical_and", "logical_or", "logical_not", "logical_xor", "erf",
        "atan", "lerp", "addcmul", "addcdiv", "nan_to_num", "masked_fill",
    )),
    *(getattr(F, n) for n in (
        "relu", "relu6", "leaky_relu", "elu", "selu", "celu", "gelu", "silu", "mish",
        "hardtanh", "hardsigmoid", "hardswish", "softsign", "softplus", "sigmoid", "tanh",
        "threshold", "logsigmoid", "hardshrink", "softshrink", "tanhshrink",
    )),
    torch.special.expit,
}  # fmt: skip
_ELEMENTWISE_METHODS = {
    "add", "sub", "mul", "div", "pow", "neg", "abs", "sign", "exp", "log", "sqrt", "sigmoid",
    "tanh", "relu", "clamp", "clip", "clamp_min", "clamp_max", "maximum", "minimum", "where",
    "heaviside", "floor", "ceil", "round", "trunc", "ge", "gt", "le", "lt", "eq", "ne",
    "logical_and", "logical_or", "logical_not", "masked_fill", "lerp", "addcmul", "reciprocal",
    "square", "float", "double", "half", "bfloat16", "int", "long", "bool", "to", "type_as",
    "clone", "detach", "contiguous",
}  # fmt: skip
# Ops along a dim given as an argument: unit-wise unless that dim is the last (checked on shapes).
_DIM_FUNCTIONS = {torch.stack: 0, torch.cat: 0, torch.sum: None, torch.mean: None}
_DIM_METHODS = {"sum", "mean", "unsqueeze"}
_SHAPE_ATTRS = {"shape", "dtype", "device", "ndim", "is_cuda"}
_SHAPE_METHODS = {"size", "dim", "new_zeros", "new_ones", "new_full", "new_empty"}
_SHAPE_FUNCTIONS = {torch.zeros_like, torch.ones_like, torch.full_like, torch.empty_like}

CLEAN, DIRTY = 0, 1


def _in_place(node: fx.Node) -> bool:
    name = node.target if isinstance(node.target, str) else getattr(node.target, "__name__", "")
    if (
        node.op in ("call_method", "call_function")
        and name.endswith("_")
        and not name.endswith("__")
    ):
        return True
    return node.kwargs.get("inplace") is True


def _shape_only(node: fx.Node) -> bool:
    """The node reads only the shape / dtype / device of its tensor operand."""
    if node.op == "call_function" and node.target is getattr:
        return node.args[1] in _SHAPE_ATTRS
    if node.op == "call_method":
        return node.target in _SHAPE_METHODS
    return node.op == "call_function" and node.target in _SHAPE_FUNCTIONS


def _elementwise(node: fx.Node) -> bool:
    if node.op == "call_function":
        return node.target in _ELEMENTWISE_FUNCTIONS
    return node.op == "call_method" and node.target in _ELEMENTWISE_METHODS


def _along_dim(node: fx.Node) -> bool:
    """Stack / concatenate / sum / mean / unsqueeze along a dim (that must not be the last)."""
    if node.op == "call_function":
        return node.target in _DIM_FUNCTIONS
    return node.op == "call_method" and node.target in _DIM_METHODS


def _dim_arg(node: fx.Node) -> Any:
    if len(node.args) > 1:
        return node.args[1]
    return node.kwargs.get("dim", _DIM_FUNCTIONS.get(node.target))


def _last_dim_literal(node: fx.Node) -> bool:
    """A dim-taking op whose dim is visibly the last one (-1) or every one (None)."""
    if not _along_dim(node):
        return False
    dim = _dim_arg(node)
    dims = dim if isinstance(dim, (tuple, list)) else (dim,)
    return dim is None or any(isinstance(q, int) and q == -1 for q in dims)


def _dim_problem(node: fx.Node, value: torch.Tensor, env: dict[fx.Node, Any]) -> str | None:
    """Why ``node`` (see :func:`_along_dim`) touches the unit dim, or None."""
    dim = (
        node.args[1]
        if len(node.args) > 1
        else node.kwargs.get("dim", _DIM_FUNCTIONS.get(node.target))
    )
    if dim is None or isinstance(dim, fx.Node):
        return f"{_describe(node)} reduces over every dim, the unit dim included"
    reduces = node.target in (torch.sum, torch.mean, "sum", "mean")
    ndim = env[node.args[0]].ndim if reduces else value.ndim
    dims = dim if isinstance(dim, (tuple, list)) else (dim,)
    if any(int(q) % ndim == ndim - 1 for q in dims):
        return f"{_describe(node)} acts along the unit dim"
    return None


class _Tracer(fx.Tracer):
    """Torch's layers and every module that declares polystep traits stay one call node."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        traits = traits_of(m)
        if traits.linear or traits.unitwise or traits.batchwise:
            return True
        return super().is_leaf_module(m, qualname)


_FACTORIES = ("zeros", "ones", "full", "empty")  # sized by the input: x.shape[0] is traced


def _traced_factory(fn: Callable[..., torch.Tensor]) -> Callable[..., Any]:
    """``fn`` (e.g. ``torch.zeros``) that records a node when a size is a traced value."""

    @functools.wraps(fn)
    def factory(*args: Any, **kwargs: Any) -> Any:
        proxies: list[fx.Proxy] = []
        fx.node.map_aggregate(
            (args, kwargs), lambda a: proxies.append(a) if isinstance(a, fx.Proxy) else None
        )
        if not proxies:
            return fn(*args, **kwargs)
        return proxies[0].tracer.create_proxy("call_function", fn, args, kwargs)

    return factory


@contextlib.contextmanager
def _tracing_factories() -> Iterator[None]:
    originals = {name: getattr(torch, name) for name in _FACTORIES}
    try:
        for name, fn in originals.items():
            setattr(torch, name, _traced_factory(fn))
        yield
    finally:
        for name, fn in originals.items():
            setattr(torch, name, fn)


def capture(model: nn.Module) -> fx.GraphModule:
    """``model``'s forward as a graph (traced in eval mode); NotCapturable if fx cannot."""
    flags = {m: m.training for m in model.modules()}
    model.eval()
    try:
        with _tracing_factories():
            graph = _Tracer().trace(model)
    except Exception as exc:  # fx raises many kinds (TraceError, TypeError, ...): all mean "no"
        text = f"{type(exc).__name__}: {exc}".splitlines()[0][:200]
        raise NotCapturable(
            f"torch.fx cannot trace {type(model).__name__}.forward ({text})"
        ) from None
    finally:
        for m, flag in flags.items():
            m.training = flag
    gm = fx.GraphModule(model, graph)
    inputs = [n for n in gm.graph.nodes if n.op == "placeholder"]
    if len(inputs) != 1:
        raise NotCapturable(f"forward takes {len(inputs)} inputs; the captured path needs one")
    for node in gm.graph.nodes:
        if _in_place(node):
            raise NotCapturable(f"node {node.format_node()} is an in-place op")
    return gm


@dataclass
class Plan:
    """How candidates of the linear-like module ``module`` run on the graph."""

    module: str
    sources: list[fx.Node]
    dirty: list[fx.Node]  # in graph order, sources included
    kind: dict[fx.Node, int] = field(default_factory=dict)
    full: set[fx.Node] = field(default_factory=set)  # dirty nodes whose every unit changes
    checked: set[tuple[int, ...]] = field(default_factory=set)  # input shapes validated
    pairs: dict[tuple[int, ...], bool] = field(default_factory=dict)  # per input shape

    @functools.cached_property
    def boundary(self) -> list[fx.Node]:
        """Linear-like calls on the touched units: where every unit starts to change."""
        return [n for n in self.dirty if n in self.full and n.op == "call_module" and (
            n.args[0] not in self.full
        )]  # fmt: skip

    @functools.cached_property
    def mixed(self) -> list[fx.Node]:
        """Touched-unit nodes read directly by a node where every unit changes (a skip)."""
        inner, boundary = set(self.dirty) - self.full, set(self.boundary)
        reads = {a for n in self.full if n not in boundary for a in n.all_input_nodes}
        return [n for n in self.dirty if n in inner and n in reads]


def _describe(node: fx.Node) -> str:
    return f"node {node.name!r} ({node.format_node()})"


def plan_module(gm: fx.GraphModule, module: str) -> Plan:
    """The dirty region of ``module``'s output in ``gm``; NotCapturable naming the first node
    the analysis cannot prove unit-wise."""
    nodes = list(gm.graph.nodes)
    sources = [n for n in nodes if n.op == "call_module" and n.target == module]
    if not sources:
        raise NotCapturable(f"module {module!r} is not called by forward as a whole")
    kind: dict[fx.Node, int] = {}
    dirty: list[fx.Node] = []
    full: set[fx.Node] = set()
    for node in nodes:
        deps = [a for a in node.all_input_nodes if kind.get(a) == DIRTY]
        if node in sources:
            if deps or len(node.args) != 1 or node.kwargs:
                raise NotCapturable(
                    f"{_describe(node)}: {module!r} is called on an input that its own output "
                    "changes (a recurrence), or with more than one argument"
                )
        elif not deps or _shape_only(node):
            kind[node] = CLEAN
            continue
        elif node.op == "output":
            if not isinstance(node.args[0], fx.Node):
                raise NotCapturable(f"forward returns {type(node.args[0]).__name__}, not a tensor")
        elif node.op == "call_module":
            traits = traits_of(gm.get_submodule(node.target))
            if not (traits.linear or traits.unitwise) or len(node.args) != 1 or node.kwargs:
                raise NotCapturable(
                    f"{_describe(node)}: module is neither linear-like nor unit-wise "
                    "(declare polystep_traits if it is)"
                )
            if traits.linear or any(a in full for a in deps):
                full.add(node)
        elif not (_elementwise(node) or _along_dim(node)) or _last_dim_literal(node):
            raise NotCapturable(f"{_describe(node)} is not elementwise along the unit dim")
        elif any(a in full for a in deps):
            full.add(node)
        kind[node] = DIRTY
        dirty.append(node)
    if dirty[-1].op != "output":
        raise NotCapturable(f"forward's output does not depend on module {module!r}")
    return Plan(module, sources, dirty, kind, full)


def _parameter_sites(gm: fx.GraphModule, names: list[str]) -> tuple[dict[str, str], dict[str, str]]:
    """Parameter name -> its linear-like module (weight or bias), and -> why none."""
    called = {n.target for n in gm.graph.nodes if n.op == "call_module"}
    fetched = {n.target for n in gm.graph.nodes if n.op == "get_attr"}
    sites: dict[str, str] = {}
    refused: dict[str, str] = {}
    for name in names:
        owner, _, local = name.rpartition(".")
        if any(name == f or name.startswith(f + ".") for f in fetched):
            refused[name] = f"parameter {name!r} is read directly by forward (get_attr)"
        elif owner not in called:
            refused[name] = f"parameter {name!r} is used inside a traced-through module"
        elif not traits_of(gm.get_submodule(owner)).linear or local not in ("weight", "bias"):
            refused[name] = f"parameter {name!r} belongs to {owner!r}, not a linear-like module"
        else:
            sites[name] = owner
    return sites, refused


# -- execution ----------------------------------------------------------------------------------
def run_node(gm: fx.GraphModule, node: fx.Node, env: dict[fx.Node, Any]) -> Any:
    """Value of ``node`` given the values ``env`` of its inputs."""
    args = fx.node.map_arg(node.args, lambda a: env[a])
    kwargs = fx.node.map_arg(node.kwargs, lambda a: env[a])
    if node.op == "get_attr":
        obj: Any = gm
        for part in node.target.split("."):
            obj = getattr(obj, part)
        return obj
    if node.op == "call_function":
        return node.target(*args, **kwargs)
    if node.op == "call_method":
        return getattr(args[0], node.target)(*args[1:], **kwargs)
    if node.op == "call_module":
        return gm.get_submodule(node.target)(*args, **kwargs)
    if node.op == "output":
        return args[0]
    raise NotCapturable(f"cannot run {_describe(node)}")  # pragma: no cover - placeholders


def run_graph(gm: fx.GraphModule, inputs: torch.Tensor) -> dict[fx.Node, Any]:
    """Every node's value on ``inputs`` (the incumbent's forward, cached by node)."""
    env: dict[fx.Node, Any] = {}
    for node in gm.graph.nodes:
        env[node] = inputs if node.op == "placeholder" else run_node(gm, node, env)
    return env


def _first_slots(units: torch.Tensor) -> torch.Tensor:
    """``(n, k)`` bool: the slot that carries each distinct unit of a candidate (the first)."""
    k = units.shape[1]
    same = units[:, :, None] == units[:, None, :]
    earlier = torch.ones(k, k, dtype=torch.bool, device=units.device).tril(-1)
    return ~(same & earlier).any(dim=2)


def _gather(t: Any, idx: torch.Tensor, d: int) -> Any:
    """A clean operand aligned with folded columns ``idx``: gathered when it spans the unit
    dim ``d``, as is when it broadcasts along it (or is not a tensor)."""
    if not isinstance(t, torch.Tensor) or t.ndim == 0 or t.shape[-1] != d or d == 1:
        return t
    return t.index_select(-1, idx)


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
        self.vals: dict[fx.Node, torch.Tensor] = {}

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
        args = fx.node.map_aggregate(node.args, lambda a: self.operand(a, full, d))
        kwargs = fx.node.map_aggregate(node.kwargs, lambda a: self.operand(a, full, d))
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
        groups: dict[tuple, list[fx.Node]] = {}
        for node in self.plan.boundary:
            src = node.args[0]
            key = (node.target, dims[src], tuple(self.env[src].shape), tuple(self.env[node].shape))
            groups.setdefault(key, []).append(node)
        n = self.n
        changed = torch.zeros(n, batch, dtype=torch.bool, device=self.units.device)
        diffs = []
        for key, nodes in groups.items():
            bd = key[1]
            if key not in cache:  # incumbent inputs and outputs, batch first: (B, G, *R, d)
                old = torch.stack([self.env[x.args[0]] for x in nodes]).movedim(bd + 1, 0)
                out = torch.stack([self.env[x].movedim(bd, 0) for x in nodes])  # (G, B, *R, o)
                cache[key] = (old, out)
            old = _gather(cache[key][0], self.index(None), key[2][-1])
            new = torch.stack([self.vals[x.args[0]] for x in nodes]).movedim(bd + 1, 0)
            diff = (new - old).unflatten(-1, (n, -1))  # (B, G, *R, n, k)
            changed |= diff.reshape(batch, -1, n, diff.shape[-1]).ne(0).any(3).any(1).T
            diffs.append(diff)
        for node in self.plan.mixed:  # a skip around the boundary changes samples too
            old = _gather(self.env[node], self.index(None), self.env[node].shape[-1])
            moved = (self.vals[node] - old).movedim(dims[node], 0)
            changed |= moved.reshape(batch, -1, n, self.units.shape[1]).ne(0).any(3).any(1).T
        self.pair = torch.nonzero(changed.flatten()).flatten()
        self.c, self.b = self.pair // batch, self.pair % batch
        m = len(self.pair)
        for (key, nodes), diff in zip(groups.items(), diffs, strict=True):
            d = diff.movedim(-2, 0)  # (n, B, G, *R, k)
            d = d.reshape(-1, *d.shape[2:]).index_select(0, self.pair).transpose(0, 1)
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

    def pair_operand(self, a: Any, dims: dict[fx.Node, int | None]) -> Any:
        if not isinstance(a, fx.Node):
            return a
        if self.plan.kind.get(a) == DIRTY:
            if a in self.plan.full:
                return self.vals[a]
            return self.to_pairs(self.widen(a), dims[a])
        value, bd = self.env[a], dims.get(a)
        return value if bd is None else value.index_select(bd, self.b)

    def run_pairs(self, node: fx.Node, dims: dict[fx.Node, int | None]) -> None:
        """``node`` on the rows of the pairs (its batch dim holds them)."""
        args = fx.node.map_aggregate(node.args, lambda a: self.pair_operand(a, dims))
        kwargs = fx.node.map_aggregate(node.kwargs, lambda a: self.pair_operand(a, dims))
        if node.op == "call_module":
            self.vals[node] = self.gm.get_submodule(node.target)(*args, **kwargs)
        elif node.op == "call_function":
            self.vals[node] = node.target(*args, **kwargs)
        else:
            self.vals[node] = getattr(args[0], node.target)(*args[1:], **kwargs)


class CapturedEvaluator(Evaluator):
    """See the module docstring. ``strict``: any candidate sent to vmap is an error."""

    name = "captured"

    def __init__(
        self,
        model: nn.Module,
        loss_fn: LossFn,
        subspace: Subspace,
        *,
        chunk_size: int | None = None,
        strict: bool = False,
    ) -> None:
        super().__init__(model, loss_fn, subspace, chunk_size=chunk_size)
        self.strict = bool(strict)
        self.graph = capture(model)
        names = list(subspace.layout.names)
        sites, refused = _parameter_sites(self.graph, names)
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
        self.pairs_run = 0  # (candidate, sample) pairs run past the touched units ...
        self.pairs_dense = 0  # ... out of this many
        if refused:
            name, why = next(iter(refused.items()))
            self._fall_back(f"{len(refused)} of {len(names)} parameters run on vmap: {why}")

    @classmethod
    def supports(cls, model: nn.Module, subspace: Subspace) -> str | None:
        """None when the captured path serves every parameter of ``model``, else why not."""
        try:
            cls(model, lambda o, t: o.sum(), subspace, strict=True)
        except (NotCapturable, FallbackError) as exc:
            return str(exc)
        return None

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
        device = candidates.block.device
        losses = torch.empty(len(candidates), dtype=torch.float64, device=device)
        shared: dict = {}
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
                for unit_sparse in (True, False):
                    group = rows[sparse == unit_sparse]
                    per = self._per_candidate(plan, env, p if unit_sparse else None)
                    for chunk in chunks(group, self.chunk_size or max(1, CHUNK_ELEMENTS // per)):
                        pairs = plan.pairs[tuple(inputs.shape)]
                        losses[chunk] = self._chunk_losses(
                            plan, seg, s, candidates, chunk, env, targets, unit_sparse, shared,
                            dims, base if pairs else None,
                        )  # fmt: skip
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
            why = _shape_problem(self.graph, plan, env)
            if why is not None:
                self._refuse(name, why)
        dims = batch_dims(self.graph, inputs)
        for plan in self.plans.values():
            plan.pairs[key] = _pairs_problem(self.graph, plan, env, dims) is None
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
        *body, output = plan.dirty
        done: dict[fx.Node, fx.Node] = {}  # a source per input: equal inputs, equal outputs
        for node in body:  # the touched units first: nothing there depends on a full node
            if node in changes:
                twin = done.setdefault(node.args[0], node)
                if twin is node:
                    state.source(node, changes[node])
                state.vals[node] = state.vals[twin]
            elif node not in plan.full:
                state.run(node)
        if base_losses is not None and plan.full:  # the rest on the changed pairs only
            state.find_pairs(dims, len(base_losses), shared.setdefault(("pairs", s), {}))
            boundary = set(plan.boundary)
            for node in body:
                if node in plan.full and node not in boundary:
                    state.run_pairs(node, dims)
            out = state.vals[output.args[0]]
            moved = per_sample_cross_entropy(out, targets.index_select(0, state.b))
            total = torch.zeros(state.n, dtype=torch.float64, device=out.device)
            total.index_add_(0, state.c, (moved - base_losses[state.b]).double())
            self.pairs_run += len(state.pair)
            self.pairs_dense += state.n * len(base_losses)
            return (total + base_losses.double().sum()) / len(base_losses)
        for node in body:
            if node in plan.full:
                state.run(node)
        return per_candidate_loss(self.loss_fn, state.outputs(output), targets).double()


def _shape_problem(gm: fx.GraphModule, plan: Plan, env: dict[fx.Node, Any]) -> str | None:
    """Why ``plan`` cannot run on these values (unit dims that do not line up), or None."""
    for node in plan.dirty:
        value = env[node]
        if node.op == "output":
            if not isinstance(value, torch.Tensor) or value.ndim == 0:
                return "forward does not return a tensor with a unit dim"
            continue
        if not isinstance(value, torch.Tensor) or value.ndim == 0:
            return f"{_describe(node)} is not a tensor with a unit dim"
        d = value.shape[-1]
        if _along_dim(node):
            why = _dim_problem(node, value, env)
            if why is not None:
                return why
        if node.op == "call_module":
            (src,) = node.all_input_nodes
            linear = traits_of(gm.get_submodule(node.target)).linear
            if not linear and env[src].shape[-1] != d:
                return f"{_describe(node)} changes the number of units"
            continue
        for a in node.all_input_nodes:
            other = env[a]
            if plan.kind.get(a) == DIRTY and other.shape[-1] != d:
                return f"{_describe(node)} broadcasts a changed operand along the unit dim"
            if isinstance(other, torch.Tensor) and other.ndim and other.shape[-1] not in (1, d):
                return f"{_describe(node)} mixes unit dims {other.shape[-1]} and {d}"
    return None


def batch_dims(gm: fx.GraphModule, inputs: torch.Tensor) -> dict[fx.Node, int | None]:
    """Batch dim of every tensor node (None: none, e.g. a constant), probed with 1 and 2
    samples; nodes whose shapes change otherwise are left out."""
    one = inputs[:1]
    a, b = run_graph(gm, one), run_graph(gm, torch.cat([one, one]))
    dims: dict[fx.Node, int | None] = {}
    for node, va in a.items():
        vb = b[node]
        if not (isinstance(va, torch.Tensor) and isinstance(vb, torch.Tensor)):
            continue
        if va.shape == vb.shape:
            dims[node] = None
            continue
        diff = [q for q in range(va.ndim) if va.ndim == vb.ndim and va.shape[q] != vb.shape[q]]
        if len(diff) == 1 and vb.shape[diff[0]] == 2 * va.shape[diff[0]]:
            dims[node] = diff[0]
    return dims


def _pairs_problem(
    gm: fx.GraphModule, plan: Plan, env: dict[fx.Node, Any], dims: dict[fx.Node, int | None]
) -> str | None:
    """Why the nodes past the touched units cannot run on (candidate, sample) rows: a batch dim
    that cannot be found or does not line up, or an op that mixes samples; None if they can."""
    output = plan.dirty[-1].args[0]
    if output not in plan.full or dims.get(output) != 0 or env[output].ndim != 2:
        return "the output is not (batch, classes) past a linear-like module"
    for node in plan.full:
        bd = dims.get(node)
        if bd is None:
            return f"{_describe(node)} has no batch dim"
        shifts = node.target in (torch.stack, "unsqueeze")  # a new dim may precede the batch dim
        for a in node.all_input_nodes:
            if not isinstance(env[a], torch.Tensor):
                continue
            if a not in dims or (plan.kind.get(a) == DIRTY and dims[a] is None):
                return f"{_describe(a)} has no batch dim"
            aligned = dims[a] is None or dims[a] + env[node].ndim - env[a].ndim == bd
            if not (aligned or shifts):
                return f"{_describe(node)} moves the batch dim"
        if node.target in (torch.cat, torch.sum, torch.mean, "sum", "mean"):
            src = node if node.target is torch.cat else node.args[0]
            dim = _dim_arg(node)
            along = dim if isinstance(dim, (tuple, list)) else (dim,)
            if any(int(q) % env[src].ndim == dims[src] for q in along):
                return f"{_describe(node)} mixes samples"
        if node.op == "call_module" and not is_batchwise(gm.get_submodule(node.target)):
            return f"{_describe(node)} is not batch-wise"
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
