"""Fused candidate kernels against the eager reference suffix: float64 to 1e-10 in both modes
(logits for the eager loss code, the kernel's own cross-entropy), float32 within rounding
(threshold flips counted and printed) and, in logits mode, to the bit; a reported fallback
where they cannot be built, and the same float64 training trajectory with and without them."""

from __future__ import annotations

from functools import partial

import pytest
import torch
from torch import nn

from polystep.evaluate import LayeredEvaluator, fused, fused_kernels, layered
from polystep.evaluate.layered import FallbackError
from polystep.evaluate.traits import traits_of
from polystep.nn import binary_mlp, mlp, quantized_mlp, spiking_mlp
from polystep.subspace import FactoredSubspace
from polystep.transform import ParamLayout
from test_kernels import step_candidates

pytestmark = pytest.mark.skipif(
    isinstance(fused_kernels.library(), str), reason="no C++ compiler for the fused kernels"
)


def snn(sizes: tuple[int, ...] = (12, 16, 5), steps: int = 6) -> nn.Module:
    model = spiking_mlp(sizes, num_steps=steps)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(3.0)  # spikes occur
    return model


# Every zoo model with a fused suffix: SNN hidden and output layers, a ReLU MLP's hidden layer
# (one or two above it; int8 and binary weights) and its output layer.
FUSED = {
    "snn": snn,
    "snn_wide": lambda: snn((24, 32, 10), steps=15),
    "int8": lambda: quantized_mlp((12, 16, 16, 5)),
    "mlp": lambda: mlp((12, 16, 5)),
    "mlp2": lambda: mlp((12, 16, 16, 5)),
    "binary": lambda: binary_mlp((12, 16, 5)),
}


def setup(name: str, dtype: torch.dtype, radius: float = 0.5, batch: int = 24):
    torch.manual_seed(0)
    model = FUSED[name]().to(dtype)
    layout = ParamLayout.from_module(model)
    space = FactoredSubspace.from_layout(layout, rank=8, seed=2, direct_max=64).to("cpu", dtype)
    width = next(model.parameters()).shape[1]
    x = 1.5 * torch.rand(batch, width, dtype=dtype)
    y = torch.randint(0, 5, (batch,))
    return model, space, (x, y), step_candidates(space, radius)


def both(name: str, dtype: torch.dtype, **kw: float):
    model, space, batch, cands = setup(name, dtype, **kw)
    loss_fn = nn.CrossEntropyLoss()
    fast = LayeredEvaluator(model, loss_fn, space, chunk_size=29, strict=True)
    assert fast.fused  # the default
    eager = LayeredEvaluator(model, loss_fn, space, chunk_size=29, strict=True, fused=False)
    return fast, fast.evaluate(cands, batch), eager, eager.evaluate(cands, batch), cands


def mode(monkeypatch, losses_in_kernel: bool) -> None:
    """Make the evaluator's fused suffixes run in the given mode whatever the dtype."""
    monkeypatch.setattr(
        layered, "fused_suffix", partial(fused.fused_suffix, losses_in_kernel=losses_in_kernel)
    )


@pytest.mark.parametrize("in_kernel", [False, True], ids=["logits", "losses"])
@pytest.mark.parametrize("name", sorted(FUSED))
def test_fused_suffix_matches_eager_in_float64(name: str, in_kernel: bool, monkeypatch) -> None:
    """Both modes: logits mode (float64's default) and the kernel's own cross-entropy (its
    polynomial exp and log are accurate to a few units in the last place)."""
    mode(monkeypatch, in_kernel)
    fast, got, eager, want, cands = both(name, torch.float64)
    assert fast.fused_candidates == len(cands) and eager.fused_candidates == 0
    assert want.std() > 0
    assert torch.allclose(got, want, atol=1e-10, rtol=0)


# The suffixes whose logits the eager path computes in another order (a whole hidden row times
# the last weight, not its change): their logits agree within rounding only.
REORDERED = {"int8", "mlp2"}


@pytest.mark.parametrize("name", sorted(FUSED))
def test_fused_suffix_matches_eager_in_float32(name: str) -> None:
    """float32's default, loss mode: the kernels round the logits as the eager path does
    (spikes, counts, the rank update as torch's addcmul rounds it here) and compute the
    cross-entropy with their own exp and log, so the losses agree within rounding. A candidate
    whose loss differs beyond rounding had a unit flip on a value within rounding of its
    threshold: counted, printed, and rare (none were seen when this was written)."""
    fast, got, _, want, cands = both(name, torch.float32)
    assert fast.fused_candidates == len(cands)
    flips = ~torch.isclose(got, want, rtol=1e-5, atol=1e-6)
    print(f"{name}: {int(flips.sum())} of {len(cands)} candidates differ beyond rounding")
    assert int(flips.sum()) <= max(1, len(cands) // 100)


@pytest.mark.parametrize("name", sorted(set(FUSED) - REORDERED))
def test_float32_logits_mode_gives_the_eager_losses_to_the_bit(name: str, monkeypatch) -> None:
    mode(monkeypatch, False)
    fast, got, _, want, _ = both(name, torch.float32)
    assert fast.fused_candidates > 0
    assert torch.equal(got, want)


@pytest.mark.parametrize("in_kernel", [False, True], ids=["logits", "losses"])
def test_non_finite_logits_give_the_eager_losses(in_kernel: bool, monkeypatch) -> None:
    """An infinite or NaN logit takes the exact formula, as torch's logsumexp (an infinite
    maximum is not subtracted): the same inf / NaN losses as the eager path."""
    mode(monkeypatch, in_kernel)
    model, space, batch, cands = setup("mlp", torch.float32)
    with torch.no_grad():
        model[-1].bias[0] = float("inf")
    loss_fn = nn.CrossEntropyLoss()
    got = LayeredEvaluator(model, loss_fn, space, strict=True).evaluate(cands, batch)
    want = LayeredEvaluator(model, loss_fn, space, fused=False).evaluate(cands, batch)
    assert not torch.isfinite(want).all()
    torch.testing.assert_close(got, want, equal_nan=True, rtol=1e-5, atol=1e-6)


def test_fused_suffix_skips_unchanged_samples() -> None:
    fast, got, _, want, _ = both("snn_wide", torch.float64, radius=1e-6)
    assert fast.pairs_run < fast.pairs_dense / 2  # tiny moves: few spikes change
    assert torch.allclose(got, want, atol=1e-12, rtol=0)


def test_two_threads_give_the_one_thread_losses() -> None:
    model, space, batch, cands = setup("snn_wide", torch.float64)
    loss_fn = nn.CrossEntropyLoss()
    before = torch.get_num_threads()
    try:
        runs = []
        for threads in (1, 2):
            torch.set_num_threads(threads)
            ev = LayeredEvaluator(model, loss_fn, space, chunk_size=16, strict=True)
            runs.append(ev.evaluate(cands, batch))
    finally:
        torch.set_num_threads(before)
    assert torch.equal(runs[0], runs[1])


def test_unavailable_kernels_fall_back_once_and_strict_mode_raises(monkeypatch) -> None:
    model, space, batch, cands = setup("snn", torch.float64)
    loss_fn = nn.CrossEntropyLoss()
    want = LayeredEvaluator(model, loss_fn, space, fused=False).evaluate(cands, batch)
    monkeypatch.setattr(fused, "library", lambda: "no C++ compiler found (set CXX)")
    ev = LayeredEvaluator(model, loss_fn, space)
    with pytest.warns(RuntimeWarning, match="fused candidate kernel unavailable.*compiler") as rec:
        got = ev.evaluate(cands, batch)
        ev.evaluate(cands, batch)
    assert len(rec) == 1 and "compiler" in ev.fallback_reason
    assert ev.fused_candidates == 0 and torch.equal(got, want)
    with pytest.raises(FallbackError, match="compiler"):
        LayeredEvaluator(model, loss_fn, space, strict=True).evaluate(cands, batch)


def test_build_failures_say_why(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(fused_kernels, "_compiler", lambda: None)
    assert "no C++ compiler" in fused_kernels._build()
    monkeypatch.setattr(fused_kernels, "_compiler", lambda: "false")  # a "compiler" that fails
    assert "failed" in fused_kernels._build()
    assert not list(tmp_path.rglob("*.so"))  # nothing half-built is left in the cache


@pytest.mark.parametrize("name,preset", [("snn", "snn"), ("int8", "quantized")])
def test_float64_training_trajectory_is_the_same_with_and_without_kernels(
    name: str, preset: str
) -> None:
    from polystep.optimizer import PolyStepOptimizer

    torch.manual_seed(0)
    x, y = 1.5 * torch.rand(32, 12, dtype=torch.float64), torch.randint(0, 5, (32,))
    loss_fn = nn.CrossEntropyLoss()
    runs = {}
    for use in (True, False):
        torch.manual_seed(1)
        model = FUSED[name]().double()
        opt = PolyStepOptimizer(model, preset=preset, subspace="factored", evaluator="layered")
        opt.evaluator(loss_fn).fused = use
        opt.set_horizon(steps=4)  # the snn preset's schedules over the run
        losses = [opt.step_batch(x, y, loss_fn) for _ in range(4)]
        assert (opt.evaluator(loss_fn).fused_candidates > 0) == use
        runs[use] = (losses, torch.cat([p.detach().flatten() for p in model.parameters()]))
    assert runs[True][0] == pytest.approx(runs[False][0], abs=1e-10)
    assert torch.allclose(runs[True][1], runs[False][1], atol=1e-10, rtol=0)


def test_an_infinite_current_spikes_and_resets_as_the_eager_neuron_does() -> None:
    """torch's reset ``v - v·s`` leaves NaN after an infinite membrane fires (so the neuron
    falls silent); the kernel must give the same spikes, hence the same losses."""
    model, space, batch, cands = setup("snn", torch.float64)
    with torch.no_grad():
        model[0].bias[:3] = torch.tensor([float("inf"), -float("inf"), float("nan")])
    loss_fn = nn.CrossEntropyLoss()
    got = LayeredEvaluator(model, loss_fn, space, strict=True).evaluate(cands, batch)
    want = LayeredEvaluator(model, loss_fn, space, fused=False).evaluate(cands, batch)
    assert torch.isfinite(want).all()
    assert torch.allclose(got, want, atol=1e-10, rtol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("static", [True, False])
def test_lif_spikes_kernel_is_the_layer_forward_to_the_bit(dtype: torch.dtype, static: bool):
    """The incumbent's LIF forward by the compiled loop: the layer's own spikes, bit for bit,
    with membranes near the threshold and non-finite currents (NaN after an infinite one)."""
    from polystep.nn.spiking import LIF

    gen = torch.Generator().manual_seed(3)
    layer = LIF(beta=0.95, threshold=1.0, num_steps=7 if static else None)
    shape = (9, 33) if static else (7, 9, 33)
    current = (0.06 * torch.randn(shape, generator=gen, dtype=torch.float64) + 0.05).to(dtype)
    current.view(-1)[:4] = torch.tensor([float("inf"), -float("inf"), float("nan"), 1.0])
    with torch.no_grad():
        want = layer(current)
        got = fused.lif_spikes(layer, current, want.shape)
    assert got is not None and got.dtype == dtype and torch.equal(got, want)
    assert 0 < int(want.sum()) < want.numel()  # some neurons fire, some do not
    assert fused.lif_spikes(nn.ReLU(), current, want.shape) is None  # no lif kernel declared


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("static", [True, False])
def test_unit_major_lif_kernel_gives_the_layer_spikes_transposed(dtype: torch.dtype, static: bool):
    """``lif_units`` (what the SNN hidden suffix reads instead of a transpose of the hidden
    spikes): the layer's own spikes ``(T, B, F)`` as ``(F, T, B)``, bit for bit."""
    from polystep.nn.spiking import LIF

    gen = torch.Generator().manual_seed(4)
    layer = LIF(beta=0.9, threshold=1.0, num_steps=6 if static else None)
    shape = (11, 17) if static else (6, 11, 17)
    current = (0.08 * torch.randn(shape, generator=gen, dtype=torch.float64) + 0.06).to(dtype)
    current.view(-1)[:3] = torch.tensor([float("inf"), float("nan"), 1.0])
    with torch.no_grad():
        want = layer(current).permute(2, 0, 1)  # (F, T, B)
    per_step = current.reshape(-1, *current.shape[-2:])  # (S, B, F)
    unit_major = per_step.permute(2, 0, 1).contiguous()  # (F, S, B)
    got = torch.empty(want.shape, dtype=dtype)
    suffix = "_f64" if dtype == torch.float64 else "_f32"
    run = getattr(fused_kernels.library(), "lif_units" + suffix)
    beta, threshold = traits_of(layer).kernel.params
    run(17, 6, 11, per_step.shape[0], unit_major.data_ptr(), beta, threshold, got.data_ptr())
    assert torch.equal(got, want)
    assert 0 < int(want.sum()) < want.numel()


def test_the_incumbent_forward_uses_the_lif_kernel_with_the_same_activations(monkeypatch):
    model, space, batch, _ = setup("snn", torch.float32)
    loss_fn = nn.CrossEntropyLoss()
    ev = LayeredEvaluator(model, loss_fn, space, strict=True)
    calls = []
    real = fused.lif_spikes
    monkeypatch.setattr(layered, "lif_spikes", lambda *a: calls.append(1) or real(*a))
    first = ev._base(batch)  # eager: learns each LIF layer's output shape
    assert not calls
    second = ev._base(batch)  # the kernel, for both LIF layers
    assert len(calls) == 2
    assert all(torch.equal(a, b) for a, b in zip(first.acts, second.acts, strict=True))
    model[1].num_steps += 2  # a longer horizon: eager again (not the stale shape), then kernel
    third, fourth = ev._base(batch), ev._base(batch)
    assert len(calls) == 4 and third.acts[2].shape[0] == first.acts[2].shape[0] + 2
    assert all(torch.equal(a, b) for a, b in zip(third.acts, fourth.acts, strict=True))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_the_tiled_transpose_is_torchs_permuted_copy(dtype: torch.dtype) -> None:
    lib = fused_kernels.library()
    x = torch.randn(5, 37, 70, dtype=dtype)  # (T, B, F), sizes off the 32-wide tiles
    for view in (x.permute(2, 0, 1), x[:, :, :3].permute(2, 0, 1), x.transpose(0, 1)):
        got = fused.transposed(lib, view)
        assert got.is_contiguous() and torch.equal(got, view.contiguous())
