"""A user's forward as a ``torch.fx`` graph, and which nodes a candidate of one module changes.

:func:`capture` traces the model in eval mode (torch's layers and every module that declares
polystep traits stay single call nodes; ``torch.zeros(x.shape[0], ...)`` and its kin are traced
as nodes). :func:`plan_module` classifies every node for one linear-like module ``L``: *clean*
(independent of ``L``'s output, or reading only its shape) or *dirty*; a dirty node must act on
each unit (last-dim feature) separately: an elementwise op with broadcasting, a stack / sum /
mean along another dim, a unit-wise module, or a linear-like module (after which every unit
changes: ``Plan.full``). Whatever else depends on ``L`` is refused, naming the node. Checks that
need shapes (:func:`shape_problem`, :func:`pairs_problem`) run on the incumbent's values.
"""

from __future__ import annotations

import contextlib
import functools
import operator
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import fx, nn
from torch.nn import functional as F

from polystep.evaluate.traits import is_batchwise, traits_of


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
    dim = _dim_arg(node)
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


def parameter_sites(gm: fx.GraphModule, names: list[str]) -> tuple[dict[str, str], dict[str, str]]:
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
    """Every node's value on ``inputs`` (the incumbent's forward, cached by node). A layer
    with traits (a function of its input: torch's layers, declared ones) called again on the
    same node, as ``fc1(x)`` in every step of a time loop, is run once."""
    env: dict[fx.Node, Any] = {}
    calls: dict[tuple, Any] = {}
    for node in gm.graph.nodes:
        if node.op == "placeholder":
            env[node] = inputs
            continue
        key = (node.target, *node.args) if _repeatable(gm, node) else None
        if key is not None and key in calls:
            env[node] = calls[key]
            continue
        env[node] = run_node(gm, node, env)
        if key is not None:
            calls[key] = env[node]
    return env


def _repeatable(gm: fx.GraphModule, node: fx.Node) -> bool:
    """A call of a layer with traits on graph nodes only: the same call, the same value."""
    if node.op != "call_module" or node.kwargs:
        return False
    if not all(isinstance(a, fx.Node) for a in node.args):
        return False
    traits = traits_of(gm.get_submodule(node.target))
    return traits.linear or traits.unitwise or traits.batchwise


def shape_problem(gm: fx.GraphModule, plan: Plan, env: dict[fx.Node, Any]) -> str | None:
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
        read = node.all_input_nodes
        if node.target == "type_as" and plan.kind.get(node.args[0]) == DIRTY:
            read = [node.args[0]]  # the other tensor gives its dtype only
        for a in read:
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


def pairs_problem(
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
