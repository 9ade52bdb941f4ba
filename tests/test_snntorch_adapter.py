"""snntorch adapter: same spikes as snntorch's own time loop, trains the user's layers in place."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from polystep import PolyStepOptimizer
from polystep.evaluate.layered import LayeredEvaluator
from polystep.nn.snntorch_adapter import from_snntorch

snn = pytest.importorskip("snntorch")


def leaky(**kwargs: object) -> nn.Module:
    settings = {"beta": 0.95, "threshold": 1.0, "reset_mechanism": "zero"}
    settings.update(kwargs)
    return snn.Leaky(surrogate_disable=True, init_hidden=True, **settings)


def network(**kwargs: object) -> nn.Sequential:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(12, 16), leaky(**kwargs), nn.Linear(16, 5), leaky(**kwargs))
    with torch.no_grad():
        for p in net.parameters():
            p.mul_(3.0)  # neurons fire at initialisation
    return net


def snntorch_counts(net: nn.Sequential, x: torch.Tensor, num_steps: int) -> torch.Tensor:
    """snntorch's own loop: direct-current input every step, output spikes summed."""
    for module in net:
        if isinstance(module, snn.Leaky):
            module.reset_mem()
    counts = torch.zeros(x.shape[0], net[-2].out_features)
    for _ in range(num_steps):
        counts += net(x)
    return counts


def test_same_spike_counts_as_snntorch_loop() -> None:
    net = network()
    x = torch.rand(64, 12)
    model = from_snntorch(net, num_steps=10)
    with torch.no_grad():
        ours = model(x)
        theirs = snntorch_counts(net, x, 10)
    assert ours.sum() > 0  # the comparison is not between two silent networks
    assert torch.equal(ours, theirs)


def test_training_the_adapter_trains_the_snntorch_layers_in_place() -> None:
    net = network()
    before = net[0].weight.detach().clone()
    model = from_snntorch(net, num_steps=8)
    assert model[0] is net[0] and model[2] is net[2]
    x, y = torch.rand(96, 12), torch.randint(0, 5, (96,))
    optimizer = PolyStepOptimizer(model, preset="snn", seed=0)
    optimizer.set_horizon(steps=16)  # the preset's schedules over the run
    assert isinstance(optimizer.evaluator(nn.CrossEntropyLoss()), LayeredEvaluator)
    first = optimizer.step_batch(x, y, nn.CrossEntropyLoss())
    for _ in range(15):
        last = optimizer.step_batch(x, y, nn.CrossEntropyLoss())
    assert last < first
    assert not torch.equal(net[0].weight, before)
    with torch.no_grad():
        assert torch.equal(model(x), snntorch_counts(net, x, 8))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"reset_mechanism": "subtract"}, "reset_mechanism"),
        ({"learn_beta": True}, "beta"),
    ],
)
def test_unsupported_neurons_are_named(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        from_snntorch(network(**kwargs), num_steps=4)


def test_bad_layout_is_named() -> None:
    with pytest.raises(ValueError, match="network"):
        from_snntorch(nn.Sequential(nn.Linear(3, 4), nn.ReLU()), num_steps=4)
    with pytest.raises(ValueError, match="threshold"):
        mixed = nn.Sequential(nn.Linear(3, 4), leaky(), nn.Linear(4, 2), leaky(threshold=0.5))
        from_snntorch(mixed, num_steps=4)
