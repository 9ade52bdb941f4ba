"""Cost handling and transport weights (pure tensor functions).

A cost matrix ``C`` has shape ``(P, V)``: particle ``i`` scored at each of its ``V`` vertices.
Every weight function returns row-stochastic weights ``W`` of the same shape (each row sums to 1),
which the step turns into a barycentric move.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

COST_SCALES = ("mean", "max")


def validate_cost_scale(scale: str | float | None) -> None:
    """Raise a ValueError naming ``scale_cost`` unless it is None, "mean", "max" or a float > 0."""
    if scale is None or scale in COST_SCALES:
        return
    if isinstance(scale, bool) or not isinstance(scale, int | float):
        raise ValueError(
            f"scale_cost must be None, 'mean', 'max' or a positive float, got {scale!r}"
        )
    if not (float(scale) > 0.0 and float(scale) < float("inf")):
        raise ValueError(f"scale_cost must be a positive finite float, got {scale!r}")


def prepare_costs(costs: torch.Tensor, scale: str | float | None = None) -> torch.Tensor:
    """Recentre, scale and sanitise a cost matrix: ``(P, V) -> (P, V)`` float64, always finite.

    - recentre: subtract the smallest finite cost (weights do not change, exponents stay small);
    - scale: ``None`` keeps raw units, ``"mean"`` divides by the mean recentred finite cost,
      ``"max"`` by the largest, a float by itself (a zero spread leaves costs unscaled);
    - sanitise: NaN and +-inf become ``2 * worst + 1``, strictly above every finite cost.
      Where no cost is finite every entry becomes 0, so the weights are uniform and the move is 0.
    Costs are shaped in float64 whatever their dtype: float32 costs can span more than the
    float32 range (``3e38 - (-3e38)``), and the recentring would overflow to inf, then NaN.
    """
    validate_cost_scale(scale)
    costs = costs.to(torch.float64)
    finite = torch.isfinite(costs)
    if bool(finite.all()):  # the usual case: no masked copies
        flat = costs.reshape(-1)  # the values in the order a masked copy holds them
        return _divide(flat - flat.min(), scale).reshape(costs.shape)
    if not bool(finite.any()):
        return torch.zeros_like(costs)
    shifted = costs - costs[finite].min()
    shifted = _divide(shifted, scale, shifted[finite])
    penalty = 2.0 * shifted[finite].max() + 1.0
    return torch.where(finite, shifted, penalty)


def _divide(
    shifted: torch.Tensor, scale: str | float | None, finite: torch.Tensor | None = None
) -> torch.Tensor:
    """Recentred costs divided by their ``scale``, read from their ``finite`` values (a 1-D
    copy; None: all of ``shifted``, 1-D, where every value is finite: the reductions then see
    the same numbers in the same order, so the divisor is the same to the bit)."""
    if scale is None:
        return shifted
    values = shifted if finite is None else finite
    if scale == "mean":
        divisor = values.mean()
    elif scale == "max":
        divisor = values.max()
    else:
        divisor = torch.tensor(float(scale), dtype=shifted.dtype, device=shifted.device)
    return shifted / divisor if bool(divisor > 0) else shifted


def _check_epsilon(epsilon: float) -> None:
    if not (epsilon > 0.0 and epsilon < float("inf")):
        raise ValueError(f"epsilon must be a positive finite float, got {epsilon!r}")


def softmax_weights(costs: torch.Tensor, epsilon: float) -> torch.Tensor:
    """One-sided entropic OT: ``softmax(-C / epsilon)`` along each row: ``(P, V) -> (P, V)``."""
    _check_epsilon(epsilon)
    shifted = costs - costs.min(dim=-1, keepdim=True).values
    return torch.softmax(shifted / -epsilon, dim=-1)  # the same numbers as -shifted / epsilon


def greedy_weights(costs: torch.Tensor) -> torch.Tensor:
    """All of each particle's mass on its cheapest vertex (first on ties): ``(P, V) -> (P, V)``."""
    best = costs.argmin(dim=-1, keepdim=True)
    return torch.zeros_like(costs).scatter_(-1, best, 1.0)


@dataclass
class SinkhornResult:
    """Row-normalised weights ``(P, V)``, the duals ``f (P,)``, ``g (V,)`` and solve diagnostics."""

    weights: torch.Tensor
    f: torch.Tensor
    g: torch.Tensor
    iterations: int
    converged: bool


def sinkhorn_weights(
    costs: torch.Tensor,
    epsilon: float,
    *,
    f: torch.Tensor | None = None,
    g: torch.Tensor | None = None,
    tolerance: float = 1e-6,
    max_iterations: int = 1000,
) -> SinkhornResult:
    """Balanced entropic OT between uniform marginals (1/P over particles, 1/V over vertices).

    Log-domain Sinkhorn, warm-started from duals ``f``/``g`` when given (non-finite duals are
    discarded). Stops when the largest relative row-marginal error falls below ``tolerance``
    (column marginals are exact after each g update). Returns the plan normalised per row.
    """
    _check_epsilon(epsilon)
    if not tolerance > 0:
        raise ValueError(f"tolerance must be > 0, got {tolerance!r}")
    if max_iterations < 1:
        raise ValueError(f"max_iterations must be >= 1, got {max_iterations!r}")
    num_particles, num_vertices = costs.shape
    log_a = -torch.log(torch.tensor(float(num_particles), dtype=costs.dtype, device=costs.device))
    log_b = -torch.log(torch.tensor(float(num_vertices), dtype=costs.dtype, device=costs.device))
    warm = (
        f is not None and g is not None and bool(torch.isfinite(f).all() & torch.isfinite(g).all())
    )
    f = f.clone() if warm else torch.zeros(num_particles, dtype=costs.dtype, device=costs.device)
    g = g.clone() if warm else torch.zeros(num_vertices, dtype=costs.dtype, device=costs.device)
    scaled = -costs / epsilon
    converged = False
    iterations = 0
    for iterations in range(1, max_iterations + 1):  # noqa: B007 - the count is reported
        f = epsilon * (log_a - torch.logsumexp(scaled + g / epsilon, dim=1))
        g = epsilon * (log_b - torch.logsumexp(scaled + f[:, None] / epsilon, dim=0))
        log_plan = scaled + (f[:, None] + g[None, :]) / epsilon
        row_error = (torch.logsumexp(log_plan, dim=1) - log_a).exp().sub(1.0).abs().max()
        if float(row_error) < tolerance:
            converged = True
            break
    weights = torch.softmax(log_plan, dim=1)
    return SinkhornResult(weights=weights, f=f, g=g, iterations=iterations, converged=converged)
