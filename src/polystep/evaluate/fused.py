"""Fused candidate suffix: one compiled loop instead of the eager event-driven suffix.

The unit-wise layers above a moved linear layer declare their fused kernels
(:class:`~polystep.evaluate.traits.UnitKernel` in their traits). When the chain they form, and
the layers above the next linear layer, spell one of the suffixes below, and the loss is a mean
of per-sample cross-entropies, :func:`fused_suffix` returns a function that scores a chunk of
candidates with one call of a compiled kernel (:mod:`polystep.evaluate.fused_kernels`):

* ``lif`` → Linear → ``lif, count`` (a hidden layer of a hard-LIF SNN): ``snn_hidden``;
* ``lif, count`` to the output (the SNN's output layer): ``snn_output``;
* ``relu`` → Linear, the last (the hidden layer of a one-hidden-layer ReLU MLP, the last
  hidden layer of a deeper one): ``relu_output``;
* nothing unit-wise to the output (the last linear layer itself): ``linear_output``;
* ``relu`` → Linear → ``relu`` → Linear, the last (the first layer of a two-hidden-layer ReLU
  MLP): ``relu_relu_hidden``.

Linear layers may map their weights (int8 ``QuantLinear``, ``BinaryLinear``). Every other
suffix keeps the eager path (:mod:`polystep.evaluate.events`), which is also the reference the
fused one is tested against.

Two modes. In logits mode (float64's) the kernels return the new logits of the (candidate,
sample) pairs that changed and the losses come from the eager path's own code, so they are the
eager losses wherever the logits are: to the bit for every suffix but ``relu_relu_hidden``,
which moves the logits by the hidden change where the eager path multiplies the whole hidden
row (equal within rounding). In loss mode (float32's) the kernels also compute the
cross-entropies, with polynomial exp and log that vectorize, and return each candidate's sum
of loss changes: the eager losses within rounding, without a torch pass over every pair's
logits (which cost more than the kernel itself).
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


def _distinct(units: torch.Tensor) -> bool:
    """Whether every candidate's slots ``units (n, p)`` name distinct units (nothing to merge:
    the kernels take the slots as they are)."""
    if units.shape[1] == 1:
        return True
    ordered = units.sort(dim=1).values
    return bool((ordered[:, 1:] != ordered[:, :-1]).all())


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
    last = len(layers) - 1
    if first == ("lif",) and above == ("lif", "count") and acts[j].ndim == 3:
        return "snn_hidden"
    if first == ("lif", "count") and j == len(layers) and acts[i + 1].ndim == 3:
        return "snn_output"
    if acts[i + 1].ndim != 2:
        return None
    if first == () and j == len(layers):
        return "linear_output"
    if first == ("relu",) and j == last and traits_of(layers[j]).linear:
        return "relu_output"
    if (
        first == ("relu",)
        and j == last - 2
        and _kernels(layers[j + 1 : j + 2]) == ("relu",)
        and traits_of(layers[last]).linear
    ):
        return "relu_relu_hidden"
    return None


def fused_suffix(
    layers: list[nn.Module],
    acts: list[torch.Tensor],
    i: int,
    j: int,
    *,
    losses_in_kernel: bool | None = None,
) -> tuple[Suffix | None, str | None]:
    """The fused suffix for candidates moving units of linear layer ``i`` (reaching linear layer
    ``j``, or the output when ``j == len(layers)``), else None and, when the layers asked for
    one that cannot run, why. ``acts[k]`` is the input of layer ``k``; the loss must be the
    mean of per-sample cross-entropies of the output ``acts[-1] (B, C)``.

    ``losses_in_kernel``: the kernel computes the cross-entropies itself (loss mode) rather than
    returning logits for the eager torch code (logits mode); None (the evaluator's choice):
    loss mode in float32, logits mode in float64, whose losses are then the eager ones."""
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
    in_kernel = out.dtype == torch.float32 if losses_in_kernel is None else losses_in_kernel
    t = "_f64" if out.dtype == torch.float64 else "_f32"
    fma = int(addcmul_fuses(out.dtype))
    keep: list[torch.Tensor] = []  # arrays the kernel reads, alive as long as the suffix

    def ptr(x: torch.Tensor) -> int:
        x = transposed(lib, x) if x.ndim == 3 and x.stride(0) == 1 else x.detach().contiguous()
        keep.append(x)
        return x.data_ptr()

    batch, outs = out.shape
    pre = acts[i + 1]
    steps = pre.shape[0] if pre.ndim == 3 else 1
    unit_major = ptr(pre.reshape(steps, batch, -1).permute(2, 0, 1))  # (F, S, B)
    out_t = ptr(out.T)  # (O, B)
    Args = Callable[[int, int, int, int], tuple[float | int, ...]]
    args: Args
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
        # the hidden spikes acts[j] (T, B, F) unit-major, by the LIF loop again on the
        # unit-major current (the same spikes: cheaper than transposing them)
        hidden = acts[j]
        spikes = hidden.new_empty(hidden.shape[2], hidden.shape[0], batch)
        getattr(lib, "lif_units" + t)(
            spikes.shape[0], hidden.shape[0], batch, steps, unit_major, *lif.params,
            spikes.data_ptr(),
        )  # fmt: skip
        keep.append(spikes)
        tail = (spikes.data_ptr(), ptr(linear_weight(layers[j]).T), ptr(current), ptr(before),
                ptr(counts), *lif.params, *lif_out.params)  # fmt: skip

        def args(n: int, k: int, change: int, units: int) -> tuple[float | int, ...]:
            return (n, k, total_steps, batch, outs, steps, unit_major, change, units, *tail)
    elif kind == "snn_output":
        tail = (ptr(acts[i + 2].permute(2, 0, 1)), out_t, *_kernel_of(layers[i + 1]).params)

        def args(n: int, k: int, change: int, units: int) -> tuple[float | int, ...]:
            return (n, k, steps, batch, outs, unit_major, change, units, *tail)
    elif kind == "linear_output":

        def args(n: int, k: int, change: int, units: int) -> tuple[float | int, ...]:
            return (n, k, batch, outs, change, units, out_t)
    elif kind == "relu_output":
        weight_t = ptr(linear_weight(layers[j]).T)

        def args(n: int, k: int, change: int, units: int) -> tuple[float | int, ...]:
            return (n, k, batch, outs, unit_major, change, units, weight_t, out_t, fma)
    else:  # relu_relu_hidden
        middle = acts[j + 1]
        tail = (ptr(linear_weight(layers[j]).T), ptr(middle.T), ptr(linear_weight(layers[-1])),
                out_t, fma)  # fmt: skip
        hidden = middle.shape[-1]

        def args(n: int, k: int, change: int, units: int) -> tuple[float | int, ...]:
            return (n, k, batch, hidden, outs, unit_major, change, units, *tail)

    lib_fn = _checked(getattr(lib, kind + t))

    def suffix(
        units: torch.Tensor, change: torch.Tensor, targets: torch.Tensor, base: torch.Tensor
    ) -> tuple[torch.Tensor, int]:
        """``units (n, p)``, ``change (n, M, p)`` -> losses ``(n,)`` float64 and the pairs
        re-run. Logits mode: from the kernel's logits of the changed pairs by the eager path's
        own code (:mod:`polystep.evaluate.events`), the same losses wherever the logits are the
        same. Loss mode: the kernel's sums of the changed pairs' loss changes, combined as
        the eager path combines its own."""
        if not _distinct(units):
            units, change = dedupe_slots(units, change)
        n, k = units.shape
        units = units.to(torch.int64).contiguous()
        change = change.to(out.dtype).contiguous()
        head = args(n, k, change.data_ptr(), units.data_ptr())
        if in_kernel:
            totals = torch.empty(n, dtype=torch.float64)
            base = base.to(out.dtype).contiguous()
            picks = targets.to(torch.int64).contiguous()
            sink = (None, None, picks.data_ptr(), base.data_ptr(), totals.data_ptr())
            m = lib_fn(*head, *sink)
            return (totals + base.double().sum()) / batch, m
        logits = out.new_empty(n * batch, outs)
        pair = torch.empty(n * batch, dtype=torch.int64)
        m = lib_fn(*head, logits.data_ptr(), pair.data_ptr(), None, None, None)
        if dense_pairs(m, n, batch):
            every = out.repeat(n, 1)
            every[pair[:m]] = logits[:m]
            return every_sample_losses(every, targets, n), n * batch
        return pair_losses(logits[:m], pair[:m], n, targets, base), m

    suffix.keep = keep  # type: ignore[attr-defined]
    return suffix, None


def lif_spikes(layer: nn.Module, current: torch.Tensor, shape: torch.Size) -> torch.Tensor | None:
    """The spikes ``shape`` = ``(T, *batch, F)`` of a hard LIF layer (one that declares the
    ``lif`` kernel) on ``current``: static ``(*batch, F)`` or per step ``(T, *batch, F)``, by
    the compiled loop (the layer's own forward to the bit); None where it cannot run (another
    layer, dtype or device, autograd, no kernel library)."""
    kernel = traits_of(layer).kernel
    if kernel is None or kernel.name != "lif" or current.device.type != "cpu":
        return None
    if current.dtype not in (torch.float32, torch.float64):
        return None
    if torch.is_grad_enabled() and current.requires_grad:
        return None
    static = len(shape) == current.ndim + 1 and tuple(shape[1:]) == tuple(current.shape)
    if not (static or tuple(shape) == tuple(current.shape)) or len(shape) == 0:
        return None
    lib = library()
    if isinstance(lib, str):
        return None
    x = current.detach().contiguous()
    out = x.new_empty(shape)
    steps = shape[0]
    cells = out.numel() // steps if steps else 0
    run = getattr(lib, "lif_spikes" + ("_f64" if x.dtype == torch.float64 else "_f32"))
    run(steps, cells, 0 if static else cells, x.data_ptr(), *kernel.params, out.data_ptr())
    return out


def transposed(lib: object, x: torch.Tensor) -> torch.Tensor:
    """A contiguous copy of ``x``, a ``(F, T, B)`` view of a contiguous ``(T, B, F)`` activation
    (``permute(2, 0, 1)``), by the compiled tiled transpose (torch's strided copy took 5x as
    long on the SNN's hidden spikes); any other layout by torch."""
    base = x.permute(1, 2, 0)
    if not base.is_contiguous() or x.dtype not in (torch.float32, torch.float64):
        return x.detach().contiguous()
    out = torch.empty(x.shape, dtype=x.dtype)
    run = getattr(lib, "transpose" + ("_f64" if x.dtype == torch.float64 else "_f32"))
    run(base.shape[0] * base.shape[1], base.shape[2], base.data_ptr(), out.data_ptr())
    return out
