import itertools

import numpy as np
import pytest
import torch
from scipy.optimize import linear_sum_assignment

from polystep.transport import (
    greedy_weights,
    prepare_costs,
    sinkhorn_weights,
    softmax_weights,
)


def test_softmax_tends_to_argmin_and_uniform():
    costs = torch.tensor([[3.0, 1.0, 2.0], [0.5, 0.4, 0.9]])
    sharp = softmax_weights(costs, 1e-4)
    torch.testing.assert_close(sharp, greedy_weights(costs))
    flat = softmax_weights(costs, 1e6)
    torch.testing.assert_close(flat, torch.full_like(costs, 1 / 3), atol=1e-5, rtol=0)
    torch.testing.assert_close(sharp.sum(1), torch.ones(2))


def test_softmax_rejects_bad_epsilon():
    for bad in [0.0, -1.0, float("nan"), float("inf")]:
        with pytest.raises(ValueError, match="epsilon"):
            softmax_weights(torch.zeros(2, 2), bad)


def test_prepare_costs_penalises_non_finite_above_worst():
    costs = torch.tensor([[1.0, float("nan")], [float("inf"), -float("inf")], [2.0, 5.0]])
    out = prepare_costs(costs)
    assert torch.isfinite(out).all()
    finite = torch.isfinite(costs)
    assert out[~finite].min() > out[finite].max()
    assert out[finite].min() == 0.0  # recentred


def test_prepare_costs_all_non_finite_gives_zeros():
    out = prepare_costs(torch.full((2, 3), float("nan")))
    assert torch.equal(out, torch.zeros(2, 3))


@pytest.mark.parametrize("scale", [None, "mean", "max", 2.5])
def test_prepare_costs_scales(scale):
    costs = torch.tensor([[1.0, 3.0], [5.0, 9.0]])
    out = prepare_costs(costs, scale)
    shifted = costs.double() - 1.0
    expected = {None: shifted, "mean": shifted / shifted.mean(), "max": shifted / 8.0}
    expected[2.5] = shifted / 2.5
    torch.testing.assert_close(out, expected[scale])


@pytest.mark.parametrize("bad", ["median", 0.0, -1.0, float("inf"), True])
def test_prepare_costs_rejects_bad_scale(bad):
    with pytest.raises(ValueError, match="scale_cost"):
        prepare_costs(torch.zeros(2, 2), bad)


@pytest.mark.parametrize("dtype", [torch.int64, torch.float16, torch.float32])
def test_costs_are_shaped_in_float64(dtype):
    out = prepare_costs(torch.tensor([[1, 2], [3, 4]], dtype=dtype))
    assert out.dtype == torch.float64


def test_sinkhorn_marginals():
    g = torch.Generator().manual_seed(0)
    costs = torch.rand(6, 4, generator=g, dtype=torch.float64)
    res = sinkhorn_weights(costs, 0.05, tolerance=1e-9, max_iterations=5000)
    assert res.converged
    plan = torch.exp((res.f[:, None] + res.g[None, :] - costs) / 0.05)
    torch.testing.assert_close(plan.sum(1), torch.full((6,), 1 / 6, dtype=torch.float64))
    torch.testing.assert_close(plan.sum(0), torch.full((4,), 1 / 4, dtype=torch.float64))
    torch.testing.assert_close(res.weights.sum(1), torch.ones(6, dtype=torch.float64))


def test_sinkhorn_agrees_with_exact_assignment_at_small_epsilon():
    # Square problem, uniform marginals: exact OT is an assignment (scipy, checked by brute
    # force). The entropic plan's cost exceeds it by at most epsilon * (H(a) + H(b)).
    rng = np.random.default_rng(0)
    epsilon = 0.05
    for _ in range(5):
        costs = rng.random((5, 5))
        rows, cols = linear_sum_assignment(costs)
        best = min(itertools.permutations(range(5)), key=lambda p: costs[range(5), p].sum())
        assert list(best) == list(cols[np.argsort(rows)])
        exact = costs[rows, cols].sum() / 5
        res = sinkhorn_weights(torch.tensor(costs), epsilon, tolerance=1e-4, max_iterations=10000)
        assert res.converged
        plan = res.weights / 5  # rows sum to the marginal 1/5
        entropic = float((plan * torch.tensor(costs)).sum())
        assert exact - 1e-9 <= entropic <= exact + epsilon * 2 * np.log(5)
        # rows are renormalised exactly; columns are then right to the solve tolerance
        uniform = torch.full((5,), 0.2, dtype=torch.float64)
        torch.testing.assert_close(plan.sum(1), uniform)
        torch.testing.assert_close(plan.sum(0), uniform, rtol=2e-4, atol=0)


def test_sinkhorn_warm_start_converges_faster():
    costs = torch.rand(20, 8, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    cold = sinkhorn_weights(costs, 0.05, tolerance=1e-8, max_iterations=5000)
    warm = sinkhorn_weights(costs, 0.05, f=cold.f, g=cold.g, tolerance=1e-8, max_iterations=5000)
    assert warm.iterations < cold.iterations
    torch.testing.assert_close(warm.weights, cold.weights)
    bad = torch.full_like(cold.f, float("nan"))
    reset = sinkhorn_weights(costs, 0.05, f=bad, g=cold.g, tolerance=1e-8, max_iterations=5000)
    assert torch.isfinite(reset.weights).all()


def test_greedy_takes_first_minimum():
    w = greedy_weights(torch.tensor([[2.0, 1.0, 1.0]]))
    assert torch.equal(w, torch.tensor([[0.0, 1.0, 0.0]]))
