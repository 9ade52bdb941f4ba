"""Fused candidate suffix: one compiled loop instead of the eager event-driven suffix.

The unit-wise layers above a moved linear layer declare their fused kernels
(:class:`~polystep.evaluate.traits.UnitKernel` in their traits). When the chain they form, and
the layers above the next linear layer, spell one of the suffixes below, and the loss is a mean
of per-sample cross-entropies, :func:`fused_suffix` returns a function that scores a chunk of
candidates with one call of a compiled kernel (:mod:`polystep.evaluate.fused_kernels`):

* ``lif`` → Linear → ``lif, count`` (a hidden layer of a hard-LIF SNN): ``snn_hidden``;
* ``lif, count`` to the output (the SNN's output layer): ``snn_output``;
* ``relu`` → Linear → ``relu`` → Linear, the last (the first layer of a two-hidden-layer ReLU
  MLP; the middle Linear may map its weight, as int8 ``QuantLinear`` does): ``relu_relu_hidden``.

Every other suffix keeps the eager path (:mod:`polystep.evaluate.events`), which is also the
reference the fused one is tested against. A ReLU layer right below the output is left to it
on purpose: its eager suffix (one rank update of the logits for the whole chunk, then the
cross-entropy, whose ``exp`` dominates) was faster than a per-sample kernel.

The kernels return the new logits of the (candidate, sample) pairs that changed, and the losses
come from the eager path's own code, so they are the eager losses wherever the logits are: to
the bit for the SNN suffixes (spike counts; the rank update rounds as torch's ``addcmul`` does
on this machine), within rounding for ``relu_relu_hidden`` (it moves the logits by the hidden
change, where the eager path multiplies the whole hidden row).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache

import torch
from torch import nn

from polystep.evaluate.events import dense_pairs, every_sample_losses, pair_losses
from polystep.evaluate.fused_kernels import library
from polystep.evaluate.traits import UnitKernel, traits_of
from polystep.evaluate.units import dedupe_slots, linear_weight

Suffix = Callable[
    [torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], tuple[torch.Tensor, int]
]


def _checked(fn: Callable[..., int]) -> Callable[..., int]:
    """``fn`` refusing a wrong number of arguments (ctypes would pass extra ones unconverted)."""
    expected = len(fn.argtypes)  # type: ignore[attr-defined]

    def call(*args: object) -> int:
        if len(args) != expected:
            raise TypeError(f"{fn.__name__} takes {expected} arguments, got {len(args)}")  # type: ignore[attr-defined]
        return fn(*args)

    return call


@cache
def addcmul_fuses(dtype: torch.dtype) -> bool:
    """Whether torch's CPU ``addcmul`` (the eager rank update) rounds ``x + d·w`` once, as a
    fused multiply-add, for ``dtype`` on this machine (it does where its kernels use FMA)."""
    tiny = 2.0**-12 if dtype == torch.float32 else 2.0**-27
    x = torch.full((64,), -1.0, dtype=dtype)
    d = torch.full((64,), 1.0 + tiny, dtype=dtype)
    got = torch.addcmul(x, d, d)  # exact: 2·tiny + tiny², which a rounded product loses
    return bool((got != 2 * tiny).all())


def _kernels(layers: list[nn.Module]) -> tuple[str, ...] | None:
    """The fused kernel names of ``layers`` (None if one has none)."""
    out = [traits_of(m).kernel for m in layers]
    return None if any(k is None for k in out) else tuple(k.name for k in out)  # type: ignore[union-attr]


def _kernel_of(layer: nn.Module) -> UnitKernel:
    return traits_of(layer).kernel  # type: ignore[return-value]


def _match(layers: list[nn.Module], acts: list[torch.Tensor], i: int, j: int) -> str | None:
    """Which fused suffix serves candidates moving units of layer ``i`` (None: none)."""
    first = _kernels(layers[i + 1 : j])
    above = _kernels(layers[j + 1 :]) if j < len(layers) else ()
    if first == ("lif",) and above == ("lif", "count") and acts[j].ndim == 3:
        return "snn_hidden"
    if first == ("lif", "count") and j == len(layers) and acts[i + 1].ndim == 3:
        return "snn_output"
    if (
        first == ("relu",)
        and j == len(layers) - 3
        and _kernels(layers[j + 1 : j + 2]) == ("relu",)
        and traits_of(layers[-1]).linear
        and acts[i + 1].ndim == 2
    ):
        return "relu_relu_hidden"
    return None


def fused_suffix(
    layers: list[nn.Module], acts: list[torch.Tensor], i: int, j: int
) -> tuple[Suffix | None, str | None]:
    """The fused suffix for candidates moving units of linear layer ``i`` (reaching linear layer
    ``j``, or the output when ``j == len(layers)``), else None and, when the layers asked for
    one that cannot run, why. ``acts[k]`` is the input of layer ``k``; the loss must be the
    mean of per-sample cross-entropies of the output ``acts[-1] (B, C)``."""
    kind = _match(layers, acts, i, j)
    if kind is None:
        return None, None
    out = acts[-1]
    if out.device.type != "cpu" or out.dtype not in (torch.float32, torch.float64):
        return None, None  # the kernels are CPU float32 / float64 ones; eager serves the rest
    if any(a.dtype != out.dtype for a in acts[i + 1 :]):
        return None, None
    lib = library()
    if isinstance(lib, str):
        return None, lib
    t = "_f64" if out.dtype == torch.float64 else "_f32"
    fma = int(addcmul_fuses(out.dtype))
    keep: list[torch.Tensor] = []  # arrays the kernel reads, alive as long as the suffix

    def ptr(x: torch.Tensor) -> int:
        x = x.detach().contiguous()
        keep.append(x)
        return x.data_ptr()

    batch, outs = out.shape
    pre = acts[i + 1]
    steps = pre.shape[0] if pre.ndim == 3 else 1
    unit_major = pre.reshape(steps, batch, -1).permute(2, 0, 1)  # (F, S, B)
    if kind == "snn_hidden":
        lif, lif_out = _kernel_of(layers[i + 1]), _kernel_of(layers[j + 1])
        current = acts[j + 1]
        total_steps = current.shape[0]
        before, counts = (
            torch.empty_like(current),
            current.new_empty(total_steps + 1, *current.shape[1:]),
        )
        getattr(lib, "lif_trace" + t)(
            total_steps, batch, outs, ptr(current), *lif_out.params, ptr(before), ptr(counts)
        )
        head = (steps, ptr(unit_major))
        tail = (ptr(acts[j].permute(2, 0, 1)), ptr(linear_weight(layers[j]).T), ptr(current),
                ptr(before), ptr(counts), *lif.params, *lif_out.params)  # fmt: skip

        def call(n: int, k: int, change: int, units: int, rest: tuple[int, ...]) -> int:
            return lib_fn(
                n, k, total_steps, batch, outs, head[0], head[1], change, units, *tail, *rest
            )
    elif kind == "snn_output":
        lif = _kernel_of(layers[i + 1])
        head = (ptr(unit_major),)
        tail = (ptr(acts[i + 2].permute(2, 0, 1)), ptr(out), *lif.params)

        def call(n: int, k: int, change: int, units: int, rest: tuple[int, ...]) -> int:
            return lib_fn(n, k, steps, batch, outs, head[0], change, units, *tail, *rest)
    else:  # relu_relu_hidden
        middle = acts[j + 1]
        head = (middle.shape[-1], ptr(unit_major))
        tail = (ptr(linear_weight(layers[j]).T), ptr(middle), ptr(linear_weight(layers[-1])),
                ptr(out))  # fmt: skip

        def call(n: int, k: int, change: int, units: int, rest: tuple[int, ...]) -> int:
            return lib_fn(n, k, batch, head[0], outs, head[1], change, units, *tail, *rest, fma)

    lib_fn = _checked(getattr(lib, kind + t))

    def suffix(
        units: torch.Tensor, change: torch.Tensor, targets: torch.Tensor, base: torch.Tensor
    ) -> tuple[torch.Tensor, int]:
        """``units (n, p)``, ``change (n, M, p)`` -> losses ``(n,)`` float64 and the pairs
        re-run, from the kernel's logits of the changed pairs by the eager path's own code
        (:mod:`polystep.evaluate.events`): the same losses wherever the logits are the same."""
        units, change = dedupe_slots(units, change)
        n, k = units.shape
        units = units.to(torch.int64).contiguous()
        change = change.to(out.dtype).contiguous()
        logits = out.new_empty(n * batch, outs)
        pair = torch.empty(n * batch, dtype=torch.int64)
        m = call(n, k, change.data_ptr(), units.data_ptr(), (logits.data_ptr(), pair.data_ptr()))
        if dense_pairs(m, n, batch):
            every = out.repeat(n, 1)
            every[pair[:m]] = logits[:m]
            return every_sample_losses(every, targets, n), n * batch
        return pair_losses(logits[:m], pair[:m], n, targets, base), m

    suffix.keep = keep  # type: ignore[attr-defined]
    return suffix, None
