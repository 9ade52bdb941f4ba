"""Evaluators agree with the reference oracle (float64) and fall back visibly."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from polystep.blocks import BlockCandidates, propose_blocks
from polystep.evaluate import (
    CapturedEvaluator,
    LayeredEvaluator,
    ReferenceEvaluator,
    VmapEvaluator,
    make_evaluator,
)
from polystep.nn import LIF, Staircase, quantized_mlp, spiking_mlp
from polystep.step import StepRule
from polystep.subspace import FactoredSubspace, FullSpace, HybridSubspace, SparseProjection
from polystep.transform import ParamLayout


def snn() -> nn.Module:
    model = spiking_mlp((12, 16, 5), num_steps=6)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(3.0)  # enough current for spikes to occur
    return model


def conv_net() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 3, 3), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 2 * 2, 5)
    )  # fmt: skip


MODELS = {
    "mlp": (lambda: nn.Sequential(nn.Linear(12, 16), nn.Tanh(), nn.Linear(16, 5)), (12,)),
    "snn": (snn, (12,)),
    "int8": (lambda: quantized_mlp((12, 16, 16, 5)), (12,)),
    "staircase": (lambda: nn.Sequential(nn.Linear(12, 16), Staircase(), nn.Linear(16, 5)), (12,)),
    "conv": (conv_net, (1, 4, 4)),
}
SPACES = {
    "full": lambda lay: FullSpace.from_layout(lay, block_dim=2),
    "hybrid": lambda lay: HybridSubspace.from_layout(lay, rank=3, seed=1),
    "factored": lambda lay: FactoredSubspace.from_layout(lay, rank=3, seed=2),
    "sparse": lambda lay: SparseProjection.from_layout(lay, dim=48, seed=3),
}


def candidates(space, radius: float = 0.5, keep: int | None = None) -> BlockCandidates:
    """One step's candidates; ``keep`` evenly spaced ones (covering every segment) if given."""
    rule = StepRule.build(epsilon=1.0, step_radius=radius, probe_radius=radius)
    z = torch.zeros(space.dim, dtype=torch.float64)
    cands = propose_blocks(rule, z, space.block_dim, 0, torch.Generator().manual_seed(0))[1]
    if keep is None or keep >= len(cands):
        return cands
    seg = space.block_segments()[cands.block]
    idx = torch.linspace(0, len(cands) - 1, keep).long()
    firsts = torch.stack([torch.nonzero(seg == s)[0, 0] for s in torch.unique(seg)])
    idx = torch.unique(torch.cat([idx, firsts]))
    return BlockCandidates(block=cands.block[idx], offset=cands.offset[idx], dim=cands.dim)


@pytest.mark.parametrize("space_name", sorted(SPACES))
@pytest.mark.parametrize("model_name", sorted(MODELS))
def test_evaluators_agree_with_reference(model_name: str, space_name: str) -> None:
    torch.manual_seed(0)
    build, shape = MODELS[model_name]
    model = build().double()
    space = SPACES[space_name](ParamLayout.from_module(model)).to("cpu", torch.float64)
    x = torch.randn(7, *shape, dtype=torch.float64)
    y = torch.randint(0, 5, (7,))
    cands = candidates(space, keep=80)
    loss_fn = nn.CrossEntropyLoss()
    ref = ReferenceEvaluator(model, loss_fn, space).evaluate(cands, (x, y))
    assert ref.shape == (len(cands),) and ref.std() > 0
    for cls in (VmapEvaluator, LayeredEvaluator):
        ev = cls(model, loss_fn, space, chunk_size=13)  # odd chunks cross segment boundaries
        got = ev.evaluate(cands, (x, y))
        assert torch.allclose(got, ref, atol=1e-10, rtol=0), cls.name
        assert getattr(ev, "fallback_reason", None) is None


def test_auto_prefers_layered_then_captured() -> None:
    model = nn.Sequential(nn.Linear(3, 2))
    space = FullSpace.from_layout(ParamLayout.from_module(model))
    assert isinstance(make_evaluator("auto", model, nn.MSELoss(), space), LayeredEvaluator)

    class Wrapped(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = nn.Linear(3, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.inner(x)

    wrapped = Wrapped()
    space = FullSpace.from_layout(ParamLayout.from_module(wrapped))
    with pytest.warns(UserWarning, match="captured.*not an nn.Sequential"):
        ev = make_evaluator("auto", wrapped, nn.MSELoss(), space)
        assert isinstance(ev, CapturedEvaluator)
    with pytest.raises(ValueError, match="evaluator"):
        make_evaluator("fast", wrapped, nn.MSELoss(), space)


class DataDependent(nn.Module):
    """Not vmap-safe: Python control flow on a tensor value."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.lin(x)
        return out * 2 if bool(out.sum() > 0) else out


def test_vmap_fallback_is_reported_and_correct() -> None:
    torch.manual_seed(0)
    model = DataDependent().double()
    space = FullSpace.from_layout(ParamLayout.from_module(model)).to("cpu", torch.float64)
    x, y = torch.randn(5, 4, dtype=torch.float64), torch.randint(0, 3, (5,))
    cands = candidates(space)
    ev = VmapEvaluator(model, nn.CrossEntropyLoss(), space)
    with pytest.warns(RuntimeWarning, match="fell back"):
        got = ev.evaluate(cands, (x, y))
    assert ev.fell_back and "Error" in ev.fallback_reason
    ref = ReferenceEvaluator(model, nn.CrossEntropyLoss(), space).evaluate(cands, (x, y))
    assert torch.equal(got, ref)


def test_evaluation_restores_mode_and_buffers() -> None:
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))
    model.train()
    before = {k: b.clone() for k, b in model.named_buffers()}
    space = FullSpace.from_layout(ParamLayout.from_module(model))
    x, y = torch.randn(6, 3), torch.randn(6, 2)
    for kind in ("reference", "vmap"):
        make_evaluator(kind, model, nn.MSELoss(), space).evaluate(candidates(space), (x, y))
    assert model.training and all(m.training for m in model.modules())
    for k, b in model.named_buffers():
        assert torch.equal(b, before[k])


@pytest.mark.parametrize("static", [True, False])
def test_in_place_lif_is_bit_identical(static: bool) -> None:
    torch.manual_seed(0)
    lif = LIF(num_steps=7 if static else None)
    current = torch.randn(5, 9) * 2 if static else torch.randn(7, 5, 9) * 2
    fast = lif(current)  # no grad needed: the in-place loop
    slow = lif(current.requires_grad_())  # the step-by-step loop autograd can follow
    assert torch.equal(fast, slow.detach())
