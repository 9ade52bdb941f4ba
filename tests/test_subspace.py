"""Search spaces: sizes, linearity, isometry, seeds and redraws, sparse memory."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from polystep.hybrid_subspace import HybridSubspace as ReExported
from polystep.subspace import (
    DirectSegment,
    FactoredSubspace,
    FullSpace,
    HybridSubspace,
    LowRankSegment,
    SparseProjection,
    SparseSegment,
)
from polystep.transform import ParamLayout


def layout() -> ParamLayout:
    return ParamLayout.from_module(nn.Sequential(nn.Linear(40, 24), nn.ReLU(), nn.Linear(24, 3)))


SPACES = [
    lambda lay: FullSpace.from_layout(lay, block_dim=2),
    lambda lay: HybridSubspace.from_layout(lay, rank=4, seed=1),
    lambda lay: FactoredSubspace.from_layout(lay, rank=4, seed=1),
    lambda lay: SparseProjection.from_layout(lay, dim=64, seed=1),
]


def test_reexport() -> None:
    assert ReExported is HybridSubspace


@pytest.mark.parametrize("build", SPACES)
def test_segments_tile_the_coordinates_and_map_linearly(build) -> None:
    space = build(layout())
    space.to("cpu", torch.float64)
    starts = [s.start for s in space.segments]
    assert starts[0] == 0 and all(s.size % space.block_dim == 0 for s in space.segments)
    assert sum(s.size for s in space.segments) == space.dim
    z1 = torch.randn(space.dim, dtype=torch.float64)
    z2 = torch.randn(space.dim, dtype=torch.float64)
    lhs = space.delta(2 * z1 + z2)
    assert torch.allclose(lhs, 2 * space.delta(z1) + space.delta(z2))
    assert space.delta(torch.stack([z1, z2])).shape == (2, space.layout.numel)


def test_hybrid_allocation_and_isometry() -> None:
    space = HybridSubspace.from_layout(layout(), rank=4, seed=0)
    kinds = [type(s) for s in space.segments]
    assert kinds == [LowRankSegment, DirectSegment, LowRankSegment, DirectSegment]
    # at least the rank-4 LoRA count, in whole rows of E: ceil(4 * (24 + 40) / 40) = 7 rows
    seg = space.segments[0]
    assert seg.size == 7 * 40 >= 4 * (24 + 40) and seg.right is None
    assert space.segments[2].size == 3 * 24  # capped at d_out rows: a rotation of the weight
    assert torch.allclose(seg.left.T @ seg.left, torch.eye(7), atol=1e-5)
    e = torch.randn(1, seg.size)
    assert torch.allclose(seg.delta(e).norm(), e.norm(), rtol=1e-5)


def test_hybrid_coordinates_move_every_unit() -> None:
    # No coordinate may put its whole length on one unit (issue 15): each moves a whole column
    # of the weight along a random direction of the output units.
    seg = HybridSubspace.from_layout(layout(), rank=4, seed=0).segments[0]
    moves = seg.delta(torch.eye(seg.size)).reshape(seg.size, 24, 40)
    per_unit = moves.norm(dim=2)  # (coordinate, unit)
    assert (per_unit.max(dim=1).values < 0.9).all()
    assert ((moves != 0).sum(dim=(1, 2)) == 24).all()


def test_factored_has_only_a_coordinates_and_redraws_by_seed() -> None:
    space = FactoredSubspace.from_layout(layout(), rank=4, seed=3)
    seg = space.segments[0]
    assert seg.size == 24 * 4 and seg.left is None and space.redraw_every == 5
    first = seg.right.clone()
    space.redraw()
    assert not torch.allclose(space.segments[0].right, first)
    space.redraw(0)
    assert torch.equal(space.segments[0].right, first)  # a draw is a pure function of the seed
    other = FactoredSubspace.from_layout(layout(), rank=4, seed=3)
    assert torch.equal(other.segments[0].right, first)
    state = space.state_dict()
    assert (state["seed"], state["draw"], state["signature"]["kind"]) == (3, 0, "factored")
    assert state["signature"]["dim"] == space.dim and state["signature"]["rank"] == 4


def test_seed_changes_bases() -> None:
    a = HybridSubspace.from_layout(layout(), rank=4, seed=0).segments[0].left
    b = HybridSubspace.from_layout(layout(), rank=4, seed=1).segments[0].left
    assert not torch.allclose(a, b)


def test_sparse_projection_never_densifies() -> None:
    lay = ParamLayout.from_module(nn.Linear(1000, 1000))
    space = SparseProjection.from_layout(lay, dim=256, seed=0)
    seg = space.segments[0]
    assert isinstance(seg, SparseSegment)
    assert seg.index.numel() < 0.05 * lay.numel * seg.size  # far from numel x k
    norms = seg.delta(torch.eye(seg.size)[:8]).reshape(8, -1).norm(dim=1)
    assert torch.allclose(norms, torch.ones(8), atol=0.05)


def test_bad_arguments_are_named() -> None:
    with pytest.raises(ValueError, match="rank"):
        HybridSubspace.from_layout(layout(), rank=0)
    with pytest.raises(ValueError, match="block_dim"):
        FullSpace.from_layout(layout(), block_dim=0)
    with pytest.raises(ValueError, match="layout"):
        HybridSubspace.from_layout("x", rank=2)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="density"):
        SparseProjection.from_layout(layout(), density=2.0)
