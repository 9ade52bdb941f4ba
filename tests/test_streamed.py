"""The streamed evaluator: same losses as the oracle, memory flat in T and in the chunking."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from polystep import PolyStepOptimizer
from polystep.evaluate import (
    NotStreamable,
    ReferenceEvaluator,
    StreamedEvaluator,
    make_evaluator,
    stream_forward,
)
from polystep.nn import LIF, OverTime, SpikeCount, spiking_mlp


def conv_net(steps: int) -> nn.Sequential:
    """A small spiking conv net: static conv, per-step conv, a wide linear layer, counts."""
    return nn.Sequential(
        nn.Conv2d(1, 3, 3, padding=1),
        LIF(num_steps=steps),
        OverTime(nn.AvgPool2d(2)),
        OverTime(nn.Conv2d(3, 4, 3, padding=1)),
        LIF(),
        nn.Flatten(2),
        nn.Linear(4 * 4 * 4, 24),
        LIF(),
        nn.Linear(24, 5),
        LIF(),
        SpikeCount(),
    )


def case(name: str, steps: int = 8) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """A float64 model that spikes, an input batch of 3 and targets."""
    torch.manual_seed(0)
    if name == "mlp":
        model = spiking_mlp((12, 10, 5), num_steps=steps)
        x = 2 * torch.rand(3, 12)
    else:
        model = conv_net(steps)
        x = 4 * torch.rand(3, 1, 8, 8)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(3.0)
    return model.double(), x.double(), torch.tensor([0, 3, 1])


def candidates(model: nn.Module) -> tuple[PolyStepOptimizer, object]:
    opt = PolyStepOptimizer(model, preset="snn", seed=0, subspace="factored")
    cands = opt.engine().ask(opt.search)
    opt.search.pending = None
    return opt, cands


@pytest.mark.parametrize("name", ["mlp", "conv"])
def test_stream_forward_is_the_forward(name: str) -> None:
    model, x, _ = case(name)
    with torch.no_grad():
        out = model(x)
        assert out.sum() > 0  # the case spikes
        assert torch.equal(stream_forward(model, x), out)


@pytest.mark.parametrize("name", ["mlp", "conv"])
def test_losses_agree_with_the_oracle_in_float64(name: str) -> None:
    model, x, y = case(name)
    opt, cands = candidates(model)
    loss = nn.CrossEntropyLoss()
    want = ReferenceEvaluator(model, loss, opt.subspace).evaluate(cands, (x, y))
    layered = make_evaluator("layered", model, loss, opt.subspace).evaluate(cands, (x, y))
    ev = StreamedEvaluator(model, loss, opt.subspace, memory_bytes=2**14)
    got = ev.evaluate(cands, (x, y))
    assert want.std() > 0.01  # candidates differ: the comparison means something
    assert torch.allclose(got, want, rtol=0, atol=1e-10)
    assert torch.allclose(got, layered, rtol=0, atol=1e-10)
    assert 0 < ev.unit_candidates < len(cands)  # both paths ran
    assert float(ev.loss((x, y))) == pytest.approx(float(opt.evaluator(loss).loss((x, y))))


def test_chunking_does_not_change_losses() -> None:
    model, x, y = case("conv")
    opt, cands = candidates(model)
    loss = nn.CrossEntropyLoss()
    one = StreamedEvaluator(model, loss, opt.subspace, chunk_size=37).evaluate(cands, (x, y))
    big = StreamedEvaluator(model, loss, opt.subspace, memory_bytes=2**30).evaluate(cands, (x, y))
    assert torch.allclose(one, big, rtol=0, atol=1e-12)


class LargestTensor(TorchDispatchMode):
    """Records the most elements of any tensor an op returns."""

    def __init__(self) -> None:
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, tuple | list) else (out,):
            if isinstance(t, torch.Tensor):
                self.largest = max(self.largest, t.numel())
        return out


def test_no_tensor_grows_with_the_number_of_steps() -> None:
    largest = {}
    for steps in (3, 9):
        model, x, y = case("conv", steps)
        opt, cands = candidates(model)
        ev = StreamedEvaluator(model, nn.CrossEntropyLoss(), opt.subspace)
        with LargestTensor() as probe:
            ev.evaluate(cands, (x, y))
            ev.loss((x, y))
        largest[steps] = probe.largest
    assert largest[3] == largest[9]


def test_optimizer_step_matches_the_layered_step() -> None:
    moved = []
    for kind in ("layered", "streamed"):
        model, x, y = case("mlp")
        opt = PolyStepOptimizer(model, preset="snn", seed=0, evaluator=kind)
        opt.set_horizon(steps=1)  # the preset's schedules over the run
        opt.step_batch(x, y, nn.CrossEntropyLoss())
        moved.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
    assert torch.allclose(moved[0], moved[1], rtol=0, atol=1e-10)


def test_bad_input_is_named() -> None:
    model, _, _ = case("mlp")
    opt, _ = candidates(model)
    with pytest.raises(ValueError, match="memory_bytes"):
        StreamedEvaluator(model, nn.CrossEntropyLoss(), opt.subspace, memory_bytes=0)
    plain = nn.Sequential(nn.Linear(3, 2), nn.ReLU())
    space = PolyStepOptimizer(plain, seed=0).subspace
    with pytest.raises(NotStreamable, match="num_steps"):
        StreamedEvaluator(plain, nn.CrossEntropyLoss(), space)
    no_count = nn.Sequential(nn.Linear(3, 2), LIF(num_steps=3))
    space = PolyStepOptimizer(no_count, seed=0).subspace
    with pytest.raises(NotStreamable, match="SpikeCount"):
        StreamedEvaluator(no_count, nn.CrossEntropyLoss(), space)


def peak_live_bytes(fn: object) -> int:
    """Most bytes of torch CPU tensors alive at once while ``fn()`` runs (profiler events)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()  # type: ignore[operator]
    events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
    live = peak = 0
    for e in sorted(events, key=lambda e: e.start_ns()):
        live += e.nbytes()
        peak = max(peak, live)
    return peak


@pytest.mark.parametrize("batch", [4, 128])
def test_chunks_stay_within_the_memory_bound(batch: int) -> None:
    """The candidates' working set is at most ``memory_bytes`` (+10 %): on top of it only the
    incumbent's own stream (what a plain streamed forward holds) and the step's index."""
    torch.manual_seed(0)
    model = spiking_mlp((784, 128, 10), num_steps=3)
    x, y = 3 * torch.rand(batch, 784), torch.randint(0, 10, (batch,))
    opt, cands = candidates(model)
    loss = nn.CrossEntropyLoss()
    for bound in (2**18, 2**20):
        ev = StreamedEvaluator(model, loss, opt.subspace, memory_bytes=bound)
        incumbent = peak_live_bytes(lambda ev=ev: ev.loss((x, y)))
        index = 16 * len(cands)  # losses (float64) and the rows of one segment (int64)
        peak = peak_live_bytes(lambda ev=ev: ev.evaluate(cands, (x, y)))
        assert peak <= 1.1 * bound + incumbent + index, (bound, peak, incumbent)
        assert peak > bound / 2  # the chunks do fill the bound
