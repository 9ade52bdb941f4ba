"""OpenAI-ES (Salimans et al., 2017) as an ask/tell minimiser over ``R^dim``.

Antithetic (mirrored) Gaussian perturbations ``mean ± sigma·ε``, fitness shaped by centred ranks
in ``[-0.5, 0.5]``, and the search-gradient estimate

    g = 1 / (popsize · sigma) · Σ_i u_i ε_i

followed by an Adam (default) or plain SGD step on ``mean`` with optional L2 weight decay.
Non-finite fitness values rank last.
"""

from __future__ import annotations

from typing import Any

import torch

from polystep.baselines.budget import AskTellRunner, start_vector
from polystep.baselines.state import SampledState
from polystep.validation import check_float_dtype, check_positive_int

UPDATES = ("adam", "sgd")


def centered_ranks(fitness: torch.Tensor) -> torch.Tensor:
    """Ranks of ``fitness (N,)`` mapped linearly to ``[-0.5, 0.5]`` (lowest value -> -0.5).

    NaN counts as ``+inf``. Returns a tensor of ``fitness``'s dtype (float) and shape.
    """
    n = fitness.shape[0]
    clean = torch.nan_to_num(fitness.double(), nan=float("inf"))
    ranks = torch.empty(n, dtype=torch.float64, device=fitness.device)
    ranks[torch.argsort(clean, stable=True)] = torch.arange(
        n, dtype=torch.float64, device=fitness.device
    )
    if n > 1:
        ranks = ranks / (n - 1) - 0.5
    else:
        ranks.zero_()
    return ranks


class OpenAIES(AskTellRunner, SampledState):
    """Ask/tell OpenAI-ES (minimisation).

    Args:
        dim: search dimension.
        popsize: population per generation; even (antithetic pairs), at least 2.
        sigma: perturbation standard deviation.
        learning_rate: step size of the Adam / SGD update of ``mean``.
        x0: start ``(dim,)`` (default zeros).
        seed: seed of the perturbation generator.
        dtype: float32 or float64.
        update: ``"adam"`` or ``"sgd"``.
        weight_decay: L2 coefficient added to the gradient estimate (``wd · mean``).
        momentum: SGD momentum (ignored by Adam).
        lr_decay: decay the learning rate linearly to 0 over this many generations (None: flat).
        device: device of the population (default: that of ``x0``, else CPU).

    Attributes:
        mean: current search mean ``(dim,)``.
        best_x, best_fitness: best evaluated point so far and its fitness (``None`` / ``inf``).
        evaluations: fitness values received by :meth:`tell`.
        generation: number of completed :meth:`tell` calls.
    """

    METHOD = "openai_es"
    STATE_ATTRIBUTES = (("m", "_m"), ("v", "_v"), ("t", "_t"), ("generation", "generation"))

    def __init__(
        self,
        dim: int,
        *,
        popsize: int = 50,
        sigma: float = 0.1,
        learning_rate: float = 0.05,
        x0: torch.Tensor | None = None,
        seed: int = 0,
        dtype: torch.dtype = torch.float32,
        update: str = "adam",
        weight_decay: float = 0.0,
        momentum: float = 0.9,
        lr_decay: int | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        check_positive_int("dim", dim)
        if isinstance(popsize, bool) or not isinstance(popsize, int) or popsize < 2 or popsize % 2:
            raise ValueError(
                f"popsize must be an even int >= 2 (antithetic pairs), got {popsize!r}"
            )
        if not sigma > 0:
            raise ValueError(f"sigma must be > 0, got {sigma!r}")
        if not learning_rate > 0:
            raise ValueError(f"learning_rate must be > 0, got {learning_rate!r}")
        check_float_dtype("dtype", dtype)
        if update not in UPDATES:
            raise ValueError(f"update must be one of {UPDATES}, got {update!r}")
        if weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {weight_decay!r}")
        if not 0 <= momentum < 1:
            raise ValueError(f"momentum must be in [0, 1), got {momentum!r}")
        check_positive_int("lr_decay", lr_decay, allow_none=True)
        mean, self.device = start_vector(x0, dim, dtype, device)
        self.dim = dim
        self.popsize = popsize
        self.sigma = float(sigma)
        self.learning_rate = float(learning_rate)
        self.dtype = dtype
        self.update = update
        self.weight_decay = float(weight_decay)
        self.momentum = float(momentum)
        self.lr_decay = lr_decay
        self.beta1, self.beta2, self.adam_eps = 0.9, 0.999, 1e-8
        self._m = torch.zeros_like(mean)
        self._v = torch.zeros_like(mean)
        self._t = 0
        self.generation = 0
        self._noise: torch.Tensor | None = None
        self._start(mean, seed)

    def ask(self) -> torch.Tensor:
        """Draw a new antithetic population ``(popsize, dim)`` around ``mean``."""
        self._rng_before_ask = self._gen.get_state()
        half = torch.randn(
            self.popsize // 2, self.dim, generator=self._gen, device=self.device, dtype=self.dtype
        )
        self._noise = torch.cat([half, -half])
        self._population = self.mean + self.sigma * self._noise
        return self._population

    def tell(self, fitness: Any) -> None:
        """Update ``mean`` from fitness ``(popsize,)`` of the last :meth:`ask` (lower is better)."""
        f = self._received(fitness)
        assert self._noise is not None  # drawn with the population
        u = centered_ranks(f).to(self.dtype)
        grad = (u @ self._noise) / (self.popsize * self.sigma)
        if self.weight_decay:
            grad = grad + self.weight_decay * self.mean
        self._step(grad)
        self.evaluations += self.popsize
        self.generation += 1
        self._noise = self._population = None

    @property
    def current_learning_rate(self) -> float:
        """Learning rate of the next update (after linear decay, if any)."""
        if self.lr_decay is None:
            return self.learning_rate
        return self.learning_rate * max(0.0, 1.0 - self.generation / self.lr_decay)

    def _step(self, grad: torch.Tensor) -> None:
        self._t += 1
        lr = self.current_learning_rate
        if self.update == "adam":
            self._m.mul_(self.beta1).add_(grad, alpha=1 - self.beta1)
            self._v.mul_(self.beta2).addcmul_(grad, grad, value=1 - self.beta2)
            m_hat = self._m / (1 - self.beta1**self._t)
            v_hat = self._v / (1 - self.beta2**self._t)
            self.mean = self.mean - lr * m_hat / (v_hat.sqrt() + self.adam_eps)
        else:
            self._m.mul_(self.momentum).add_(grad)
            self.mean = self.mean - lr * self._m

    def settings(self) -> dict[str, Any]:
        """The settings that shape the trajectory (a state loads only under the same ones)."""
        return {
            "dim": self.dim,
            "popsize": self.popsize,
            "sigma": self.sigma,
            "learning_rate": self.learning_rate,
            "update": self.update,
            "weight_decay": self.weight_decay,
            "momentum": self.momentum,
            "lr_decay": self.lr_decay,
            "dtype": str(self.dtype),
        }
