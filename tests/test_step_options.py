"""The step options measured in benchmarks/candidate_count.py (issue 10, item 3): each part's
math, its argument checks, and its state."""

import math

import pytest
import torch
from torch import nn

from polystep.adapted_directions import AdaptedDirections, ShearedRule, rank_one, shear
from polystep.momentum import Momentum, heavy_ball
from polystep.nn import spiking_mlp
from polystep.nn.firing_start import firing_start
from polystep.step import StepRule
from polystep.subspace.adaptive import AdaptiveFactoredSubspace, merge_rows
from polystep.success_radius import SuccessRadius, improving_fraction
from polystep.transform import ParamLayout


def test_heavy_ball_accumulates_and_starts_from_the_move():
    delta = torch.tensor([1.0, -2.0])
    assert torch.equal(heavy_ball(None, delta, 0.5), delta)
    velocity = Momentum.build(beta=0.5)(None, delta)
    velocity = Momentum.build(beta=0.5)(velocity, delta)
    assert torch.allclose(velocity, 1.5 * delta)
    for bad in (-0.1, 1.0, math.nan, True, "0.5"):
        with pytest.raises(ValueError, match="momentum beta"):
            Momentum.build(beta=bad)


def test_success_rule_grows_on_success_shrinks_on_failure_and_stays_in_bounds():
    losses = torch.tensor([0.5, 1.5, math.nan, math.inf, 0.9])
    assert improving_fraction(losses, 1.0) == pytest.approx(2 / 5)
    rule = SuccessRadius.build(target=0.2, rate=0.3)
    assert rule(1.0, 0.2) == pytest.approx(1.0)
    assert rule(1.0, 0.6) > 1.0 > rule(1.0, 0.0)
    assert rule(1.0, 0.0) == pytest.approx(math.exp(-0.3 * 0.2 / 0.8))
    scale = 1.0
    for _ in range(1000):
        scale = rule(scale, 0.0)
    assert scale == rule.low
    with pytest.raises(ValueError, match="success target"):
        SuccessRadius.build(target=1.0)
    with pytest.raises(ValueError, match="success rate"):
        SuccessRadius.build(rate=0.0)


def test_shear_keeps_unit_directions_and_the_identity_changes_nothing():
    directions = torch.nn.functional.normalize(torch.randn(3, 6, 4, dtype=torch.float64), dim=-1)
    eye = AdaptedDirections.identity(3, 4)
    assert torch.allclose(shear(directions, eye), directions)
    factors = torch.linalg.cholesky(eye + torch.diag_embed(torch.rand(3, 4, dtype=torch.float64)))
    assert torch.allclose(shear(directions, factors).norm(dim=-1), torch.ones(3, 6).double())


def test_rank_one_keeps_the_trace_and_pulls_toward_the_moves():
    cov = AdaptedDirections.identity(2, 3)
    moves = torch.tensor([[2.0, 0.0, 0.0], [0.0, 0.0, 0.0]], dtype=torch.float64)
    for _ in range(20):
        cov = rank_one(cov, moves, 0.3)
    assert torch.allclose(
        torch.diagonal(cov, dim1=1, dim2=2).sum(1), torch.full((2,), 3.0).double()
    )
    assert cov[0, 0, 0] > 2.9 and torch.equal(cov[1], torch.eye(3).double())  # no move: as it was
    with pytest.raises(ValueError, match="adapted directions rate"):
        AdaptedDirections.build(rate=1.0)


def test_sheared_rule_probes_at_the_probe_radius_along_the_learnt_direction():
    rule = StepRule.build(epsilon=0.1, step_radius=0.2, probe_radius=1.5)
    positions = torch.zeros(4, 3, dtype=torch.float64)
    cov = AdaptedDirections.identity(4, 3)
    for _ in range(30):
        cov = rank_one(cov, torch.tensor([[1.0, 0.0, 0.0]] * 4).double(), 0.3)
    plain = {f: getattr(rule, f) for f in rule.__dataclass_fields__}
    sheared = ShearedRule(**plain, factors=torch.linalg.cholesky(cov))
    same = ShearedRule(**plain)
    gen = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    base = rule.propose(positions, 0, gen())
    assert torch.equal(same.propose(positions, 0, gen()).probes, base.probes)
    probes = sheared.propose(positions, 0, gen()).probes  # (P, V, K, p)
    assert torch.allclose(probes.norm(dim=-1), base.probes.norm(dim=-1))  # the same radius
    along = lambda p: (p[..., 0].abs() / p.norm(dim=-1)).mean()  # noqa: E731
    assert along(probes) > along(base.probes) + 0.2


def test_adaptive_subspace_keeps_the_direction_the_weights_moved_along():
    model = nn.Sequential(nn.Linear(20, 6), nn.ReLU(), nn.Linear(6, 2))
    space = AdaptiveFactoredSubspace(
        ParamLayout.from_module(model), keep=1, rank=4, block_dim=4, seed=3, redraw_every=5
    )
    seg = space.segments[0]
    z = torch.zeros(space.dim)
    z[seg.start : seg.start + seg.a_size] = torch.outer(
        torch.randn(6), torch.tensor([0, 1.0, 0, 0])
    ).reshape(-1)
    moved_along = seg.right[1].double()
    space.observe(z)
    space.redraw()
    right = space.segments[0].right.double()
    assert torch.allclose(right @ right.T, torch.eye(4).double(), atol=1e-6)
    assert abs(float(right[0] @ moved_along)) == pytest.approx(1.0, abs=1e-6)
    state = space.state_dict()
    other = AdaptiveFactoredSubspace(
        ParamLayout.from_module(model), keep=1, rank=4, block_dim=4, seed=3, redraw_every=5
    )
    other.load_state_dict(state)
    assert torch.allclose(other.segments[0].right, space.segments[0].right)
    with pytest.raises(ValueError, match="keep must be smaller than rank"):
        AdaptiveFactoredSubspace(ParamLayout.from_module(model), keep=4, rank=4, block_dim=4)


def test_merge_rows_is_orthonormal_with_the_kept_rows_first():
    kept = torch.nn.functional.normalize(torch.randn(1, 7, dtype=torch.float64), dim=1)
    merged = merge_rows(kept, torch.linalg.qr(torch.randn(7, 3).double())[0].T)
    assert torch.allclose(merged @ merged.T, torch.eye(3).double())
    assert float(merged[0] @ kept[0]) == pytest.approx(1.0)


def test_firing_start_sets_every_layers_rate():
    torch.manual_seed(0)
    model = spiking_mlp((30, 16, 4), num_steps=10)
    inputs = torch.rand(64, 30)
    gains = firing_start(model, inputs, rate=0.2)
    assert len(gains) == 2 and all(g > 0 for g in gains)
    hidden = model[1](model[0](inputs))
    out = model[3](model[2](hidden))
    assert float(hidden.mean()) == pytest.approx(0.2, abs=0.03)
    assert float(out.mean()) == pytest.approx(0.2, abs=0.05)
    with pytest.raises(ValueError, match="SpikingMLP"):
        firing_start(nn.Linear(3, 3), inputs)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="rate"):
        firing_start(model, inputs, rate=1.5)
