"""The vmap-safe LSTM: agreement with torch.nn.LSTM, binary gates, and PolyStep's evaluators."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from polystep import PolyStepOptimizer
from polystep.blocks import propose_blocks
from polystep.evaluate import LayeredEvaluator, ReferenceEvaluator, VmapEvaluator
from polystep.nn.recurrent import LSTM, LastHidden, lstm_forecaster
from polystep.step import StepRule
from polystep.subspace import FactoredSubspace, SparseProjection
from polystep.transform import ParamLayout


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_matches_torch_lstm_with_the_same_weights(dtype: torch.dtype) -> None:
    torch.manual_seed(0)
    ref = nn.LSTM(3, 16, batch_first=True).to(dtype)
    ours = LSTM(3, 16).to(dtype)
    ours.load_state_dict(ref.state_dict())  # same names, same gate order
    x = torch.randn(5, 40, 3, dtype=dtype)
    state = (torch.randn(1, 5, 16, dtype=dtype), torch.randn(1, 5, 16, dtype=dtype))
    tol = 1e-12 if dtype == torch.float64 else 1e-6
    for init in (None, state):
        out_ref, (h_ref, c_ref) = ref(x, init)
        out, (h, c) = ours(x, init)
        assert out.shape == out_ref.shape and h.shape == h_ref.shape and c.shape == c_ref.shape
        for a, b in ((out, out_ref), (h, h_ref), (c, c_ref)):
            assert (a - b).abs().max() <= tol


def test_gradients_match_torch_lstm() -> None:
    torch.manual_seed(1)
    ref = nn.LSTM(2, 8, batch_first=True).double()
    ours = LSTM(2, 8).double()
    ours.load_state_dict(ref.state_dict())
    x = torch.randn(3, 10, 2, dtype=torch.float64)
    ref(x)[0].pow(2).sum().backward()
    ours(x)[0].pow(2).sum().backward()
    for (name, p), q in zip(ours.named_parameters(), ref.parameters(), strict=True):
        assert torch.allclose(p.grad, q.grad, atol=1e-12), name


def test_last_hidden_and_forecaster_shapes() -> None:
    torch.manual_seed(0)
    model = lstm_forecaster(7, hidden_size=8)
    assert sum(p.numel() for p in model.parameters()) == 4 * 8 * (1 + 8 + 2) + 8 * 7 + 7
    assert model(torch.randn(4, 12)).shape == (4, 7)
    assert model(torch.randn(4, 12, 1)).shape == (4, 7)
    assert sum(p.numel() for p in lstm_forecaster().parameters()) == 23_392
    enc = model[0]
    x = torch.randn(4, 12, 1)
    assert torch.equal(enc(x), LSTM.forward(enc, x)[1][0].squeeze(0))


def test_hard_gates_are_binary_and_block_gate_gradients() -> None:
    torch.manual_seed(0)
    lstm = LSTM(1, 4, hard_gates=True)
    a = torch.randn(100)
    assert set(lstm.gate(a).unique().tolist()) <= {0.0, 1.0}
    lstm(torch.randn(2, 9, 1))[0].sum().backward()
    grad = lstm.weight_hh_l0.grad.reshape(4, 4, 4)  # (gate, unit, input): i, f, g, o
    assert grad[[0, 1, 3]].abs().max() == 0  # input, forget and output gates: no gradient
    assert grad[2].abs().max() > 0  # the cell candidate (tanh) still has one
    assert "gates=hard" in repr(lstm)


def test_bad_input_is_named() -> None:
    with pytest.raises(ValueError, match="hidden_size"):
        LSTM(1, 0)
    with pytest.raises(ValueError, match="x must be"):
        LSTM(2, 3)(torch.randn(4, 5, 1))
    with pytest.raises(ValueError, match="x must be"):
        LastHidden(2, 3)(torch.randn(4, 5))
    with pytest.raises(ValueError, match="horizon"):
        lstm_forecaster(0)


SPACES = {
    "factored": lambda lay: FactoredSubspace.from_layout(lay, rank=2, seed=3),
    "sparse": lambda lay: SparseProjection.from_layout(lay, dim=64, seed=4),
}


@pytest.mark.parametrize("space_name", sorted(SPACES))
@pytest.mark.parametrize("hard", [False, True])
def test_vmap_and_layered_losses_agree_with_reference(space_name: str, hard: bool) -> None:
    torch.manual_seed(0)
    model = lstm_forecaster(5, hidden_size=6, hard_gates=hard).double()
    space = SPACES[space_name](ParamLayout.from_module(model)).to("cpu", torch.float64)
    rule = StepRule.build(epsilon=1.0, step_radius=0.3, probe_radius=0.3)
    z = torch.zeros(space.dim, dtype=torch.float64)
    cands = propose_blocks(rule, z, space.block_dim, 0, torch.Generator().manual_seed(0))[1]
    x, y = torch.randn(4, 9, dtype=torch.float64), torch.randn(4, 5, dtype=torch.float64)
    loss_fn = nn.MSELoss()
    ref = ReferenceEvaluator(model, loss_fn, space).evaluate(cands, (x, y))
    assert ref.std() > 0
    for cls in (VmapEvaluator, LayeredEvaluator):
        ev = cls(model, loss_fn, space, chunk_size=11)
        got = ev.evaluate(cands, (x, y))
        assert torch.allclose(got, ref, atol=1e-12, rtol=0), cls.name
        assert ev.fallback_reason is None, ev.fallback_reason


def test_torch_lstm_falls_back_ours_runs_under_vmap() -> None:
    class TorchForecaster(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lstm = nn.LSTM(1, 4, batch_first=True)
            self.head = nn.Linear(4, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(self.lstm(x.unsqueeze(-1))[1][0].squeeze(0))

    torch.manual_seed(0)
    x, y = torch.randn(3, 6), torch.randn(3, 3)
    loss_fn = nn.MSELoss()
    theirs = PolyStepOptimizer(TorchForecaster(), subspace="full", evaluator="vmap", seed=0)
    with pytest.warns(RuntimeWarning, match="fell back"):
        theirs.step_batch(x, y, loss_fn)
    assert theirs.evaluator(loss_fn).fell_back
    ours = PolyStepOptimizer(
        lstm_forecaster(3, hidden_size=4), subspace="full", evaluator="vmap", seed=0
    )
    ours.step_batch(x, y, loss_fn)
    assert not ours.evaluator(loss_fn).fell_back


@pytest.mark.parametrize("evaluator", ["auto", "vmap"])
def test_optimizer_trains_the_forecaster(evaluator: str) -> None:
    torch.manual_seed(0)
    model = lstm_forecaster(4, hidden_size=6)
    x = torch.randn(16, 10)
    y = x[:, -1:].expand(-1, 4).clone()  # persistence target
    loss_fn = nn.MSELoss()
    opt = PolyStepOptimizer(model, evaluator=evaluator, seed=0)
    ev = opt.evaluator(loss_fn)
    assert type(ev) is {"auto": LayeredEvaluator, "vmap": VmapEvaluator}[evaluator]
    first = opt.step_batch(x, y, loss_fn)
    for _ in range(15):
        last = opt.step_batch(x, y, loss_fn)
    assert ev.fallback_reason is None
    assert last < first
    assert all(torch.isfinite(p).all() for p in model.parameters())
