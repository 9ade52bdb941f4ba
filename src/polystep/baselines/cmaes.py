"""CMA-ES through pycma (``cma`` package) behind the same ask/tell interface, in torch tensors.

Above ``diagonal_above`` dimensions (default 1,000) the covariance is diagonal (separable
CMA-ES, ``CMA_diagonal=True``): O(dim) memory and time per sample instead of O(dim²). pycma's
termination criteria are ignored (``stopped`` reports them) so a run spends its whole budget; with
minibatch noise the criteria fire spuriously. pycma writes no files and prints nothing.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from polystep.baselines.budget import AskTellRunner


class CMAES(AskTellRunner):
    """Ask/tell CMA-ES (minimisation) wrapping ``cma.CMAEvolutionStrategy``.

    Args:
        dim: search dimension (>= 2; pycma does not handle 1-D).
        sigma0: initial step size.
        popsize: population per generation (None: pycma's ``4 + 3·ln(dim)``).
        x0: start ``(dim,)`` (default zeros).
        seed: seed of the sampler (a private numpy Generator handed to pycma as ``randn``; the
            global numpy RNG is neither seeded nor used).
        diagonal: diagonal covariance; None chooses ``dim > diagonal_above``.
        diagonal_above: threshold for the automatic choice.
        dtype, device: of the tensors returned by :meth:`ask`.
        options: extra pycma options (override the defaults set here).
    """

    def __init__(
        self,
        dim: int,
        *,
        sigma0: float = 0.5,
        popsize: int | None = None,
        x0: torch.Tensor | None = None,
        seed: int = 0,
        diagonal: bool | None = None,
        diagonal_above: int = 1000,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
        options: dict[str, Any] | None = None,
    ) -> None:
        import cma

        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 2:
            raise ValueError(f"dim must be an int >= 2, got {dim!r}")
        if not sigma0 > 0:
            raise ValueError(f"sigma0 must be > 0, got {sigma0!r}")
        if popsize is not None and (
            isinstance(popsize, bool) or not isinstance(popsize, int) or popsize < 2
        ):
            raise ValueError(f"popsize must be None or an int >= 2, got {popsize!r}")
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ValueError(f"seed must be a non-negative int, got {seed!r}")
        if dtype not in (torch.float32, torch.float64):
            raise ValueError(f"dtype must be torch.float32 or torch.float64, got {dtype!r}")
        if device is None:
            device = x0.device if isinstance(x0, torch.Tensor) else torch.device("cpu")
        self.device = torch.device(device)
        self.dtype = dtype
        self.dim = dim
        if x0 is None:
            start = np.zeros(dim)
        else:
            start = torch.as_tensor(x0).detach().double().cpu().numpy().reshape(-1)
            if start.shape != (dim,):
                raise ValueError(f"x0 must have shape ({dim},), got {tuple(start.shape)}")
        self.diagonal = dim > diagonal_above if diagonal is None else bool(diagonal)
        rng = np.random.default_rng(seed)
        opts: dict[str, Any] = {
            "seed": np.nan,
            "randn": lambda *shape: rng.standard_normal(shape),
            "verbose": -9,
            "verb_disp": 0,
            "verb_log": 0,
            "CMA_diagonal": self.diagonal,
            "maxiter": float("inf"),
            "maxfevals": float("inf"),
        }
        if popsize is not None:
            opts["popsize"] = popsize
        opts.update(options or {})
        self.es = cma.CMAEvolutionStrategy(start, float(sigma0), opts)
        self.popsize = int(self.es.popsize)
        self.evaluations = 0
        self.best_x: torch.Tensor | None = None
        self.best_fitness = float("inf")
        self._solutions: list[np.ndarray] | None = None

    @property
    def mean(self) -> torch.Tensor:
        """Current distribution mean ``(dim,)``."""
        return torch.as_tensor(self.es.mean, dtype=self.dtype, device=self.device)

    @property
    def sigma(self) -> float:
        return float(self.es.sigma)

    @property
    def stopped(self) -> dict[str, Any]:
        """pycma's termination criteria that currently hold (informational only)."""
        return dict(self.es.stop())

    def ask(self) -> torch.Tensor:
        """Sample ``(popsize, dim)`` candidates."""
        self._solutions = self.es.ask()
        return torch.as_tensor(np.stack(self._solutions), dtype=self.dtype, device=self.device)

    def tell(self, fitness: Any) -> None:
        """Update from the fitness ``(popsize,)`` of the last :meth:`ask` (lower is better)."""
        if self._solutions is None:
            raise RuntimeError("tell() called before ask()")
        f = torch.as_tensor(fitness).detach().reshape(-1).double().cpu()
        if f.shape[0] != self.popsize:
            raise ValueError(f"fitness must have {self.popsize} values, got {f.shape[0]}")
        finite = f[torch.isfinite(f)]
        worst = float(finite.max()) if finite.numel() else 0.0
        spread = float(finite.max() - finite.min()) if finite.numel() else 1.0
        f = torch.where(torch.isfinite(f), f, torch.full_like(f, worst + spread + 1.0))
        i = int(torch.argmin(f))
        if float(f[i]) < self.best_fitness:
            self.best_fitness = float(f[i])
            self.best_x = torch.as_tensor(
                self._solutions[i], dtype=self.dtype, device=self.device
            ).clone()
        self.es.tell(self._solutions, f.tolist())
        self.evaluations += self.popsize
        self._solutions = None
