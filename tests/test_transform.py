"""ParamLayout: order, tied weights, flatten/unflatten round trips, errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from polystep.transform import ParamLayout


def test_layout_order_offsets_and_round_trip() -> None:
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    layout = ParamLayout.from_module(model)
    assert layout.names == ("0.weight", "0.bias", "2.weight", "2.bias")
    assert [e.offset for e in layout.entries] == [0, 12, 16, 24]
    assert layout.numel == 26
    flat = layout.flatten(model)
    assert torch.equal(layout.unflatten(flat)["2.weight"], model[2].weight)
    layout.assign(model, flat * 2)
    assert torch.equal(layout.flatten(model), flat * 2)


def test_tied_weights_are_deduplicated() -> None:
    a, b = nn.Linear(4, 4, bias=False), nn.Linear(4, 4, bias=False)
    b.weight = a.weight
    layout = ParamLayout.from_module(nn.Sequential(a, b))
    assert layout.names == ("0.weight",)
    assert layout.aliases == {"1.weight": "0.weight"}
    assert layout.entry("1.weight").name == "0.weight"


def test_frozen_params_and_buffers_are_excluded() -> None:
    model = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    model[0].bias.requires_grad_(False)
    layout = ParamLayout.from_module(model)
    assert layout.names == ("0.weight", "1.weight", "1.bias")


def test_shared_storage_between_distinct_parameters_is_rejected() -> None:
    model = nn.Module()
    base = torch.zeros(8)
    model.a = nn.Parameter(base[:4])
    model.b = nn.Parameter(base[:4])
    with pytest.raises(ValueError, match="share storage"):
        ParamLayout.from_module(model)


def test_errors_name_the_problem() -> None:
    with pytest.raises(ValueError, match="model must be"):
        ParamLayout.from_module("not a module")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="no trainable"):
        ParamLayout.from_module(nn.ReLU())
    layout = ParamLayout.from_module(nn.Linear(2, 2))
    with pytest.raises(ValueError, match="6 entries"):
        layout.unflatten(torch.zeros(5))
