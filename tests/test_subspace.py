"""Search spaces: sizes, linearity, isometry, seeds and redraws, sparse memory."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from polystep.hybrid_subspace import HybridSubspace as ReExported
from polystep.subspace import (
    DenseSegment,
    DirectSegment,
    FactoredSubspace,
    FullSpace,
    HybridSubspace,
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


@pytest.mark.parametrize("build", SPACES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_add_to_adds_exactly_the_delta(build, dtype) -> None:
    """The move written in place, segment by segment, is bit for bit the parameters plus
    :meth:`delta` (weights small enough to take a low-rank move in one piece)."""
    lay = layout()
    space = build(lay)
    space.to("cpu", dtype)
    gen = torch.Generator().manual_seed(3)
    params = {e.name: torch.randn(e.shape, generator=gen, dtype=dtype) for e in lay.entries}
    z = torch.randn(space.dim, generator=gen, dtype=dtype)
    deltas = lay.unflatten(space.delta(z))
    expected = {name: value + deltas[name] for name, value in params.items()}
    space.add_to(params, z)
    for name, value in params.items():
        assert torch.equal(value.view(torch.uint8), expected[name].view(torch.uint8)), name


def test_hybrid_allocation_and_isometry() -> None:
    # The paper package's count: r (d_out + d_in), capped at d_out d_in, dense orthonormal map.
    space = HybridSubspace.from_layout(layout(), rank=4, seed=0)
    kinds = [type(s) for s in space.segments]
    assert kinds == [DenseSegment, DirectSegment, DenseSegment, DirectSegment]
    seg = space.segments[0]
    assert seg.size == 4 * (24 + 40) and seg.basis.shape == (24 * 40, 4 * (24 + 40))
    assert space.segments[2].basis.shape == (3 * 24, 3 * 24)  # capped: a rotation of the weight
    assert torch.allclose(seg.basis.T @ seg.basis, torch.eye(seg.size), atol=1e-5)
    e = torch.randn(1, seg.size)
    assert torch.allclose(seg.delta(e).norm(), e.norm(), rtol=1e-5)


def test_hybrid_goes_sparse_where_a_dense_map_is_too_big() -> None:
    lay = ParamLayout.from_module(nn.Sequential(nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, 10)))
    space = HybridSubspace.from_layout(lay, rank=8, seed=0)
    big, small = space.segments[0], space.segments[2]
    assert isinstance(big, SparseSegment) and isinstance(small, DenseSegment)
    assert big.size == 8 * (784 + 128) and small.size == 8 * (128 + 10)  # as the paper's
    assert big.index.shape == (big.size, 316)  # isqrt(100352) entries per coordinate
    norms = big.delta(torch.eye(big.size)[:16]).reshape(16, -1).norm(dim=1)
    assert torch.allclose(norms, torch.ones(16), atol=0.05)


def test_hybrid_coordinates_move_many_units() -> None:
    # No coordinate puts its whole length on one unit (issue 15).
    seg = HybridSubspace.from_layout(layout(), rank=4, seed=0).segments[0]
    moves = seg.delta(torch.eye(seg.size)).reshape(seg.size, 24, 40)
    per_unit = moves.norm(dim=2)  # (coordinate, unit)
    assert (per_unit.max(dim=1).values < 0.9).all()


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
    a = HybridSubspace.from_layout(layout(), rank=4, seed=0).segments[0].basis
    b = HybridSubspace.from_layout(layout(), rank=4, seed=1).segments[0].basis
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
