"""Batched test functions: ``objective(X)`` maps ``(N, dim) -> (N,)``; all have minimum 0."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from polystep.validation import check_positive_int


@dataclass(frozen=True)
class Objective:
    """A batched test function over ``R^dim`` with its usual search box ``[-bound, bound]^dim``."""

    dim: int
    bound: float = 5.0
    minimum: float = 0.0

    def __post_init__(self) -> None:
        check_positive_int("dim", self.dim)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(
                f"{type(self).__name__} expects x of shape (N, {self.dim}), got {tuple(x.shape)}"
            )
        return self.evaluate(x)

    def evaluate(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError


@dataclass(frozen=True)
class Sphere(Objective):
    """``sum x_i^2``."""

    def evaluate(self, x: torch.Tensor) -> torch.Tensor:
        return (x * x).sum(dim=1)


@dataclass(frozen=True)
class Ackley(Objective):
    """Ackley with a = 20, b = 0.2, c = 2 pi; minimum 0 at the origin."""

    bound: float = 32.768

    def evaluate(self, x: torch.Tensor) -> torch.Tensor:
        mean_sq = (x * x).mean(dim=1)
        mean_cos = torch.cos(2.0 * math.pi * x).mean(dim=1)
        value = -20.0 * torch.exp(-0.2 * mean_sq.sqrt()) - torch.exp(mean_cos) + 20.0 + math.e
        return value.clamp_min(0.0)  # rounding can dip a hair below 0 at the optimum


@dataclass(frozen=True)
class Rastrigin(Objective):
    """``10 d + sum (x_i^2 - 10 cos(2 pi x_i))``; minimum 0 at the origin."""

    bound: float = 5.12

    def evaluate(self, x: torch.Tensor) -> torch.Tensor:
        return 10.0 * self.dim + (x * x - 10.0 * torch.cos(2.0 * math.pi * x)).sum(dim=1)


@dataclass(frozen=True)
class Rosenbrock(Objective):
    """``sum 100 (x_{i+1} - x_i^2)^2 + (1 - x_i)^2``; minimum 0 at all-ones."""

    def evaluate(self, x: torch.Tensor) -> torch.Tensor:
        head, tail = x[:, :-1], x[:, 1:]
        return (100.0 * (tail - head * head) ** 2 + (1.0 - head) ** 2).sum(dim=1)


@dataclass(frozen=True)
class Levy(Objective):
    """Levy function; minimum 0 at all-ones."""

    bound: float = 10.0

    def evaluate(self, x: torch.Tensor) -> torch.Tensor:
        w = 1.0 + (x - 1.0) / 4.0
        first = torch.sin(math.pi * w[:, 0]) ** 2
        mid = (
            (w[:, :-1] - 1.0) ** 2 * (1.0 + 10.0 * torch.sin(math.pi * w[:, :-1] + 1.0) ** 2)
        ).sum(1)
        last = (w[:, -1] - 1.0) ** 2 * (1.0 + torch.sin(2.0 * math.pi * w[:, -1]) ** 2)
        return first + mid + last


OBJECTIVES: dict[str, type[Objective]] = {
    cls.__name__.lower(): cls for cls in (Sphere, Ackley, Rastrigin, Rosenbrock, Levy)
}
