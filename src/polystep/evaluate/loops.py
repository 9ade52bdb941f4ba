"""Hard-LIF loops in a captured graph, as users write them: the suffixes the SNN kernels serve.

A user's spiking net spells :class:`polystep.nn.LIF`'s hard neuron as a Python loop over time
steps, which ``torch.fx`` unrolls. Each step, per unit:

    v = beta * v + current        # or v * beta + current; v + current (no leak)
    s = (v >= threshold).float()  # or .double(), .to(dtype), .type_as(...)
    v = v * (1.0 - s)             # or v - v * s: reset to 0
    count = count + s             # or spikes kept in a list and torch.stack(...).sum(0)

the membrane and the count starting at 0 (``torch.zeros``, ``zeros_like``, ``new_zeros``, a
literal 0: ``sum(spikes)`` counts too).
:func:`match_suffix` gives every node a candidate of one linear-like module changes (its
:class:`~polystep.evaluate.graph.Plan`) one of these roles and returns the suffix they spell:

* ``snn_output``: the module's units through one such loop to the spike count returned;
* ``snn_hidden``: through one loop, then the next linear-like module on each step's spikes, a
  second loop on its outputs, and the count of that loop's spikes returned;

the two suffixes :mod:`polystep.evaluate.fused` runs for :class:`~polystep.nn.SpikingMLP`
(a user class calling polystep's ``LIF`` and ``SpikeCount`` layers in that order spells them
too: a :class:`Chain`).
Anything else (another op, a node used in another way, a step out of order) is no match, and
the reason names the node. Each role is the neuron's arithmetic (``v·β + I``, ``v ≥ θ``,
``v·(1 − s)`` is ``v`` or ``0``, counts are small integers), so the kernel reproduces the
graph's spikes; the evaluator also checks that on the incumbent.
"""

from __future__ import annotations

import itertools
import math
import operator
from dataclasses import dataclass

import torch
from torch import fx

from polystep.evaluate.graph import Plan
from polystep.evaluate.traits import traits_of

_OPS = {
    operator.add: "add", torch.add: "add", "add": "add",
    operator.sub: "sub", torch.sub: "sub", "sub": "sub",
    operator.mul: "mul", torch.mul: "mul", "mul": "mul",
    operator.ge: "ge", torch.ge: "ge", torch.greater_equal: "ge", "ge": "ge",
    "float": "cast", "double": "cast", "to": "cast", "type_as": "cast",
    torch.stack: "stack", torch.sum: "sum", "sum": "sum",
    torch.zeros: "zeros", torch.zeros_like: "zeros", "new_zeros": "zeros",
}  # fmt: skip


@dataclass(frozen=True)
class Role:
    """What a node is in a hard-LIF loop. ``mem``: the membrane of the step (after integration)
    the node belongs to; ``value``: ``β`` of a leak, ``θ`` of a comparison, a literal's value;
    ``spikes``: the membranes whose spikes a count (or a stack) adds up."""

    kind: str  # zero, const, cur, leak, mem, cmp, spike, keep, vs, reset, stack, count
    mem: fx.Node | None = None
    value: float | None = None
    spikes: tuple[fx.Node, ...] = ()


@dataclass(frozen=True)
class Loop:
    """One hard-LIF loop: its membranes step by step, ``β``, ``θ``, each step's current node."""

    mems: tuple[fx.Node, ...]
    beta: float
    threshold: float
    currents: tuple[fx.Node, ...]


@dataclass(frozen=True)
class Match:
    """The suffix a plan spells: ``kind`` (``snn_hidden`` / ``snn_output``), the loop on the
    moved module's units, a spike node of every membrane, the count returned, and the loop on
    the next module's outputs (``snn_hidden``: its currents are that module's calls)."""

    kind: str
    first: Loop
    spikes: dict[fx.Node, fx.Node]
    count: fx.Node
    top: Loop | None = None


class _NoMatch(Exception):
    pass


def _op(node: fx.Node) -> str | None:
    if node.op not in ("call_function", "call_method"):
        return None
    return _OPS.get(node.target)


def _literal(a: object) -> bool:
    return isinstance(a, (int, float)) and not isinstance(a, bool) and math.isfinite(a)


class _Roles:
    """Roles of the nodes of one plan, in graph order."""

    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self.roles: dict[fx.Node, Role] = {}
        self.prev: dict[fx.Node, fx.Node | None] = {}  # membrane -> the one before it
        self.current: dict[fx.Node, fx.Node] = {}  # membrane -> its step's current
        self.leak: dict[fx.Node, float] = {}  # membrane -> β of its integration
        self.fired: dict[fx.Node, fx.Node] = {}  # a current the next module computes -> spiker

    def operand(self, a: object) -> Role:
        if _literal(a):
            return Role("const", value=float(a))  # type: ignore[arg-type]
        if isinstance(a, fx.Node):
            if a in self.roles:
                return self.roles[a]
            if self._zero(a):
                return Role("zero")
        return Role("other")

    def _zero(self, node: fx.Node) -> bool:
        """A clean node that is structurally zero: a zeros factory or a zero times a literal."""
        op = _op(node)
        if op == "zeros":
            return True
        if op == "mul" and len(node.args) == 2 and not node.kwargs:
            kinds = sorted(self.operand(a).kind for a in node.args)
            return kinds == ["const", "zero"]
        return False

    def assign(self, node: fx.Node) -> None:
        role = self._role(node)
        if role is None:
            raise _NoMatch(f"node {node.name!r} ({node.format_node()}) is no hard-LIF loop step")
        self.roles[node] = role

    def _role(self, node: fx.Node) -> Role | None:
        if node.op == "call_module":
            if node in self.plan.sources:
                return Role("cur")
            spiker = self.operand(node.args[0])
            if node in self.plan.boundary and spiker.kind == "spike":
                self.fired[node] = spiker.mem  # type: ignore[assignment]
                return Role("cur")
            return None
        op = _op(node)
        if op == "cast":
            a = self.operand(node.args[0])
            return Role("spike", a.mem) if a.kind in ("cmp", "spike") else None
        if op == "stack":
            items = node.args[0]
            dim = node.kwargs.get("dim", node.args[1] if len(node.args) > 1 else 0)
            roles = [self.operand(a) for a in items] if isinstance(items, (list, tuple)) else []
            if dim != 0 or not roles or any(r.kind != "spike" for r in roles):
                return None
            return Role("stack", spikes=tuple(r.mem for r in roles))  # type: ignore[misc]
        if op == "sum":
            a = self.operand(node.args[0])
            dim = node.kwargs.get("dim", node.args[1] if len(node.args) > 1 else None)
            keep = node.kwargs.get("keepdim", False)
            counts = a.kind == "stack" and dim == 0 and not keep
            return Role("count", spikes=a.spikes) if counts else None
        if op is None or len(node.args) != 2 or node.kwargs:
            return None
        a, b = (self.operand(x) for x in node.args)
        pair = {a.kind: a, b.kind: b}
        if op == "add":
            return self._add(node, a, b)
        if op == "mul":
            if "reset" in pair and "const" in pair:
                return Role("leak", pair["reset"].mem, pair["const"].value)
            if "mem" in pair and pair.get("keep", Role("")).mem is pair["mem"].mem:
                return Role("reset", pair["mem"].mem)
            if "mem" in pair and pair.get("spike", Role("")).mem is pair["mem"].mem:
                return Role("vs", pair["mem"].mem)
            return None
        if op == "sub":
            if a.kind == "const" and a.value == 1.0 and b.kind == "spike":
                return Role("keep", b.mem)
            if a.kind == "mem" and b.kind == "vs" and b.mem is a.mem:
                return Role("reset", a.mem)
            return None
        if op == "ge" and a.kind == "mem" and b.kind == "const":
            return Role("cmp", a.mem, b.value)
        return None

    def _add(self, node: fx.Node, a: Role, b: Role) -> Role | None:
        a, b = (Role("zero") if r.kind == "const" and r.value == 0 else r for r in (a, b))
        pair = {a.kind: a, b.kind: b}
        if "spike" in pair and ("count" in pair or "zero" in pair) and a.kind != b.kind:
            before = pair["count"].spikes if "count" in pair else ()
            return Role("count", spikes=(*before, pair["spike"].mem))  # type: ignore[arg-type]
        if "cur" not in pair or a.kind == b.kind:
            return None
        cur = node.args[[a.kind, b.kind].index("cur")]
        other = b if a.kind == "cur" else a
        if other.kind == "zero":
            self.prev[node] = None
        elif other.kind == "leak":
            self.prev[node], self.leak[node] = other.mem, other.value  # type: ignore[assignment]
        elif other.kind == "reset":  # no leak written: β = 1
            self.prev[node], self.leak[node] = other.mem, 1.0
        else:
            return None
        self.current[node] = cur  # type: ignore[assignment]
        return Role("mem", node)

    def loops(self) -> list[Loop]:
        """The loops the membranes form: each starts from zero and has one successor a step."""
        following: dict[fx.Node, list[fx.Node]] = {}
        for mem, prev in self.prev.items():
            if prev is not None:
                following.setdefault(prev, []).append(mem)
        out = []
        for start in (m for m, p in self.prev.items() if p is None):
            mems = [start]
            while following.get(mems[-1]):
                nxt = following[mems[-1]]
                if len(nxt) > 1:
                    raise _NoMatch(f"membrane {mems[-1].name!r} feeds two next steps")
                mems.append(nxt[0])
            betas = {self.leak[m] for m in mems[1:]} or {1.0}
            cmps = {r.value for r in self.roles.values() if r.kind == "cmp" and r.mem in mems}
            if len(betas) != 1 or len(cmps) != 1:
                raise _NoMatch(f"the loop from {start.name!r} changes its leak or threshold")
            currents = tuple(self.current[m] for m in mems)
            out.append(Loop(tuple(mems), betas.pop(), cmps.pop(), currents))
        if sum(len(loop.mems) for loop in out) != len(self.prev):
            raise _NoMatch("a membrane is not reached from a zero start")
        return out


@dataclass(frozen=True)
class Chain:
    """The same suffixes spelled with layers that declare the kernels (polystep's ``LIF`` and
    ``SpikeCount`` in a user class): the moved module's call, then one call of each layer on
    the previous one's output, the last returned."""

    kind: str
    nodes: tuple[fx.Node, ...]


def _layer_chain(gm: fx.GraphModule, plan: Plan) -> Chain | None:
    nodes = plan.dirty[:-1]
    if nodes[0] not in plan.sources or plan.dirty[-1].args[0] is not nodes[-1]:
        return None
    names = []
    for prev, node in itertools.pairwise(nodes):
        if node.op != "call_module" or node.args != (prev,) or node.kwargs:
            return None
        traits = traits_of(gm.get_submodule(node.target))
        names.append("linear" if traits.linear else getattr(traits.kernel, "name", None))
    if names == ["lif", "count"]:
        return Chain("snn_output", tuple(nodes))
    if names == ["lif", "linear", "lif", "count"]:
        return Chain("snn_hidden", tuple(nodes))
    return None


def match_suffix(gm: fx.GraphModule, plan: Plan) -> Match | Chain | str:
    """The hard-LIF suffix ``plan`` spells, or why it spells none (naming the node)."""
    chain = _layer_chain(gm, plan)
    if chain is not None:
        return chain
    roles = _Roles(plan)
    try:
        for node in plan.dirty[:-1]:
            roles.assign(node)
        result = roles.operand(plan.dirty[-1].args[0])
        if result.kind != "count":
            raise _NoMatch("forward does not return a spike count")
        loops = roles.loops()
    except _NoMatch as exc:
        return str(exc)
    spikes = {r.mem: n for n, r in roles.roles.items() if r.kind == "spike"}
    if any(m not in spikes for loop in loops for m in loop.mems):
        return "a membrane's spikes are never taken"
    sources = set(plan.sources)
    first = [loop for loop in loops if set(loop.currents) <= sources]
    top = [loop for loop in loops if loop not in first]
    if len(first) != 1 or len(top) > 1:
        return f"{len(loops)} hard-LIF loops where the kernels serve one or two in a chain"
    counted = sorted(result.spikes, key=lambda m: m.name)
    last = top[0] if top else first[0]
    if counted != sorted(last.mems, key=lambda m: m.name):
        return "the count returned is not every step's spikes of the last loop, once each"
    if not top:
        return Match("snn_output", first[0], spikes, plan.dirty[-1].args[0])  # type: ignore[arg-type]
    loop = top[0]
    if len({cur.target for cur in loop.currents}) != 1:
        return "the next loop's currents come from more than one module"
    below = first[0].mems
    if len(loop.mems) != len(below) or any(
        roles.fired.get(cur) is not mem for cur, mem in zip(loop.currents, below, strict=True)
    ):
        return "the next module's step t does not take the spikes of step t"
    return Match("snn_hidden", first[0], spikes, plan.dirty[-1].args[0], loop)  # type: ignore[arg-type]
