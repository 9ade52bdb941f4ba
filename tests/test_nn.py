"""Non-differentiable blocks: shapes/dtypes, hard semantics, smooth twins, vmap safety."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import nn
from torch.func import functional_call, vmap

from polystep.nn import (
    LIF,
    ArgmaxAttention,
    BinaryLinear,
    HardMoE,
    QuantLinear,
    SpikingMLP,
    Staircase,
    argmax_attention_net,
    binary_mlp,
    fake_quantize,
    hard_blocks,
    hard_moe_net,
    mlp,
    one_hot_argmax,
    quantized_mlp,
    set_surrogate,
    smooth_twin,
    spiking_mlp,
    staircase_mlp,
)

torch.set_num_threads(1)

FACTORIES: dict[str, Callable[[], nn.Module]] = {
    "mlp": lambda: mlp((12, 16, 5)),
    "spiking": lambda: spiking_mlp((12, 16, 5), num_steps=6),
    "quantized": lambda: quantized_mlp((12, 16, 16, 5)),
    "binary": lambda: binary_mlp((12, 16, 5)),
    "staircase": lambda: staircase_mlp((12, 16, 16, 5)),
    "attention": lambda: argmax_attention_net(12, 16, 5, num_keys=4),
    "moe": lambda: hard_moe_net(12, 16, 5, num_experts=3),
}


# --------------------------------------------------------------------------- LIF / SNN


def test_lif_hard_semantics_by_hand() -> None:
    lif = LIF(beta=0.5, threshold=1.0, num_steps=4)
    spikes = lif(torch.tensor([[0.6]]))
    # v: 0.6 -> 0.9 -> 1.05 (spike, reset) -> 0.6
    assert spikes.flatten().tolist() == [0.0, 0.0, 1.0, 0.0]
    seq = LIF(beta=1.0, threshold=1.0)(torch.tensor([[1.0], [0.5], [0.5], [2.0]]))
    assert seq.flatten().tolist() == [1.0, 0.0, 1.0, 1.0]


def test_lif_static_equals_repeated_sequence() -> None:
    x = torch.randn(3, 7)
    a = LIF(num_steps=5)(x)
    b = LIF()(x.expand(5, 3, 7))
    assert torch.equal(a, b) and a.shape == (5, 3, 7)
    v = LIF().init_state(x)
    s, v = LIF().step(x, v)
    assert torch.equal(s, a[0])


def test_spiking_mlp_shapes_counts_and_structure() -> None:
    model = SpikingMLP((20, 32, 4), num_steps=7)
    x = torch.rand(9, 20) * 3
    out = model(x)
    assert out.shape == (9, 4) and out.dtype == torch.float32
    assert torch.equal(out, out.round()) and out.min() >= 0 and out.max() <= 7
    assert [type(m).__name__ for m in model] == ["Linear", "LIF", "Linear", "LIF", "SpikeCount"]
    assert model[1].num_steps == 7 and model[3].num_steps is None
    out64 = model.double()(x.double())
    assert out64.dtype == torch.float64


def test_spiking_mlp_input_projection_once() -> None:
    model = SpikingMLP((10, 8, 3), num_steps=12)
    calls = []
    model[0].register_forward_hook(lambda *_: calls.append(1))
    model(torch.rand(2, 10))
    assert len(calls) == 1


def test_lif_smooth_twin_approaches_hard() -> None:
    torch.manual_seed(0)
    model = SpikingMLP((10, 16, 4), num_steps=5, slope=10.0)
    x = torch.rand(32, 10) * 2
    hard = model(x)
    twin = smooth_twin(model)
    twin(x).sum().backward()  # the twin is differentiable
    assert twin[0].weight.grad is not None and twin[0].weight.grad.abs().sum() > 0
    assert hard_blocks(model) and not hard_blocks(twin)
    for lif in (m for m in twin.modules() if isinstance(m, LIF)):
        lif.slope = 1e4
    with torch.no_grad():
        assert (twin(x) - hard).abs().mean() < 0.05


# --------------------------------------------------------------------------- quantized / binary


def test_fake_quantize_grid_and_clamp() -> None:
    w = torch.tensor([0.004, 0.006, -0.0149, 5.0, -5.0])
    q = fake_quantize(w)
    assert torch.allclose(q, torch.tensor([0.0, 0.01, -0.01, 1.27, -1.28]))


def test_quant_linear_hard_and_twins() -> None:
    torch.manual_seed(0)
    layer = QuantLinear(16, 8)
    x = torch.randn(5, 16)
    hard = layer(x)
    q = fake_quantize(layer.weight)
    assert torch.allclose(hard, x @ q.T + fake_quantize(layer.bias))
    assert torch.allclose(torch.unique(torch.round(q / 0.01) * 0.01), torch.unique(q))
    layer.surrogate = True
    smooth = layer(x)
    # weights differ from the grid by at most 0.005 each
    assert (smooth - hard).abs().max() <= 0.005 * (x.abs().sum(1).max() + 1) + 1e-6
    layer.surrogate = "ste"
    ste = layer(x)
    assert torch.allclose(ste, hard)
    ste.sum().backward()
    assert layer.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="surrogate"):
        QuantLinear(4, 4, surrogate="soft")


def test_binary_linear() -> None:
    layer = BinaryLinear(9, 3)
    x = torch.randn(4, 9)
    w = torch.where(layer.weight >= 0, 1.0, -1.0) / 3.0
    assert torch.allclose(layer(x), x @ w.T + layer.bias, atol=1e-6)
    layer.surrogate = True
    layer.temperature = 1e-4
    assert torch.allclose(layer(x), x @ w.T + layer.bias, atol=1e-4)


# --------------------------------------------------------------------------- staircase


def test_staircase_levels_and_twin() -> None:
    x = torch.linspace(-30, 30, 2001)
    st = Staircase()(x)
    levels = torch.tensor([0.0, 0.2, 0.4, 0.6, 0.8])
    assert torch.isin(torch.unique(st), levels).all() and torch.unique(st).numel() == 5
    assert st.max() <= 0.8 + 1e-6
    twin = Staircase(surrogate=True)(x)
    assert ((twin - st) >= -1e-6).all() and ((twin - st) <= 0.2 + 1e-6).all()
    assert Staircase()(torch.zeros(1, dtype=torch.float64)).dtype == torch.float64


# --------------------------------------------------------------------------- routing


def test_one_hot_argmax_ties_lowest() -> None:
    m = one_hot_argmax(torch.tensor([[1.0, 3.0, 3.0], [0.0, -1.0, -2.0]]))
    assert m.tolist() == [[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]]


def test_argmax_attention_matches_definition_and_twin() -> None:
    torch.manual_seed(0)
    att = ArgmaxAttention(6, num_keys=4)
    x = torch.randn(10, 6)
    idx = (x @ att.keys.T).argmax(-1)
    expected = att.values(x) * torch.sigmoid(att.keys[idx])
    assert torch.allclose(att(x), expected)
    twin = smooth_twin(att)
    twin.temperature = 1e-4
    assert torch.allclose(twin(x), expected, atol=1e-5)


def test_hard_moe_selects_one_expert_and_twin() -> None:
    torch.manual_seed(0)
    moe = HardMoE(6, num_experts=3, hidden=5)
    x = torch.randn(10, 6)
    choice = moe.gate(x).argmax(-1)
    expected = torch.stack([moe.experts[int(c)](xi) for c, xi in zip(choice, x)])
    assert torch.allclose(moe(x), expected, atol=1e-6)
    assert torch.equal(moe.routing(x).sum(-1), torch.ones(10))
    twin = smooth_twin(moe)
    twin.temperature = 1e-4
    assert torch.allclose(twin(x), expected, atol=1e-5)


# --------------------------------------------------------------------------- all models


@pytest.mark.parametrize("name", sorted(FACTORIES))
def test_model_shapes_dtypes_and_twin_param_names(name: str) -> None:
    torch.manual_seed(0)
    model = FACTORIES[name]()
    x = torch.rand(7, 12)
    out = model(x)
    assert out.shape == (7, 5) and out.dtype == torch.float32
    twin = smooth_twin(model)
    assert list(dict(model.named_parameters())) == list(dict(twin.named_parameters()))
    twin(x).square().mean().backward()  # the twin trains with gradients
    set_surrogate(twin, False)
    assert torch.equal(twin(x), out)


@pytest.mark.parametrize("name", sorted(FACTORIES))
@pytest.mark.parametrize("surrogate", [False, True])
def test_vmap_over_parameters_matches_loop(name: str, surrogate: bool) -> None:
    torch.manual_seed(1)
    model = set_surrogate(FACTORIES[name](), surrogate).double()
    x = torch.rand(4, 12, dtype=torch.float64)
    base = {k: v.detach() for k, v in model.named_parameters()}
    n = 3
    stacked = {k: v + 0.05 * torch.randn(n, *v.shape, dtype=v.dtype) for k, v in base.items()}
    batched = vmap(lambda p: functional_call(model, p, (x,)))(stacked)
    looped = torch.stack(
        [functional_call(model, {k: v[i] for k, v in stacked.items()}, (x,)) for i in range(n)]
    )
    assert batched.shape == (n, 4, 5)
    assert torch.allclose(batched, looped, atol=1e-10)


@pytest.mark.parametrize(
    ("factory", "name"),
    [
        (lambda: LIF(beta=0.0), "beta"),
        (lambda: LIF(threshold=0.0), "threshold"),
        (lambda: LIF(num_steps=0), "num_steps"),
        (lambda: SpikingMLP((4,)), "sizes"),
        (lambda: Staircase(1), "levels"),
        (lambda: ArgmaxAttention(4, 0), "num_keys"),
        (lambda: HardMoE(4, 2, temperature=0.0), "temperature"),
        (lambda: quantized_mlp((4, 3)), "sizes"),
        (lambda: set_surrogate(mlp((2, 2)), "soft"), "value"),
    ],
)
def test_bad_arguments_name_the_parameter(factory: Callable[[], object], name: str) -> None:
    with pytest.raises(ValueError, match=name):
        factory()
