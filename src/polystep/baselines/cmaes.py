"""CMA-ES through pycma (``cma`` package) behind the same ask/tell interface, in torch tensors.

Above ``diagonal_above`` dimensions (default 1,000) the covariance is diagonal (separable
CMA-ES, ``CMA_diagonal=True``): O(dim) memory and time per sample instead of O(dim²). pycma's
termination criteria are ignored (``stopped`` reports them) so a run spends its whole budget; with
minibatch noise the criteria fire spuriously. pycma writes no files and prints nothing.

State: pycma keeps its state in dozens of objects (sampler, step-size adaptation, archives) that
are not plain data, but its trajectory is a function of the start, the step size, the sampler's
seed and the fitness values it was told. So :meth:`CMAES.state_dict` keeps those (``x0``,
``seed``, the told fitness ``(generations, popsize)``) with the mean and step size reached, and
:meth:`CMAES.load_state_dict` rebuilds the strategy and replays its ask/tell from the seed
(no objective is evaluated; the replay costs what the generations cost pycma the first time),
then checks that it reached the stored mean and step size bit for bit.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from polystep.baselines.budget import AskTellRunner
from polystep.baselines.state import check_count, check_state, check_vector
from polystep.validation import check_float_dtype, check_int

STATE_KEYS = frozenset({"method", "settings", "x0", "seed", "told", "mean", "sigma"})


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
        check_int("dim", dim, minimum=2)
        if not sigma0 > 0:
            raise ValueError(f"sigma0 must be > 0, got {sigma0!r}")
        check_int("popsize", popsize, minimum=2, allow_none=True)
        check_int("seed", seed, minimum=0)
        check_float_dtype("dtype", dtype)
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
        self.sigma0 = float(sigma0)
        self.requested_popsize = popsize
        self.options = dict(options or {})
        self._start(start, seed)

    def _start(self, x0: np.ndarray, seed: int) -> None:
        """A new strategy at ``x0`` whose sampler is seeded with ``seed``; nothing told yet."""
        import cma

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
        if self.requested_popsize is not None:
            opts["popsize"] = self.requested_popsize
        opts.update(self.options)
        self.x0, self.seed = x0.copy(), seed
        self.es = cma.CMAEvolutionStrategy(x0.copy(), self.sigma0, opts)
        self.popsize = int(self.es.popsize)
        self.evaluations = 0
        self.best_x: torch.Tensor | None = None
        self.best_fitness = float("inf")
        self._solutions: list[np.ndarray] | None = None
        self._told: list[list[float]] = []  # the fitness values told, one list a generation

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
        told = f.tolist()
        self.es.tell(self._solutions, told)
        self._told.append(told)
        self.evaluations += self.popsize
        self._solutions = None

    def settings(self) -> dict[str, Any]:
        """The settings that shape the trajectory (a state loads only under the same ones; the
        start and the seed travel in the state itself)."""
        return {
            "dim": self.dim,
            "popsize": self.popsize,
            "sigma0": self.sigma0,
            "diagonal": self.diagonal,
            "options": repr(sorted(self.options.items())),
            "dtype": str(self.dtype),
        }

    def state_dict(self) -> dict[str, Any]:
        """The start, the seed and every fitness value told ``(generations, popsize)`` (a
        population asked but not told is asked again after loading), with the mean and step size
        they lead to (plain data)."""
        return {
            "method": "cmaes",
            "settings": self.settings(),
            "x0": torch.from_numpy(self.x0.copy()),
            "seed": self.seed,
            "told": torch.tensor(self._told, dtype=torch.float64).reshape(-1, self.popsize),
            "mean": torch.from_numpy(np.array(self.es.mean, dtype=np.float64)),
            "sigma": float(self.es.sigma),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from :meth:`state_dict`'s ``state`` by replaying it (see the module notes); a
        ValueError naming what differs (method, a setting, a shape) when it was written by
        another baseline or under other settings, or when the replay does not reach the stored
        mean and step size (another pycma version); nothing is changed then."""
        check_state("CMAES", "cmaes", self.settings(), state, STATE_KEYS)
        for name in ("x0", "mean"):
            check_vector("CMAES", name, state[name], self.dim)
        check_count("CMAES", "seed", state["seed"])
        told = state["told"]
        if not (
            isinstance(told, torch.Tensor) and told.ndim == 2 and told.shape[1] == self.popsize
        ):
            raise ValueError(
                f"CMAES.load_state_dict: the state's told must be a (generations, {self.popsize}) "
                "tensor"
            )
        if type(state["sigma"]) is not float:
            raise ValueError("CMAES.load_state_dict: the state's sigma must be a float")
        kept = self.__dict__.copy()
        self._start(state["x0"].double().numpy(), state["seed"])
        for fitness in told.double().tolist():
            self.ask()
            self.tell(fitness)
        reached = np.array(self.es.mean, dtype=np.float64)
        if not (
            np.array_equal(reached, state["mean"].double().numpy())
            and float(self.es.sigma) == state["sigma"]
        ):
            self.__dict__.update(kept)
            raise ValueError(
                f"CMAES.load_state_dict: replaying the state's {told.shape[0]} generations did "
                "not reach its mean and sigma (written by another pycma version?)"
            )
