"""The engine's small parts (see :mod:`polystep.engine`): cost shapings, projections, the
subspace draw, and the checks a checkpoint passes before anything is restored.

A shaping maps per-vertex costs ``(P, V)`` float64 (NaN/inf allowed) to finite costs of the
same shape, smallest 0 in each row or overall; the weight rule then reads them in units of
epsilon. A projection maps points ``(N, dim)`` or a vector ``(D,)`` to the same shape.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from polystep.step import Duals
from polystep.transport import prepare_costs

FORMAT_VERSION = 1


def shape_rows(costs: torch.Tensor) -> torch.Tensor:
    """Each particle's costs recentred on its cheapest finite one and divided by their own mean
    spread (equal costs: zeros), so every particle moves about ``step_radius`` whatever its
    sensitivity; then non-finite costs become ``2 * worst + 1`` (worst over all rows)."""
    finite = torch.isfinite(costs)
    low = torch.where(finite, costs, math.inf).amin(dim=1, keepdim=True)
    shifted = torch.where(finite, costs - low, 0.0)
    count = finite.sum(dim=1, keepdim=True).clamp(min=1)
    spread = shifted.sum(dim=1, keepdim=True) / count
    scaled = torch.where(spread > 0, shifted / spread.clamp(min=1e-300), 0.0)
    return prepare_costs(torch.where(finite, scaled, costs), None)


def shape_ranks(costs: torch.Tensor) -> torch.Tensor:
    """Each particle's costs replaced by their rank in the row over ``V - 1`` (0 = cheapest,
    1 = dearest; ties by vertex order); non-finite costs rank last."""
    clean = torch.where(torch.isfinite(costs), costs, math.inf)
    order = torch.argsort(clean, dim=1, stable=True)
    ranks = torch.argsort(order, dim=1, stable=True).to(costs.dtype)
    return ranks / max(costs.shape[1] - 1, 1)


def _scaled(scale: str | float | None) -> Callable[[torch.Tensor], torch.Tensor]:
    return lambda costs: prepare_costs(costs, scale)


def _unit(*, unit: float) -> Callable[[torch.Tensor], torch.Tensor]:
    if isinstance(unit, bool) or not (isinstance(unit, int | float) and 0 < unit < math.inf):
        raise ValueError(f"a cost unit must be a positive finite float, got {unit!r}")
    return _scaled(float(unit))


SHAPINGS: dict[Any, Callable[..., Callable[[torch.Tensor], torch.Tensor]]] = {
    None: lambda: _scaled(None),
    "mean": lambda: _scaled("mean"),
    "max": lambda: _scaled("max"),
    "row": lambda: shape_rows,
    "rank": lambda: shape_ranks,
    "unit": _unit,
}


@dataclass(frozen=True)
class Clip:
    """Clip to the box ``[lower, upper]`` (floats or ``(dim,)`` tensors)."""

    lower: torch.Tensor
    upper: torch.Tensor

    @classmethod
    def build(
        cls, *, bounds: Any, dim: int | None = None, dtype: torch.dtype | None = None
    ) -> Clip:
        if not (isinstance(bounds, tuple | list) and len(bounds) == 2):
            raise ValueError(f"bounds must be a (lower, upper) pair, got {bounds!r}")
        lower, upper = (torch.as_tensor(b, dtype=dtype or torch.float32) for b in bounds)
        if dim is not None:
            lower, upper = lower.expand(dim).clone(), upper.expand(dim).clone()
        if not bool((lower < upper).all()):
            raise ValueError("bounds must satisfy lower < upper in every coordinate")
        return cls(lower, upper)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        lower, upper = self.lower.to(x), self.upper.to(x)
        return torch.maximum(torch.minimum(x, upper), lower)


@dataclass(frozen=True)
class Repair:
    """A user map ``(N, dim) -> (N, dim)``, applied to a copy; the shape is checked."""

    fn: Callable[[torch.Tensor], Any]

    @classmethod
    def build(cls, *, fn: Any) -> Repair:
        if not callable(fn):
            raise ValueError("repair must be callable: (N, dim) -> (N, dim)")
        return cls(fn)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.as_tensor(self.fn(x.clone()), dtype=x.dtype)
        if out.shape != x.shape:
            raise ValueError(f"repair must return shape {tuple(x.shape)}, got {tuple(out.shape)}")
        return out


def orthonormal(dim: int, k: int, generator: torch.Generator, dtype: torch.dtype) -> torch.Tensor:
    """``(dim, k)`` Haar-distributed orthonormal columns (QR of a float64 Gaussian)."""
    gauss = torch.randn(dim, k, generator=generator, dtype=torch.float64)
    q, r = torch.linalg.qr(gauss)
    return (q * torch.sign(torch.diagonal(r))).to(dtype)


@dataclass(frozen=True)
class SubspaceDraw:
    """``theta = base + scale * B z`` with ``base (D,)``, ``B (D, k)`` (None: the identity)."""

    base: torch.Tensor
    basis: torch.Tensor | None = None
    scale: float = 1.0

    def lift(self, z: torch.Tensor) -> torch.Tensor:
        """``(..., k) -> (..., D)``."""
        return self.base + self.scale * (z if self.basis is None else z @ self.basis.T)

    def fold(self, z: torch.Tensor) -> SubspaceDraw:
        """The same map with ``z`` folded into ``base`` (so ``z`` restarts at 0)."""
        return SubspaceDraw(base=self.lift(z), basis=self.basis, scale=self.scale)

    def state_dict(self) -> dict[str, Any]:
        basis = None if self.basis is None else self.basis.clone()
        return {"base": self.base.clone(), "basis": basis, "scale": self.scale}


def _tensor(state: dict[str, Any], key: str, like: torch.Tensor | None) -> torch.Tensor | None:
    value = state[key]
    if value is None and like is None:
        return None
    if not isinstance(value, torch.Tensor) or like is None or value.shape != like.shape:
        want = "None" if like is None else f"a tensor of shape {tuple(like.shape)}"
        raise ValueError(f"{key} in state must be {want}, got {value!r:.80}")
    if not bool(torch.isfinite(value).all()) and value.is_floating_point():
        raise ValueError(f"{key} in state must be finite")
    return value.clone().to(like.dtype)


def check_state(state: Any, x: torch.Tensor, draw: SubspaceDraw | None) -> dict[str, Any]:
    """Every field of an engine checkpoint, checked against the running state's ``x`` and
    ``draw``; raises ``ValueError`` naming the field, and changes nothing."""
    state = upgrade(state)
    if not isinstance(state, dict):
        raise ValueError(f"state must be a dict from state_dict(), got {type(state).__name__}")
    if state.get("format") != FORMAT_VERSION:
        raise ValueError(f"state format must be {FORMAT_VERSION}, got {state.get('format')!r}")
    keys = ("x", "generator", "duals", "iteration", "evaluations", "best", "best_x", "draw")
    missing = [key for key in keys if key not in state]
    if missing:
        raise ValueError(f"state is missing {missing}")
    generator = state["generator"]
    try:
        torch.Generator().set_state(generator)
    except (TypeError, RuntimeError) as err:
        raise ValueError(f"generator in state is not a generator state: {err}") from None
    counts = {key: state[key] for key in ("iteration", "evaluations")}
    for key, value in counts.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"{key} in state must be an int >= 0, got {value!r}")
    best = state["best"]
    if not isinstance(best, int | float) or math.isnan(best):
        raise ValueError(f"best in state must be a number, got {best!r}")
    best_x = state["best_x"]
    if best_x is not None and not isinstance(best_x, torch.Tensor):
        raise ValueError(f"best_x in state must be None or a tensor, got {type(best_x).__name__}")
    duals = state["duals"]
    if not isinstance(duals, dict) or not all(
        duals.get(k) is None or isinstance(duals.get(k), torch.Tensor) for k in ("f", "g")
    ):
        raise ValueError("duals in state must be {'f': tensor or None, 'g': tensor or None}")
    new_draw = None
    if (state["draw"] is None) != (draw is None):
        raise ValueError(f"draw in state must be {'None' if draw is None else 'a subspace draw'}")
    if draw is not None:
        saved = state["draw"]
        scale = saved.get("scale") if isinstance(saved, dict) else None
        if not isinstance(scale, int | float) or not 0 < scale < math.inf:
            raise ValueError(f"draw scale in state must be a positive number, got {scale!r}")
        base, basis = _tensor(saved, "base", draw.base), _tensor(saved, "basis", draw.basis)
        new_draw = SubspaceDraw(base=base, basis=basis, scale=float(scale))
    return {
        "x": _tensor(state, "x", x),
        "generator": generator,
        "duals": Duals(f=duals.get("f"), g=duals.get("g")),
        **counts,
        "best": float(best),
        "best_x": None if best_x is None else best_x.clone(),
        "draw": new_draw,
    }


def upgrade(state: Any) -> Any:
    """A particle checkpoint written before the engine (no ``format``: ``positions`` and
    ``best_cost`` / ``best_fitness``) in the current format; anything else unchanged."""
    if not isinstance(state, dict) or "format" in state or "positions" not in state:
        return state
    new = {k: v for k, v in state.items() if k not in ("positions", "best_cost", "best_fitness")}
    best = state.get("best_cost", state.get("best_fitness"))
    return {**new, "format": FORMAT_VERSION, "x": state["positions"], "best": best, "draw": None}


class ProblemRun:
    """A problem run around the engine's ``state``: its checkpoint is the engine's (under
    ``"engine"``) plus ``config`` (must match on load), ``history``, wall ``seconds`` (counted
    across resumes), ``seed`` and the run's :meth:`own_state`. Subclasses set ``state``,
    ``config``, ``history`` and ``seed``, call :meth:`start_clock` first, and define
    ``finished``, ``step()`` (returns the step's metrics) and ``result()``."""

    state: Any  # EngineState
    config: dict[str, Any]
    history: list[Any]
    seed: int

    def start_clock(self, seconds_before: float = 0.0) -> None:
        self.seconds_before, self.started = seconds_before, time.perf_counter()

    @property
    def seconds(self) -> float:
        return self.seconds_before + time.perf_counter() - self.started

    def run(
        self, callback: Callable[[Any], None] | None = None, max_seconds: float | None = None
    ) -> Any:
        """``step()`` until ``finished`` (or past ``max_seconds``, checked between steps), with
        ``callback(metrics)`` after every step; returns ``result()``."""
        while not self.finished and (max_seconds is None or self.seconds <= max_seconds):
            metrics = self.step()
            if callback is not None:
                callback(metrics)
        return self.result()

    def own_state(self) -> dict[str, Any]:
        """The run's own fields in its checkpoint."""
        return {}

    def check_own_state(self, saved: dict[str, Any], history: list[Any]) -> dict[str, Any]:
        """The run's own fields of ``saved`` and its ``history``, checked (a ``ValueError``
        names the field): attribute name -> value, set once the engine state has loaded."""
        return {"history": history}

    def resumed(self) -> None:
        """Called once a checkpoint has loaded."""

    def state_dict(self) -> dict[str, Any]:
        own = {"config": self.config, "history": list(self.history), **self.own_state()}
        return {
            "engine": self.state.state_dict(),
            **own,
            "seconds": self.seconds,
            "seed": self.seed,
        }

    def load_state_dict(self, saved: Any) -> None:
        """Restore :meth:`state_dict` output of a run of the same ``config``; every field is
        checked before anything changes (errors name the field)."""
        if not isinstance(saved, dict):
            raise ValueError(f"state must be a dict from state_dict(), got {type(saved).__name__}")
        if saved.get("config") != self.config:
            raise ValueError(
                f"config in state {saved.get('config')!r} is not this run's {self.config!r}"
            )
        history, seconds, seed = saved.get("history"), saved.get("seconds"), saved.get("seed")
        if not isinstance(history, list):
            raise ValueError(f"history in state must be a list, got {type(history).__name__}")
        if isinstance(seconds, bool) or not isinstance(seconds, int | float) or not seconds >= 0:
            raise ValueError(f"seconds in state must be a number >= 0, got {seconds!r}")
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError(f"seed in state must be an int, got {seed!r}")
        own = self.check_own_state(saved, list(history))
        self.state.load_state_dict(saved.get("engine"))  # checked in full before it changes
        for name, value in {**own, "seed": seed}.items():
            setattr(self, name, value)
        self.start_clock(float(seconds))
        self.resumed()
