"""The captured (torch.fx) path: models written as users write them, agreement with the oracle,
and refusals that name the node and fall back to vmap."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from candidate_helpers import step_candidates
from polystep.evaluate import (
    CapturedEvaluator,
    FallbackError,
    LayeredEvaluator,
    NotCapturable,
    NotLayerable,
    ReferenceEvaluator,
    VmapEvaluator,
    fused,
    fused_kernels,
    make_evaluator,
)
from polystep.evaluate.graph import capture, run_graph
from polystep.nn import LIF, QuantLinear, SpikeCount, SpikingMLP
from polystep.optimizer import PolyStepOptimizer
from polystep.subspace import FactoredSubspace, FullSpace, HybridSubspace
from polystep.transform import ParamLayout

T = 5
needs_kernels = pytest.mark.skipif(
    isinstance(fused_kernels.library(), str), reason="no C++ compiler for the fused kernels"
)


def lif_loop(current: torch.Tensor, v: torch.Tensor, beta: float = 0.9) -> tuple:
    """One hard-LIF step as users write it: leak, threshold, reset to 0."""
    v = beta * v + current
    s = (v >= 1.0).to(current.dtype)
    return s, v * (1.0 - s)


class SNN2(nn.Module):
    """Two Linears, a Python loop over T, threshold, reset, spike count."""

    def __init__(self, sizes: tuple[int, ...] = (12, 16, 5)) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(sizes[0], sizes[1]), nn.Linear(sizes[1], sizes[2])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        v1 = torch.zeros(x.shape[0], self.fc1.out_features, dtype=x.dtype)
        v2 = torch.zeros(x.shape[0], self.fc2.out_features, dtype=x.dtype)
        count = torch.zeros_like(v2)
        for _ in range(T):
            s1, v1 = lif_loop(self.fc1(x), v1)
            s2, v2 = lif_loop(self.fc2(s1), v2)
            count = count + s2
        return count


class FloatSNN(SNN2):
    """As users often write it: ``(v >= θ).float()`` (float32 models only)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        v1 = torch.zeros(x.shape[0], self.fc1.out_features)
        v2 = torch.zeros(x.shape[0], self.fc2.out_features)
        count = torch.zeros(x.shape[0], self.fc2.out_features)
        for _ in range(T):
            v1 = 0.9 * v1 + self.fc1(x)
            s1 = (v1 >= 1.0).float()
            v1 = v1 * (1.0 - s1)
            v2 = 0.9 * v2 + self.fc2(s1)
            s2 = (v2 >= 1.0).float()
            v2 = v2 * (1.0 - s2)
            count = count + s2
        return count


class AugmentedSNN(SNN2):
    """Spike counts accumulated with ``+=`` (fx records an in-place add)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        v1 = torch.zeros(x.shape[0], self.fc1.out_features, dtype=x.dtype)
        v2 = torch.zeros(x.shape[0], self.fc2.out_features, dtype=x.dtype)
        count = torch.zeros_like(v2)
        for _ in range(T):
            s1, v1 = lif_loop(self.fc1(x), v1)
            s2, v2 = lif_loop(self.fc2(s1), v2)
            count += s2
        return count


class SNN3(nn.Module):
    """Three Linears; membranes reset by subtraction, spikes recorded and summed at the end."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2, self.fc3 = nn.Linear(12, 16), nn.Linear(16, 16), nn.Linear(16, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        current = self.fc1(x.flatten(1))  # once, outside the loop
        v1 = v2 = v3 = 0.0
        record = []
        for _ in range(T):
            v1 = 0.9 * v1 + current
            s1 = torch.heaviside(v1 - 1.0, torch.zeros((), dtype=x.dtype))
            v1 = v1 - s1
            v2 = 0.9 * v2 + self.fc2(s1)
            s2 = torch.where(v2 >= 1.0, 1.0, 0.0).to(x.dtype)
            v2 = v2 - s2
            v3 = 0.9 * v3 + self.fc3(s2)
            s3 = (v3 >= 1.0).to(x.dtype)
            v3 = v3 - s3
            record.append(s3)
        return torch.stack(record).sum(dim=0)


class ReluMLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(12, 16), nn.Linear(16, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(F.relu(self.a(x)))


class StairMLP(nn.Module):
    """A staircase activation written inline."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b, self.c = nn.Linear(12, 16), nn.Linear(16, 16), nn.Linear(16, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.a(x)
        h = torch.clamp(torch.floor(4 * torch.sigmoid(h)), max=3) / 4
        h = self.b(h)
        h = torch.clamp(torch.floor(4 * torch.sigmoid(h)), max=3) / 4
        return self.c(h)


class ModuleSNN(nn.Module):
    """polystep's own LIF / SpikeCount and an int8 QuantLinear inside a user class."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.lif1 = QuantLinear(12, 16), LIF(0.9, num_steps=T)
        self.fc2, self.lif2, self.count = nn.Linear(16, 5), LIF(0.9), SpikeCount()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.count(self.lif2(self.fc2(self.lif1(self.fc1(x)))))


class Skip(nn.Module):
    """A residual around the middle Linear: touched units also reach the output directly."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b, self.c = nn.Linear(12, 16), nn.Linear(16, 16), nn.Linear(16, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.floor(2 * torch.relu(self.a(x)))
        return self.c(h + torch.floor(2 * torch.relu(self.b(h))))


class Normalised(nn.Module):
    """Normalises across units between the Linears: the first one cannot be unit-sparse."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(12, 16), nn.Linear(16, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.a(x)
        return self.b(torch.relu(h - h.mean(dim=-1, keepdim=True)))


class Branchy(nn.Module):
    """A data-dependent Python branch: fx cannot trace it."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(12, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.a(x)
        if h.sum() > 0:
            return h
        return -h


MODELS = {
    "snn2": SNN2,
    "augmented": AugmentedSNN,
    "snn3": SNN3,
    "relu": ReluMLP,
    "stair": StairMLP,
    "modules": ModuleSNN,
    "skip": Skip,
}
SPACES = {
    "factored": lambda lay: FactoredSubspace.from_layout(lay, rank=4, seed=2, direct_max=64),
    "hybrid": lambda lay: HybridSubspace.from_layout(lay, rank=2, seed=2),
    "full": lambda lay: FullSpace.from_layout(lay, block_dim=2),
}


def setup(name: str, space_name: str, dtype: torch.dtype):
    torch.manual_seed(0)
    model = {**MODELS, "float_snn": FloatSNN}[name]().to(dtype)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(3.0)  # spikes occur, staircases move
    space = SPACES[space_name](ParamLayout.from_module(model)).to("cpu", dtype)
    x, y = torch.randn(9, 12, dtype=dtype), torch.randint(0, 5, (9,))
    return model, space, (x, y), step_candidates(space, 1.0, keep=160)


@pytest.mark.parametrize("space_name", sorted(SPACES))
@pytest.mark.parametrize("name", sorted(MODELS))
def test_user_models_agree_with_the_oracle_in_float64(name: str, space_name: str) -> None:
    model, space, batch, cands = setup(name, space_name, torch.float64)
    loss_fn = nn.CrossEntropyLoss()
    ref = ReferenceEvaluator(model, loss_fn, space).evaluate(cands, batch)
    assert ref.std() > 0
    ev = CapturedEvaluator(model, loss_fn, space, chunk_size=7, strict=True)
    got = ev.evaluate(cands, batch)
    assert torch.allclose(got, ref, atol=1e-10, rtol=0)
    if name != "augmented":  # vmap cannot add batched spikes into an unbatched count in place
        vmap = VmapEvaluator(model, loss_fn, space).evaluate(cands, batch)
        assert torch.allclose(got, vmap, atol=1e-10, rtol=0)
    assert ev.pairs_dense > 0  # the rest of the net ran on changed (candidate, sample) pairs
    kernels = not isinstance(fused_kernels.library(), str)
    assert (ev.fused_candidates > 0) == (kernels and name in ("snn2", "augmented", "modules"))


def test_a_loss_that_is_not_per_sample_runs_every_sample() -> None:
    model, space, (x, _), cands = setup("snn3", "factored", torch.float64)
    target = torch.randn(9, 5, dtype=torch.float64)

    def loss_fn(out: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return ((out - t) ** 2).mean() + out.std()

    ref = ReferenceEvaluator(model, loss_fn, space).evaluate(cands, (x, target))
    ev = CapturedEvaluator(model, loss_fn, space, strict=True)
    assert torch.allclose(ev.evaluate(cands, (x, target)), ref, atol=1e-10, rtol=0)
    assert ev.pairs_dense == 0


def test_candidates_that_change_no_spike_keep_the_incumbent_loss() -> None:
    model, space, batch, _ = setup("snn2", "factored", torch.float64)
    cands = step_candidates(space, 1e-12, keep=160)
    loss_fn = nn.CrossEntropyLoss()
    ev = CapturedEvaluator(model, loss_fn, space, strict=True)
    got = ev.evaluate(cands, batch)
    assert torch.allclose(got, ev.loss(batch).double().expand_as(got), atol=1e-12, rtol=0)


@pytest.mark.parametrize("name", [*sorted(MODELS), "float_snn"])
def test_user_models_agree_in_float32_within_rounding(name: str) -> None:
    """Against the float32 oracle: hard thresholds may flip where the rank-k update rounds
    differently from the full product; such candidates must be rare (they are printed)."""
    model, space, batch, cands = setup(name, "factored", torch.float32)
    loss_fn = nn.CrossEntropyLoss()
    ref = ReferenceEvaluator(model, loss_fn, space).evaluate(cands, batch)
    got = CapturedEvaluator(model, loss_fn, space, strict=True).evaluate(cands, batch)
    off = ~torch.isclose(got, ref.to(got), rtol=1e-5, atol=1e-5)
    print(f"{name}: {int(off.sum())} of {len(cands)} candidates differ beyond rounding")
    assert int(off.sum()) <= max(1, len(cands) // 100)


def test_auto_gives_a_user_class_the_captured_path_and_says_so() -> None:
    model, space, _, _ = setup("snn2", "factored", torch.float64)
    with pytest.warns(UserWarning, match="captured.*not an nn.Sequential.*kernel for fc1"):
        ev = make_evaluator("auto", model, nn.CrossEntropyLoss(), space)
    assert isinstance(ev, CapturedEvaluator)
    assert ev.fallback_reason is None
    ev = make_evaluator("auto", model, nn.CrossEntropyLoss(), space, strict=True)
    assert isinstance(ev, CapturedEvaluator)


def test_normalisation_across_units_falls_back_for_that_layer_naming_the_node() -> None:
    torch.manual_seed(0)
    model = Normalised().double()
    space = FactoredSubspace.from_layout(ParamLayout.from_module(model), rank=4, seed=0)
    space.to("cpu", torch.float64)
    loss_fn = nn.CrossEntropyLoss()
    with pytest.warns(RuntimeWarning, match="2 of 4 parameters run on vmap.*mean"):
        ev = CapturedEvaluator(model, loss_fn, space)
    assert set(ev.refused) == {"a.weight", "a.bias"} and set(ev.plans) == {"b.weight", "b.bias"}
    x, y = torch.randn(9, 12, dtype=torch.float64), torch.randint(0, 5, (9,))
    cands = step_candidates(space, 1.0, keep=160)
    ref = ReferenceEvaluator(model, loss_fn, space).evaluate(cands, (x, y))
    assert torch.allclose(ev.evaluate(cands, (x, y)), ref, atol=1e-10, rtol=0)
    with pytest.raises(FallbackError, match="mean"):
        CapturedEvaluator(model, loss_fn, space, strict=True)
    with pytest.raises(NotLayerable, match="mean"):
        make_evaluator("auto", model, loss_fn, space, strict=True)


def test_untraceable_branch_falls_back_to_vmap_with_the_reason() -> None:
    model = Branchy()
    space = FullSpace.from_layout(ParamLayout.from_module(model))
    with pytest.raises(NotCapturable, match=r"torch\.fx cannot trace Branchy"):
        CapturedEvaluator(model, nn.MSELoss(), space)
    with pytest.warns(UserWarning, match=r"uses vmap.*torch\.fx cannot trace Branchy"):
        assert isinstance(make_evaluator("auto", model, nn.MSELoss(), space), VmapEvaluator)
    with pytest.raises(NotLayerable, match=r"torch\.fx cannot trace"):
        make_evaluator("auto", model, nn.MSELoss(), space, strict=True)


class Recurrent(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.inp, self.rec = nn.Linear(12, 8), nn.Linear(8, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.zeros(x.shape[0], 8)
        for _ in range(3):
            h = torch.tanh(self.inp(x) + self.rec(h))
        return h


class RawWeight(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(12, 8), nn.Linear(8, 5)
        self.w = nn.Parameter(torch.randn(5, 12))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(torch.relu(self.a(x))) + x @ self.w.T


class InPlace(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(12, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.a(x).relu_()


class AliasedInPlace(nn.Module):
    """``h += 1`` while an alias of ``h`` is read afterwards: fx records an out-of-place add,
    so the graph computes something else than the model."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(12, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.a(x)
        g = h
        h += 1.0
        return g * h


@pytest.mark.parametrize(
    ("model", "refused", "why"),
    [
        (Recurrent(), {"rec.weight", "rec.bias"}, "recurrence"),
        (RawWeight(), {"w"}, "read directly"),
    ],
)
def test_refusals_name_the_parameter_and_the_reason(model, refused: set, why: str) -> None:
    space = FullSpace.from_layout(ParamLayout.from_module(model))
    with pytest.warns(RuntimeWarning, match="run on vmap"):
        ev = CapturedEvaluator(model, nn.MSELoss(), space)
    assert set(ev.refused) == refused and all(why in r for r in ev.refused.values())
    x, y = torch.randn(4, 12), torch.randn(4, model(torch.randn(4, 12)).shape[-1])
    cands = step_candidates(space, 0.5, keep=40)
    ref = ReferenceEvaluator(model, nn.MSELoss(), space).evaluate(cands, (x, y))
    got = ev.evaluate(cands, (x, y))
    assert torch.allclose(got, ref.to(got), atol=1e-5, rtol=1e-4)


def test_in_place_ops_are_refused() -> None:
    model = InPlace()
    space = FullSpace.from_layout(ParamLayout.from_module(model))
    with pytest.raises(NotCapturable, match="in-place"):
        CapturedEvaluator(model, nn.MSELoss(), space)


def test_a_graph_that_differs_from_the_model_falls_back_on_first_use() -> None:
    torch.manual_seed(0)
    model = AliasedInPlace()
    space = FullSpace.from_layout(ParamLayout.from_module(model))
    ev = CapturedEvaluator(model, nn.MSELoss(), space)
    x, y = torch.randn(4, 12), torch.randn(4, 8)
    cands = step_candidates(space, 0.5, keep=20)
    with pytest.warns(RuntimeWarning, match="does not reproduce the model's forward"):
        got = ev.evaluate(cands, (x, y))
    assert not ev.plans
    ref = ReferenceEvaluator(model, nn.MSELoss(), space).evaluate(cands, (x, y))
    assert torch.allclose(got, ref.to(got), atol=1e-5, rtol=1e-4)


def test_optimizer_step_on_a_user_class_matches_the_reference_evaluator() -> None:
    """Same seed, same batch: the auto (captured) path, the captured path asked for by name and
    the oracle take the same step."""
    torch.manual_seed(0)
    x, y = torch.randn(16, 12, dtype=torch.float64), torch.randint(0, 5, (16,))
    states = []
    for kind in ("auto", "captured", "reference"):
        torch.manual_seed(1)
        model = SNN2().double()
        with torch.no_grad():
            for p in model.parameters():
                p.mul_(3.0)
        opt = PolyStepOptimizer(model, preset="snn", subspace="factored", evaluator=kind, seed=0)
        opt.set_horizon(steps=1)  # the preset's schedules over the run
        with pytest.warns(UserWarning) if kind == "auto" else _nothing():
            opt.step_batch(x, y, loss_fn=nn.CrossEntropyLoss())
        states.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
    assert torch.allclose(states[0], states[2], atol=1e-9, rtol=0)
    assert torch.equal(states[0], states[1])
    assert not torch.equal(states[0], torch.cat([p.flatten() for p in SNN2().parameters()]))


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


# -- hard-LIF loops as users write them: the fused SNN kernels ------------------------------------
class TimedSNN(nn.Module):
    """A current per step (inputs ``(B, T, 12)``), other spellings of the same neuron:
    ``v·β``, reset ``v − v·s``, ``.to(dtype)``, no leak above (β = 1), spikes in a list."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(12, 16), nn.Linear(16, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        v1 = x.new_zeros(x.shape[0], 16)
        v2 = torch.zeros(x.shape[0], 5, dtype=x.dtype)
        record = []
        for t in range(T):
            v1 = v1 * 0.8 + self.fc1(x[:, t])
            s1 = (v1 >= 1.0).to(x.dtype)
            v1 = v1 - v1 * s1
            v2 = v2 + self.fc2(s1)
            s2 = (v2 >= 0.5).to(x.dtype)
            v2 = v2 - v2 * s2
            record.append(s2)
        return torch.stack(record).sum(dim=0)


class SummedSNN(SNN2):
    """``.type_as``, ``(1 − s)·v``, ``β·v`` written after the current, ``sum(list)``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        v1 = torch.zeros_like(self.fc1(x))
        v2 = x.new_zeros(x.shape[0], 5)
        record = []
        for _ in range(T):
            v1 = self.fc1(x) + 0.7 * v1
            s1 = (v1 >= 1.0).type_as(x)
            v1 = (1.0 - s1) * v1
            v2 = self.fc2(s1) + v2 * 0.9
            s2 = (v2 >= 1.0).type_as(x)
            v2 = (1.0 - s2) * v2
            record.append(s2)
        return sum(record)


class Delayed(SNN2):
    """The output layer takes the PREVIOUS step's spikes: a different net, no kernel match."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        v1 = torch.zeros(x.shape[0], self.fc1.out_features, dtype=x.dtype)
        v2 = torch.zeros(x.shape[0], self.fc2.out_features, dtype=x.dtype)
        s1 = torch.zeros_like(v1)
        count = torch.zeros_like(v2)
        for _ in range(T):
            s2, v2 = lif_loop(self.fc2(s1), v2)
            s1, v1 = lif_loop(self.fc1(x), v1)
            count = count + s2
        return count


def loop_setup(model: nn.Module, dtype: torch.dtype, inputs: tuple[int, ...] = (24, 12)):
    torch.manual_seed(0)
    model = model.to(dtype)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(3.0)
    layout = ParamLayout.from_module(model)
    space = FactoredSubspace.from_layout(layout, rank=4, seed=2, direct_max=64).to("cpu", dtype)
    x, y = 1.5 * torch.rand(*inputs, dtype=dtype), torch.randint(0, 5, (inputs[0],))
    return model, space, (x, y), step_candidates(space, 0.5, keep=200)


@needs_kernels
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("name", ["snn2", "timed", "summed", "modules"])
def test_hard_lif_loops_get_the_fused_kernels_and_agree(name: str, dtype: torch.dtype) -> None:
    """float64: the oracle to 1e-10; both dtypes: the eager captured suffix (the kernels'
    logits are spike counts, the same to the bit). ``modules``: polystep's layers, not a loop."""
    model = {"snn2": SNN2, "timed": TimedSNN, "summed": SummedSNN, "modules": ModuleSNN}[name]()
    inputs = (24, T, 12) if name == "timed" else (24, 12)
    model, space, batch, cands = loop_setup(model, dtype, inputs)
    loss_fn = nn.CrossEntropyLoss()
    ev = CapturedEvaluator(model, loss_fn, space, chunk_size=23, strict=True)
    got = ev.evaluate(cands, batch)
    assert ev.path == "fused hard-LIF kernel for fc1 (snn_hidden), fc2 (snn_output)"
    assert ev.fused_candidates == len(cands) and ev.pairs_run < ev.pairs_dense
    eager = CapturedEvaluator(model, loss_fn, space, chunk_size=23, strict=True, fused=False)
    want = eager.evaluate(cands, batch)
    assert eager.fused_candidates == 0 and "turned off" in eager.path
    tol = 1e-12 if dtype == torch.float64 else 1e-6
    assert torch.allclose(got, want, atol=tol, rtol=0)
    if dtype == torch.float64:
        ref = ReferenceEvaluator(model, loss_fn, space).evaluate(cands, batch)
        assert ref.std() > 0 and torch.allclose(got, ref, atol=1e-10, rtol=0)


@needs_kernels
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_a_user_snn_scores_as_spiking_mlp_with_the_same_weights(dtype: torch.dtype) -> None:
    user, space, batch, cands = loop_setup(SNN2(), dtype)
    mlp = SpikingMLP((12, 16, 5), num_steps=T, beta=0.9).to(dtype)
    with torch.no_grad():
        for mine, theirs in ((user.fc1, mlp[0]), (user.fc2, mlp[2])):
            theirs.weight.copy_(mine.weight)
            theirs.bias.copy_(mine.bias)
    mlp_space = FactoredSubspace.from_layout(
        ParamLayout.from_module(mlp), rank=4, seed=2, direct_max=64
    ).to("cpu", dtype)
    loss_fn = nn.CrossEntropyLoss()
    got = CapturedEvaluator(user, loss_fn, space, strict=True).evaluate(cands, batch)
    ref = LayeredEvaluator(mlp, loss_fn, mlp_space, strict=True)
    want = ref.evaluate(cands, batch)
    assert ref.fused_candidates == len(cands)
    tol = 1e-12 if dtype == torch.float64 else 1e-6
    assert want.std() > 0 and torch.allclose(got, want, atol=tol, rtol=0)


@pytest.mark.parametrize(
    ("model", "why"),
    [
        (SNN3(), "node 'sub'"),  # reset by subtraction: not the kernels' neuron
        (Delayed(), "node 'add_3'"),  # fc1's spikes reach fc2 a step later
    ],
)
def test_other_loops_keep_the_eager_suffix_and_say_why(model: nn.Module, why: str) -> None:
    model, space, batch, cands = loop_setup(model, torch.float64)
    loss_fn = nn.CrossEntropyLoss()
    ev = CapturedEvaluator(model, loss_fn, space, strict=True)
    assert "eager suffix for fc1: " in ev.path and why in ev.eager["fc1"]
    got = ev.evaluate(cands, batch)
    assert "fc1" not in ev.matches
    ref = ReferenceEvaluator(model, loss_fn, space).evaluate(cands, batch)
    assert torch.allclose(got, ref, atol=1e-10, rtol=0)


@needs_kernels
def test_a_matched_loop_without_kernels_falls_back_once_and_strict_mode_raises(
    monkeypatch,
) -> None:
    model, space, batch, cands = loop_setup(SNN2(), torch.float64)
    loss_fn = nn.CrossEntropyLoss()
    want = CapturedEvaluator(model, loss_fn, space, fused=False).evaluate(cands, batch)
    monkeypatch.setattr(fused, "library", lambda: "no C++ compiler found (set CXX)")
    ev = CapturedEvaluator(model, loss_fn, space)
    with pytest.warns(RuntimeWarning, match="'fc1' takes the eager suffix.*compiler") as rec:
        got = ev.evaluate(cands, batch)
        ev.evaluate(cands, batch)
    assert len(rec) == 1 and ev.fused_candidates == 0 and "compiler" in ev.path
    assert torch.equal(got, want)
    with pytest.raises(FallbackError, match="compiler"):
        CapturedEvaluator(model, loss_fn, space, strict=True).evaluate(cands, batch)


def test_a_layer_called_every_step_on_the_same_input_runs_once_per_forward() -> None:
    model, _, (x, _), _ = setup("snn2", "factored", torch.float64)
    calls = []
    model.fc1.register_forward_hook(lambda *args: calls.append(1))
    env = run_graph(capture(model), x)
    assert len(calls) == 1  # fc1(x) in each of the T steps
    assert torch.equal(env[next(n for n in env if n.op == "output")], model(x))


@needs_kernels
def test_kernel_chunks_on_two_threads_give_the_one_thread_losses() -> None:
    model, space, batch, cands = loop_setup(SNN2(), torch.float32)
    runs = []
    before = torch.get_num_threads()
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            ev = CapturedEvaluator(model, nn.CrossEntropyLoss(), space, chunk_size=16, strict=True)
            runs.append(ev.evaluate(cands, batch))
            assert ev.fused_candidates == len(cands)
    finally:
        torch.set_num_threads(before)
    assert torch.equal(runs[0], runs[1])
