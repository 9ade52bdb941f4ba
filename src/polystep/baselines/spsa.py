"""SPSA (Spall, 1992) as an ask/tell minimiser: two-sided Rademacher perturbations.

Iteration ``k`` (0-based) uses gains ``a_k = a / (k + 1 + A)^alpha`` and
``c_k = c / (k + 1)^gamma``; it evaluates ``x ± c_k·Δ_j`` for ``num_directions`` independent
``Δ_j ∈ {−1, +1}^dim`` on the same batch and moves ``x ← x − a_k · mean_j ĝ_j`` with
``ĝ_j = (f(x + c_kΔ_j) − f(x − c_kΔ_j)) / (2 c_k) · Δ_j``. Defaults follow Spall's guidelines
(``alpha = 0.602``, ``gamma = 0.101``) and the authors' baseline (``a = c = 0.1``).
"""

from __future__ import annotations

from typing import Any

import torch

from polystep.baselines.budget import AskTellRunner, start_vector
from polystep.baselines.state import SampledState
from polystep.validation import check_float_dtype, check_positive_int


class SPSA(AskTellRunner, SampledState):
    """Ask/tell SPSA (minimisation); ``popsize = 2 · num_directions``.

    Args:
        dim: search dimension.
        a, c: step and perturbation gains.
        alpha, gamma: gain decay exponents.
        stability: ``A`` in ``a_k``; Spall suggests about 10 % of the planned iterations.
        num_directions: independent perturbation pairs averaged per iteration.
        max_step: optional cap on the L∞ norm of one update (None: no cap).
        x0, seed, dtype, device: as :class:`~polystep.baselines.openai_es.OpenAIES`.

    Attributes: ``mean`` (current iterate), ``best_x``, ``best_fitness``, ``evaluations``,
    ``iteration``.
    """

    METHOD = "spsa"
    STATE_ATTRIBUTES = (("iteration", "iteration"),)

    def __init__(
        self,
        dim: int,
        *,
        a: float = 0.1,
        c: float = 0.1,
        alpha: float = 0.602,
        gamma: float = 0.101,
        stability: float = 10.0,
        num_directions: int = 1,
        max_step: float | None = None,
        x0: torch.Tensor | None = None,
        seed: int = 0,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
    ) -> None:
        check_positive_int("dim", dim)
        for name, value in (("a", a), ("c", c), ("alpha", alpha), ("gamma", gamma)):
            if not value > 0:
                raise ValueError(f"{name} must be > 0, got {value!r}")
        if stability < 0:
            raise ValueError(f"stability must be >= 0, got {stability!r}")
        check_positive_int("num_directions", num_directions)
        if max_step is not None and not max_step > 0:
            raise ValueError(f"max_step must be None or > 0, got {max_step!r}")
        check_float_dtype("dtype", dtype)
        mean, self.device = start_vector(x0, dim, dtype, device)
        self.dim = dim
        self.a, self.c, self.alpha, self.gamma = float(a), float(c), float(alpha), float(gamma)
        self.stability = float(stability)
        self.num_directions = num_directions
        self.popsize = 2 * num_directions
        self.max_step = max_step
        self.dtype = dtype
        self.iteration = 0
        self._delta: torch.Tensor | None = None
        self._start(mean, seed)

    def gains(self, k: int | None = None) -> tuple[float, float]:
        """``(a_k, c_k)`` at iteration ``k`` (default: the current one)."""
        k = self.iteration if k is None else k
        a_k = self.a / (k + 1 + self.stability) ** self.alpha
        c_k = self.c / (k + 1) ** self.gamma
        return a_k, c_k

    def ask(self) -> torch.Tensor:
        """``(2·num_directions, dim)``: rows ``x + c_kΔ_j`` then rows ``x − c_kΔ_j``."""
        self._rng_before_ask = self._gen.get_state()
        bits = torch.randint(
            0, 2, (self.num_directions, self.dim), generator=self._gen, device=self.device
        )
        self._delta = (2 * bits - 1).to(self.dtype)
        _, c_k = self.gains()
        self._population = torch.cat([self.mean + c_k * self._delta, self.mean - c_k * self._delta])
        return self._population

    def tell(self, fitness: Any) -> None:
        """Update from the fitness ``(popsize,)`` of the last :meth:`ask` (lower is better)."""
        f64 = self._received(fitness).double()
        assert self._delta is not None  # drawn with the population
        a_k, c_k = self.gains()
        m = self.num_directions
        diff = f64[:m] - f64[m:]
        # a pair with a non-finite value carries no usable slope information
        diff = torch.where(torch.isfinite(diff), diff, torch.zeros_like(diff))
        grad = ((diff / (2 * c_k)).to(self.dtype) @ self._delta) / m
        step = a_k * grad
        if self.max_step is not None:
            step = step.clamp(-self.max_step, self.max_step)
        self.mean = self.mean - step
        self.iteration += 1
        self.evaluations += self.popsize
        self._delta = self._population = None

    def settings(self) -> dict[str, Any]:
        """The settings that shape the trajectory (a state loads only under the same ones)."""
        return {
            "dim": self.dim,
            "a": self.a,
            "c": self.c,
            "alpha": self.alpha,
            "gamma": self.gamma,
            "stability": self.stability,
            "num_directions": self.num_directions,
            "max_step": self.max_step,
            "dtype": str(self.dtype),
        }
