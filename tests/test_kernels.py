"""The layered fast path on every zoo model: agreement with the reference oracle, strict mode,
layers that join the fast path by declaring their traits, the event-driven suffix."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from candidate_helpers import step_candidates
from polystep.evaluate import LayeredEvaluator, ReferenceEvaluator, make_evaluator
from polystep.evaluate.layered import FallbackError, NotLayerable
from polystep.evaluate.traits import BATCHWISE, UNITWISE, Traits, traits_of
from polystep.nn import (
    QuantLinear,
    argmax_attention_net,
    binary_mlp,
    hard_moe_net,
    mlp,
    quantized_mlp,
    spiking_mlp,
    staircase_mlp,
)
from polystep.subspace import FactoredSubspace, FullSpace
from polystep.transform import ParamLayout


def snn() -> nn.Module:
    model = spiking_mlp((12, 16, 5), num_steps=6)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(3.0)  # spikes occur
    return model


ZOO = {
    "mlp": lambda: mlp((12, 16, 5)),
    "snn": snn,
    "int8": lambda: quantized_mlp((12, 16, 16, 5)),
    "binary": lambda: binary_mlp((12, 16, 5)),
    "staircase": lambda: staircase_mlp((12, 16, 16, 5)),
    "argmax": lambda: argmax_attention_net(12, 16, 5, num_keys=3),
    "moe": lambda: hard_moe_net(12, 8, 5, num_experts=2),
}
SPACES = {
    "factored": lambda lay: FactoredSubspace.from_layout(lay, rank=8, seed=2, direct_max=64),
    "full": lambda lay: FullSpace.from_layout(lay, block_dim=2),
}


def setup(name: str, space_name: str, dtype: torch.dtype, radius: float = 0.5):
    torch.manual_seed(0)
    model = ZOO[name]().to(dtype)
    space = SPACES[space_name](ParamLayout.from_module(model)).to("cpu", dtype)
    x = torch.randn(9, 12, dtype=dtype)
    y = torch.randint(0, 5, (9,))
    return model, space, (x, y), step_candidates(space, radius)


@pytest.mark.parametrize("space_name", sorted(SPACES))
@pytest.mark.parametrize("name", sorted(ZOO))
def test_every_zoo_model_agrees_in_float64_without_fallback(name: str, space_name: str) -> None:
    model, space, batch, cands = setup(name, space_name, torch.float64)
    loss_fn = nn.CrossEntropyLoss()
    ref = ReferenceEvaluator(model, loss_fn, space).evaluate(cands, batch)
    assert ref.std() > 0
    ev = LayeredEvaluator(model, loss_fn, space, chunk_size=37, strict=True)
    got = ev.evaluate(cands, batch)
    assert torch.allclose(got, ref, atol=1e-10, rtol=0)
    assert ev.fallback_reason is None


@pytest.mark.parametrize("name", sorted(ZOO))
def test_every_zoo_model_agrees_in_float32_within_rounding(name: str) -> None:
    """float32 against the float32 oracle: equal within rounding, except candidates where a
    hard threshold (spike, quantization step, argmax) flips on a rounding difference; those
    must be rare, and are printed."""
    model, space, batch, cands = setup(name, "factored", torch.float32)
    loss_fn = nn.CrossEntropyLoss()
    ref = ReferenceEvaluator(model, loss_fn, space).evaluate(cands, batch)
    got = LayeredEvaluator(model, loss_fn, space, strict=True).evaluate(cands, batch)
    off = ~torch.isclose(got, ref.to(got), rtol=1e-5, atol=1e-5)
    print(f"{name}: {int(off.sum())} of {len(cands)} candidates differ beyond rounding")
    assert int(off.sum()) <= max(1, len(cands) // 100)


class Cube(nn.Module):
    """A user's activation: x³, unit-wise; joins the fast path by declaring its traits only."""

    polystep_traits = UNITWISE

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * x * x


def test_user_unitwise_layer_runs_on_the_unit_sparse_path() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(12, 16), Cube(), nn.Linear(16, 5)).double()
    space = SPACES["factored"](ParamLayout.from_module(model)).to("cpu", torch.float64)
    x, y = torch.randn(9, 12, dtype=torch.float64), torch.randint(0, 5, (9,))
    cands = step_candidates(space, 0.5)
    loss_fn = nn.CrossEntropyLoss()
    ev = LayeredEvaluator(model, loss_fn, space, strict=True)
    got = ev.evaluate(cands, (x, y))
    assert ev.pairs_dense > 0  # hidden-layer candidates went through the unit-sparse suffix
    ref = ReferenceEvaluator(model, loss_fn, space).evaluate(cands, (x, y))
    assert torch.allclose(got, ref, atol=1e-10, rtol=0)


def test_layer_without_traits_is_not_layerable_and_says_why() -> None:
    class Mystery(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x - x.mean(dim=0)  # mixes samples: must not be assumed batch-wise

    model = nn.Sequential(nn.Linear(4, 3), Mystery())
    space = FullSpace.from_layout(ParamLayout.from_module(model))
    with pytest.raises(NotLayerable, match="Mystery"):
        LayeredEvaluator(model, nn.MSELoss(), space)
    # auto then captures the forward: a mean over samples acts on each unit separately
    with pytest.warns(UserWarning, match="captured.*Mystery"):
        assert make_evaluator("auto", model, nn.MSELoss(), space).name == "captured"


def test_subclass_of_linear_is_not_assumed_linear() -> None:
    class Doubled(nn.Linear):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return 2 * super().forward(x)

    assert traits_of(nn.Linear(2, 2)).plain_linear
    assert not traits_of(Doubled(2, 2)).batchwise
    assert traits_of(QuantLinear(2, 2)).linear and not traits_of(QuantLinear(2, 2)).plain_linear
    with pytest.raises(TypeError, match="polystep_traits"):

        class Bad(nn.Module):
            polystep_traits = True

        traits_of(Bad())


class Gate(nn.Module):
    """Batch-wise by declaration, but with Python control flow on a tensor value (no vmap)."""

    polystep_traits = BATCHWISE

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale if bool(self.scale.sum() > 0) else -x


def test_slower_path_is_announced_once_and_strict_mode_raises() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3), Gate()).double()
    space = FullSpace.from_layout(ParamLayout.from_module(model)).to("cpu", torch.float64)
    x, y = torch.randn(5, 4, dtype=torch.float64), torch.randint(0, 3, (5,))
    cands = step_candidates(space, 0.5)
    loss_fn = nn.CrossEntropyLoss()
    ev = LayeredEvaluator(model, loss_fn, space)
    with pytest.warns(RuntimeWarning, match="one candidate at a time") as record:
        got = ev.evaluate(cands, (x, y))
        ev.evaluate(cands, (x, y))
    assert len(record) == 1 and "Gate" in ev.fallback_reason
    ref = ReferenceEvaluator(model, loss_fn, space).evaluate(cands, (x, y))
    assert torch.allclose(got, ref, atol=1e-12, rtol=0)
    with pytest.raises(FallbackError, match="Gate"):
        LayeredEvaluator(model, loss_fn, space, strict=True).evaluate(cands, (x, y))


def test_event_driven_suffix_skips_unchanged_samples_and_handles_none_changed() -> None:
    model, space, batch, cands = setup("snn", "factored", torch.float64, radius=1e-9)
    loss_fn = nn.CrossEntropyLoss()
    ev = LayeredEvaluator(model, loss_fn, space, strict=True)
    got = ev.evaluate(cands, batch)  # tiny moves: almost no spike changes anywhere
    assert ev.pairs_run < ev.pairs_dense
    ref = ReferenceEvaluator(model, loss_fn, space).evaluate(cands, batch)
    assert torch.allclose(got, ref, atol=1e-10, rtol=0)


@pytest.mark.parametrize("name", ["snn", "argmax"])
def test_chunks_on_two_threads_give_the_one_thread_losses(name: str) -> None:
    """argmax: unit-sparse chunks in the pool while other chunks swap the attention layer's
    parameters through functional_call (those must not overlap)."""
    model, space, batch, cands = setup(name, "factored", torch.float64)
    loss_fn = nn.CrossEntropyLoss()
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = LayeredEvaluator(model, loss_fn, space, chunk_size=16).evaluate(cands, batch)
        torch.set_num_threads(2)
        two = LayeredEvaluator(model, loss_fn, space, chunk_size=16).evaluate(cands, batch)
        assert torch.get_num_threads() == 2  # restored after the pool
    finally:
        torch.set_num_threads(before)
    assert torch.equal(one, two)


def test_traits_default_to_none() -> None:
    assert traits_of(nn.Module()) == Traits()
    assert traits_of(nn.Flatten(0)) == Traits() and traits_of(nn.Flatten()).batchwise


@pytest.mark.parametrize("name,preset", [("snn", "snn"), ("int8", "quantized")])
def test_float64_training_trajectory_is_the_reference_one(name: str, preset: str) -> None:
    """Fixed seed, float64: the layered evaluator drives the optimizer along exactly the path
    the reference evaluator does (same losses, same parameters after every step)."""
    from polystep.optimizer import PolyStepOptimizer

    torch.manual_seed(0)
    x, y = torch.randn(16, 12, dtype=torch.float64), torch.randint(0, 5, (16,))
    runs = {}
    for kind in ("layered", "reference"):
        torch.manual_seed(1)
        model = ZOO[name]().double()
        start = torch.cat([p.detach().flatten() for p in model.parameters()])
        opt = PolyStepOptimizer(model, preset=preset, subspace="factored", evaluator=kind, seed=3)
        opt.set_horizon(steps=3)  # for the snn preset's schedules over the run
        losses = [opt.step_batch(x, y, nn.CrossEntropyLoss()) for _ in range(3)]
        runs[kind] = (losses, torch.cat([p.detach().flatten() for p in model.parameters()]))
    assert runs["layered"][0] == pytest.approx(runs["reference"][0], abs=1e-10)
    assert torch.allclose(runs["layered"][1], runs["reference"][1], atol=1e-10, rtol=0)
    assert not torch.equal(runs["layered"][1], start)  # the run did move


@pytest.mark.slow
def test_gpu_check_script_runs_on_cpu(tmp_path) -> None:
    """benchmarks/gpu_check.sh --device cpu: both benchmarks run and the table is printed."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.sh"
    env = {**os.environ, "RESULTS_DIR": str(tmp_path), "PYTHON": sys.executable}
    env["MODELS"] = "snn_mnist,mlp_mnist"  # the MoE alone takes minutes on a 2-core CPU
    done = subprocess.run(
        ["bash", str(script), "--device", "cpu"], env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-2000:]
    lines = (tmp_path / "roofline_cpu.jsonl").read_text().splitlines()
    assert {json.loads(line)["model"] for line in lines} >= {"snn_mnist", "mlp_mnist"}
    assert "% of limit" in done.stdout
